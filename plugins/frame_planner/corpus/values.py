"""How the corpus says dates, amounts, counts, times and durations — and what each one means.

Each sampler returns a :class:`Said`: the words that become the labelled span,
the normalised value the expected plan uses, and unlabelled words that go
before the span ("on " before "Friday"). Both splits share these forms: they
are what the planner's normaliser (code, not the model) must read, so they
are the forms ``docs/design/frame_planner.md`` lists.

Conventions, relative to today = Monday 2027-03-01:
"Friday" / "this Friday" = the coming one (2027-03-05); "next Friday" = the
one in next week (2027-03-12); "next week" = next Monday (2027-03-08);
"this weekend" = Saturday (2027-03-06); "in 3 days" = 2027-03-04.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

TODAY = date(2027, 3, 1)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


@dataclass(frozen=True)
class Said:
    """Words of a request and their meaning."""

    text: str
    value: Any
    #: Unlabelled words said just before the span ("on ", "under ", "for ").
    lead: str = ""


def number_words(n: int) -> str:
    """English words for 0 <= n < 1000 ("forty-five", "a hundred and twenty")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    hundreds, rest = divmod(n, 100)
    head = "a hundred" if hundreds == 1 else f"{_ONES[hundreds]} hundred"
    return head if rest == 0 else f"{head} and {number_words(rest)}"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# -- dates ----------------------------------------------------------------------------------


def date_forms(day: date, *, today: date = TODAY, relative: bool = True) -> list[Said]:
    """Every way the corpus says ``day`` (relative forms only for days from today on)."""
    iso = day.isoformat()
    forms = [
        Said(f"{MONTHS[day.month - 1]} {day.day}", iso, "on "),
        Said(f"{ordinal(day.day)} of {MONTHS[day.month - 1]}", iso, "on the "),
        Said(f"{day.month}/{day.day}", iso, "on "),
        Said(iso, iso, "on "),
    ]
    delta = (day - today).days
    if not relative or delta < 0:
        return forms
    name = WEEKDAYS[day.weekday()]
    named = {0: ["today"], 1: ["tomorrow"], 2: ["the day after tomorrow"], 7: ["next week", "in a week"],
             14: ["in two weeks"]}
    forms += [Said(text, iso) for text in named.get(delta, [])]
    if 1 <= delta <= 6:
        forms += [Said(name, iso, "on "), Said(f"this {name}", iso)]
    if 7 <= delta <= 13 and day.weekday() >= today.weekday():
        forms.append(Said(f"next {name}", iso))
    if 2 <= delta <= 10:
        forms += [Said(f"in {delta} days", iso), Said(f"in {number_words(delta)} days", iso)]
    if day.weekday() == 5 and 1 <= delta <= 6:
        forms.append(Said("this weekend", iso))
    return forms


def sample_date(rng: random.Random, first: int, last: int, *, relative_share: float = 0.6) -> Said:
    """A day ``first``..``last`` days after today, said one of its ways (relative ones favoured)."""
    day = TODAY + timedelta(days=rng.randint(first, last))
    forms = date_forms(day)
    relative = [f for f in forms if not f.text[0].isdigit() and not f.text.startswith(tuple(MONTHS))]
    if relative and rng.random() < relative_share:
        return rng.choice(relative)
    return rng.choice([f for f in forms if f not in relative])


def sample_past_date(rng: random.Random, first: date, last: date) -> Said:
    """A day in ``first``..``last`` (the transaction history), said absolutely."""
    day = first + timedelta(days=rng.randint(0, (last - first).days))
    iso = day.isoformat()
    # With the year: a bare "February 10" means the next one (2028), as the normaliser reads it.
    forms = (iso, f"{MONTHS[day.month - 1]} {day.day}, {day.year}", f"{day.month}/{day.day}/{day.year}")
    return Said(rng.choice(forms), iso)  # no lead: "since", "from", "until" come from the template


# -- money and counts -----------------------------------------------------------------------


def amount_forms(value: float) -> list[Said]:
    """Ways to say a dollar amount ("$45", "45 bucks", "forty-five dollars", "1.2k", "$1,200")."""
    if value != int(value):
        text = f"{value:.2f}"
        return [Said(f"${text}", value), Said(text, value), Said(f"{text} dollars", value)]
    n = int(value)
    forms = [Said(f"${n:,}", value), Said(f"{n} dollars", value), Said(f"{n} bucks", value)]
    if n < 1000:
        forms += [Said(f"{number_words(n)} dollars", value), Said(f"{number_words(n)} bucks", value)]
    if n >= 1000 and n % 100 == 0:
        forms += [Said(f"{n / 1000:g}k", value), Said(f"${n}", value)]
    return forms


def sample_amount(rng: random.Random, choices: tuple[float, ...]) -> Said:
    return rng.choice(amount_forms(rng.choice(choices)))


#: Amounts people send each other (whole dollars mostly, a few with cents, a few large).
TRANSFER_AMOUNTS = (5, 10, 12, 15, 20, 25, 30, 35, 40, 45, 50, 60, 75, 80, 100, 120, 150, 200, 250, 300, 500,
                    12.5, 18.75, 45.5, 1200, 1500)
#: Price caps ("under $300").
PRICE_CAPS = (150, 200, 250, 300, 350, 400, 500, 600, 800, 1000)


def count_forms(n: int) -> list[Said]:
    """Ways to say a small count ("2", "two", "a couple", "a few")."""
    forms = [Said(str(n), n), Said(number_words(n), n)]
    if n == 2:
        forms.append(Said("a couple", n))
    if n == 3:
        forms.append(Said("a few", n))
    return forms


def sample_count(rng: random.Random, low: int, high: int) -> Said:
    return rng.choice(count_forms(rng.randint(low, high)))


# -- times and durations --------------------------------------------------------------------


def time_forms(hour: int, minute: int) -> list[Said]:
    """Ways to say a clock time ("19:00", "7pm", "7:30 pm", "noon", "8 in the morning")."""
    value = f"{hour:02d}:{minute:02d}"
    twelve = hour - 12 if hour > 12 else hour
    half = "pm" if hour >= 12 else "am"
    forms = [Said(value, value, "at ")]
    if minute == 0:
        forms += [Said(f"{twelve}{half}", value, "at "), Said(f"{twelve} {half}", value, "at ")]
        if hour == 12:
            forms.append(Said("noon", value, "at "))
        elif hour < 12:
            forms.append(Said(f"{twelve} in the morning", value, "at "))
        elif hour >= 17:
            forms.append(Said(f"{twelve} in the evening", value, "at "))
    else:
        forms.append(Said(f"{twelve}:{minute:02d} {half}", value, "at "))
        if minute == 30 and hour >= 17:
            forms.append(Said(f"half past {number_words(twelve)} in the evening", value, "at "))
    return forms


def sample_time(rng: random.Random) -> Said:
    hour = rng.randint(10, 21)
    minute = rng.choice((0, 0, 30, 15))
    return rng.choice(time_forms(hour, minute))


#: (words, minutes) for how long an event lasts.
DURATIONS = (("30 minutes", 30), ("half an hour", 30), ("45 minutes", 45), ("an hour", 60), ("one hour", 60),
             ("90 minutes", 90), ("an hour and a half", 90), ("2 hours", 120), ("two hours", 120), ("3 hours", 180))


def sample_duration(rng: random.Random) -> Said:
    words, minutes = rng.choice(DURATIONS)
    return Said(words, minutes, "for ")
