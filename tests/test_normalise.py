"""The frame planner's normalisers: span text -> date, amount, count, time, duration.

Hand-written tables (today = Monday 2027-03-01, as in the corpus) plus checks
against an outside reference: ``datetime.strftime`` spells dates and clock times
that must read back to the same value, and weekday results are checked against
``date.weekday()`` / ISO weeks for every day of a fortnight.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest

from agentd.agent.normalise import (
    parse_amount,
    parse_count,
    parse_date,
    parse_duration_minutes,
    parse_time,
    words_to_number,
)

TODAY = dt.date(2027, 3, 1)  # a Monday
assert TODAY.weekday() == 0

DATES = [
    # absolute
    ("2027-03-03", "2027-03-03"),
    ("2028/1/9", "2028-01-09"),
    ("March 3", "2027-03-03"),
    ("march 3rd", "2027-03-03"),
    ("Mar 3rd", "2027-03-03"),
    ("Mar. 3", "2027-03-03"),
    ("3 March", "2027-03-03"),
    ("3rd March", "2027-03-03"),
    ("the 3rd of March", "2027-03-03"),
    ("March third", "2027-03-03"),
    ("the twenty-first of March", "2027-03-21"),
    ("March thirty first", "2027-03-31"),
    ("March 3, 2027", "2027-03-03"),
    ("3 March 2028", "2028-03-03"),
    ("Sept 12", "2027-09-12"),
    ("Feb 1", "2028-02-01"),  # already past this year
    ("March 1", "2027-03-01"),  # today counts
    ("Feb 29", "2028-02-29"),  # next leap year
    ("3/3", "2027-03-03"),
    ("12/25", "2027-12-25"),
    ("1/15", "2028-01-15"),
    ("3/3/2027", "2027-03-03"),
    ("4/5/27", "2027-04-05"),  # US month/day
    ("the 3rd", "2027-03-03"),
    ("the 1st", "2027-03-01"),
    ("the 31st", "2027-03-31"),
    ("the fifteenth", "2027-03-15"),
    ("Friday, March 5", "2027-03-05"),
    ("friday the 5th", "2027-03-05"),
    # named days
    ("today", "2027-03-01"),
    ("tonight", "2027-03-01"),
    ("this evening", "2027-03-01"),
    ("tomorrow", "2027-03-02"),
    ("Tomorrow.", "2027-03-02"),
    ("tmrw", "2027-03-02"),
    ("tmr", "2027-03-02"),
    ("tomorrow night", "2027-03-02"),
    ("tomorrow morning", "2027-03-02"),
    ("Friday evening", "2027-03-05"),
    ("next Friday morning", "2027-03-12"),
    ("March 3 in the evening", "2027-03-03"),
    ("the day after tomorrow", "2027-03-03"),
    ("yesterday", "2027-02-28"),
    # weekdays (see the module docstring for the convention)
    ("Friday", "2027-03-05"),
    ("on Friday", "2027-03-05"),
    ("fri", "2027-03-05"),
    ("this Friday", "2027-03-05"),
    ("coming Friday", "2027-03-05"),
    ("this coming Friday", "2027-03-05"),
    ("next Friday", "2027-03-12"),
    ("Friday next week", "2027-03-12"),
    ("next Tuesday", "2027-03-09"),
    ("Tuesday", "2027-03-02"),
    ("Monday", "2027-03-08"),  # bare weekday = after today
    ("this Monday", "2027-03-01"),  # "this" includes today
    ("next Monday", "2027-03-08"),
    ("on Sunday,", "2027-03-07"),
    ("next Sunday", "2027-03-14"),
    # offsets
    ("in 3 days", "2027-03-04"),
    ("in three days", "2027-03-04"),
    ("in a couple of days", "2027-03-03"),
    ("in a week", "2027-03-08"),
    ("in a week's time", "2027-03-08"),
    ("in two weeks", "2027-03-15"),
    ("a week from today", "2027-03-08"),
    ("two weeks from now", "2027-03-15"),
    ("a week from tomorrow", "2027-03-09"),
    ("in a month", "2027-04-01"),
    ("next week", "2027-03-08"),
    ("this weekend", "2027-03-06"),
    ("the weekend", "2027-03-06"),
    ("over the weekend", "2027-03-06"),
    ("next weekend", "2027-03-13"),
    ("end of the month", "2027-03-31"),
    ("by the end of the month", "2027-03-31"),
    ("end of next month", "2027-04-30"),
    # edge words
    ("starting March 3", "2027-03-03"),
    ("from tomorrow", "2027-03-02"),
    ("for next Friday", "2027-03-12"),
    ("starting on the 3rd,", "2027-03-03"),
    # cannot read
    ("Denver", None),
    ("", None),
    ("   ", None),
    ("3", None),
    ("March", None),
    ("March 32", None),
    ("2/30", None),
    ("13/1", None),
    ("2027-02-30", None),
    ("next", None),
    ("the concert tix", None),
    ("in days", None),
    ("in 2.5 days", None),
]


@pytest.mark.parametrize("text, expected", DATES)
def test_parse_date(text, expected):
    assert parse_date(text, TODAY) == expected


def test_dates_without_a_year_roll_over_at_the_end_of_the_year():
    new_years_eve = dt.date(2027, 12, 31)
    assert parse_date("tomorrow", new_years_eve) == "2028-01-01"
    assert parse_date("Jan 2", new_years_eve) == "2028-01-02"
    assert parse_date("the 3rd", new_years_eve) == "2028-01-03"
    assert parse_date("end of next month", new_years_eve) == "2028-01-31"
    assert parse_date("in a month", dt.date(2027, 1, 31)) == "2027-02-28"  # clamped
    assert parse_date("the 31st", dt.date(2027, 4, 5)) == "2027-05-31"  # April has no 31st


@pytest.mark.parametrize("offset", range(14))
def test_weekday_conventions_hold_on_every_day_of_a_fortnight(offset):
    """Checked against ISO weeks, not against the arithmetic the module uses."""
    today = TODAY + dt.timedelta(days=offset)
    year, week, _ = today.isocalendar()
    next_week = (today + dt.timedelta(weeks=1)).isocalendar()[:2]
    for number, name in enumerate(("Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                                   "Saturday", "Sunday")):
        bare = dt.date.fromisoformat(parse_date(name, today))
        this = dt.date.fromisoformat(parse_date(f"this {name}", today))
        following = dt.date.fromisoformat(parse_date(f"next {name}", today))
        assert bare.weekday() == this.weekday() == following.weekday() == number
        assert 1 <= (bare - today).days <= 7
        assert 0 <= (this - today).days <= 6
        assert following.isocalendar()[:2] == next_week
    assert dt.date.fromisoformat(parse_date("next week", today)).isocalendar()[1:] == (next_week[1], 1)
    weekend = dt.date.fromisoformat(parse_date("this weekend", today))
    assert weekend.weekday() in (5, 6) and weekend.isocalendar()[:2] == (year, week)
    next_weekend = dt.date.fromisoformat(parse_date("next weekend", today))
    assert next_weekend.weekday() == 5 and next_weekend.isocalendar()[:2] == next_week


def test_dates_spelt_by_strftime_read_back():
    rng = random.Random(7)
    for _ in range(200):
        day = TODAY + dt.timedelta(days=rng.randrange(0, 365))
        for pattern in ("%B %d", "%b %d", "%d %B", "%B %d, %Y", "%d %b %Y", "%m/%d/%Y", "%Y-%m-%d",
                        "%A, %B %d"):
            assert parse_date(day.strftime(pattern), TODAY) == day.isoformat(), day.strftime(pattern)


AMOUNTS = [
    ("$45", 45.0),
    ("45", 45.0),
    ("45.50", 45.5),
    ("$45.50", 45.5),
    ("$1,200", 1200.0),
    ("1,200.75", 1200.75),
    ("1.2k", 1200.0),
    ("2k", 2000.0),
    ("$1.5K", 1500.0),
    ("5 grand", 5000.0),
    ("45 dollars", 45.0),
    ("45 bucks", 45.0),
    ("45 usd", 45.0),
    ("45 USD.", 45.0),
    ("USD 45", 45.0),
    ("45$", 45.0),
    ("forty-five", 45.0),
    ("forty five dollars", 45.0),
    ("forty-five bucks", 45.0),
    ("a hundred", 100.0),
    ("a hundred dollars", 100.0),
    ("a hundred and twenty", 120.0),
    ("one hundred twenty-five", 125.0),
    ("twelve hundred", 1200.0),
    ("two thousand five hundred", 2500.0),
    ("three thousand", 3000.0),
    ("a thousand bucks", 1000.0),
    ("fifty cents", 0.5),
    ("75c", 0.75),
    ("5 dollars and 50 cents", 5.5),
    ("$20.5", 20.5),
    ("under $300", 300.0),
    ("about 60 dollars", 60.0),
    ("Denver", None),
    ("", None),
    ("$", None),
    ("dollars", None),
    ("the concert tix", None),
    ("five five", None),
    ("1,20", None),
    ("-5", None),
    ("5 dollars and 150 cents", None),
]


@pytest.mark.parametrize("text, expected", AMOUNTS)
def test_parse_amount(text, expected):
    value = parse_amount(text)
    assert value == expected and (value is None or isinstance(value, float))


COUNTS = [
    ("2", 2),
    ("two", 2),
    ("one", 1),
    ("a", 1),
    ("an", 1),
    ("a single", 1),
    ("a couple of", 2),
    ("a couple", 2),
    ("couple", 2),
    ("a pair", 2),
    ("a few", 3),
    ("twice", 2),
    ("just one", 1),
    ("a table for four", 4),
    ("once", 1),
    ("for 3 people", 3),
    ("3 nights", 3),
    ("three nights", 3),
    ("a couple of nights", 2),
    ("a week", 7),
    ("two weeks", 14),
    ("a fortnight", 14),
    ("three passengers", 3),
    ("4 tickets", 4),
    ("two seats", 2),
    ("five days", 5),
    ("the two of us", 2),
    ("2x", 2),
    ("twelve", 12),
    ("a dozen", 12),
    ("twenty-one", 21),
    ("Denver", None),
    ("", None),
    ("0", None),
    ("2.5", None),
    ("nights", None),
    ("the concert tix", None),
]


@pytest.mark.parametrize("text, expected", COUNTS)
def test_parse_count(text, expected):
    assert parse_count(text) == expected


TIMES = [
    ("19:00", "19:00"),
    ("07:30", "07:30"),
    ("0730", "07:30"),
    ("1930", "19:30"),
    ("7pm", "19:00"),
    ("7 pm", "19:00"),
    ("7PM", "19:00"),
    ("7:30pm", "19:30"),
    ("7:30 p.m.", "19:30"),
    ("730pm", "19:30"),
    ("9am", "09:00"),
    ("9:15 a.m.", "09:15"),
    ("12pm", "12:00"),
    ("12am", "00:00"),
    ("noon", "12:00"),
    ("midday", "12:00"),
    ("midnight", "00:00"),
    ("half past seven", "07:30"),
    ("half past seven pm", "19:30"),
    ("half past seven in the evening", "19:30"),
    ("quarter to eight", "07:45"),
    ("a quarter past 8 pm", "20:15"),
    ("ten past nine", "09:10"),
    ("twenty to six", "17:40"),
    ("half seven", "07:30"),
    ("seven thirty pm", "19:30"),
    ("five forty five", "17:45"),
    ("seven oh five", "07:05"),
    ("8 in the morning", "08:00"),
    ("8 in the evening", "20:00"),
    ("3 in the afternoon", "15:00"),
    ("tonight at 8", "20:00"),
    ("11 at night", "23:00"),
    ("at 8", "08:00"),
    ("at 3", "15:00"),
    ("at 6:30", "18:30"),
    ("at 12", "12:00"),
    ("9ish", "09:00"),
    ("around 9-ish", "09:00"),
    ("8 o'clock", "08:00"),
    ("noon-ish", "12:00"),
    ("7.30pm", "19:30"),
    ("at half past 7 tonight", "19:30"),
    ("at 7 sharp", "07:00"),
    ("Denver", None),
    ("", None),
    ("25:00", None),
    ("7:75", None),
    ("13pm", "13:00"),  # written 24h with a stray pm
    ("13am", None),
    ("7am in the evening", None),
    ("the evening", None),
    ("half past", None),
]


@pytest.mark.parametrize("text, expected", TIMES)
def test_parse_time(text, expected):
    assert parse_time(text) == expected


def test_clock_times_spelt_by_strftime_read_back():
    for minute_of_day in range(0, 24 * 60, 7):
        moment = dt.datetime(2027, 3, 1) + dt.timedelta(minutes=minute_of_day)
        expected = moment.strftime("%H:%M")
        for spelt in (moment.strftime("%I:%M %p"), moment.strftime("%I:%M%p").lower(),
                      moment.strftime("%H:%M"), moment.strftime("%-I:%M %p")):
            assert parse_time(spelt) == expected, spelt


DURATIONS = [
    ("45 minutes", 45),
    ("45 mins", 45),
    ("90 min", 90),
    ("45m", 45),
    ("an hour", 60),
    ("for an hour", 60),
    ("one hour", 60),
    ("1.5 hours", 90),
    ("1.5h", 90),
    ("two hours", 120),
    ("2 hrs", 120),
    ("half an hour", 30),
    ("a half hour", 30),
    ("half-hour", 30),
    ("a quarter of an hour", 15),
    ("an hour and a half", 90),
    ("one and a half hours", 90),
    ("1h30", 90),
    ("1h 30m", 90),
    ("2 hours and 15 minutes", 135),
    ("2 hours 15 minutes", 135),
    ("an hour and 15 minutes", 75),
    ("a couple of hours", 120),
    ("90-minute", 90),
    ("Denver", None),
    ("", None),
    ("90", None),
    ("hours", None),
    ("0 minutes", None),
    ("many hours", None),
]


@pytest.mark.parametrize("text, expected", DURATIONS)
def test_parse_duration_minutes(text, expected):
    assert parse_duration_minutes(text) == expected


WORD_NUMBERS = [
    ("forty-five", 45.0),
    ("a hundred and twenty", 120.0),
    ("one hundred twenty-five", 125.0),
    ("twelve hundred", 1200.0),
    ("two thousand five hundred", 2500.0),
    ("one million two hundred thousand", 1_200_000.0),
    ("1.5 thousand", 1500.0),
    ("a dozen", 12.0),
    ("one and a half", 1.5),
    ("four point five", 4.5),
    ("zero", 0.0),
    ("1,200", 1200.0),
    ("five five", None),
    ("forty twenty", None),
    ("thousand thousand", None),
    ("one hundred hundred", None),
    ("a", None),
    ("and", None),
    ("Denver", None),
]


@pytest.mark.parametrize("text, expected", WORD_NUMBERS)
def test_words_to_number(text, expected):
    assert words_to_number(text) == expected


_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
         "nineteen"]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _spell(number: int) -> str:
    """A plain English speller (the usual textbook one) for 0..999,999."""
    if number < 20:
        return _ONES[number]
    if number < 100:
        return _TENS[number // 10] + ("" if number % 10 == 0 else "-" + _ONES[number % 10])
    if number < 1000:
        rest = number % 100
        return _ONES[number // 100] + " hundred" + ("" if rest == 0 else " and " + _spell(rest))
    rest = number % 1000
    return _spell(number // 1000) + " thousand" + ("" if rest == 0 else " " + _spell(rest))


def test_spelt_numbers_read_back():
    rng = random.Random(3)
    for number in list(range(1001)) + [rng.randrange(1000, 1_000_000) for _ in range(300)]:
        assert words_to_number(_spell(number)) == number, _spell(number)


def test_nothing_raises_on_odd_text():
    rng = random.Random(11)
    pieces = ["the", "of", "a", "and", "half", "past", "to", "pm", "am", "3", "3rd", "12:60",
              "$", "k", "-", ",", ".", "/", "next", "this", "week", "weekend", "friday", "march",
              "hour", "hours", "minutes", "in", "days", "cents", "dollars", "0", "99999999",
              "point", "dozen", "thousand", "hundred", "tonight", "noon", "x", "1h", "ish", "'"]
    for _ in range(3000):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randrange(0, 6)))
        assert parse_date(text, TODAY) is None or len(parse_date(text, TODAY)) == 10
        assert parse_amount(text) is None or isinstance(parse_amount(text), float)
        assert parse_count(text) is None or parse_count(text) >= 1
        assert parse_time(text) is None or len(parse_time(text)) == 5
        assert parse_duration_minutes(text) is None or parse_duration_minutes(text) > 0
        assert words_to_number(text) is None or words_to_number(text) >= 0
    for odd in (None, 45, b"45", ["45"]):
        assert parse_amount(odd) is None and parse_count(odd) is None and parse_time(odd) is None
        assert parse_date(odd, TODAY) is None and parse_duration_minutes(odd) is None
    assert parse_date("tomorrow", "2027-03-01") is None  # today must be a date
