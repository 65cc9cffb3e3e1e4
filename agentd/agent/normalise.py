"""Normalisers: one span of the user's request -> a typed value.

Used by the frame planner and by plan templates (re-reading a value from a new
request). The planner's model only tags spans ("forty-five bucks", "next Friday"); code, not
the model, turns them into the values tools take. Stdlib only (no torch). Every
public function returns None for text it cannot read and never raises. Case,
extra spaces, a trailing comma/period and edge words such as "on", "for", "from",
"starting", "at", "around" are ignored.

What is understood:

* :func:`words_to_number`: "45", "1,200", "2.5", "forty-five", "a hundred and twenty",
  "one hundred twenty-five", "twelve hundred", "two thousand five hundred",
  "1.5 thousand", "a dozen", "one and a half", "four point five".
* :func:`parse_amount` (US dollars, float): "$45", "45", "45.50", "$1,200", "1.2k",
  "5 grand", "45 dollars", "45 bucks", "45 usd", "usd 45", "forty five dollars",
  "a hundred", "fifty cents" (0.5), "5 dollars and 50 cents", "under $300".
* :func:`parse_count` (int >= 1): "2", "two", "a"/"an"/"one"/"single" (1),
  "a couple (of)"/"couple"/"a pair" (2), "a few" (3), "a dozen" (12), "once",
  "twice", "thrice", "2x", "for 3 people", "3 nights", "a week" (7 nights),
  "two weeks" (14), "a fortnight" (14); trailing nouns (nights, people, passengers,
  tickets, seats, days, times, guests, rooms, "of us", ...) are dropped.
* :func:`parse_time` ("HH:MM", 24h): "19:00", "0730", "7pm", "7 pm", "7:30pm",
  "7:30 p.m.", "730pm", "noon", "midday", "midnight", "seven thirty",
  "half past seven", "quarter to eight", "ten past nine", "half seven" (7:30),
  "8 in the morning", "8 in the evening", "tonight at 8", "at 8", "9ish",
  "8 o'clock".
* :func:`parse_duration_minutes` (int): "45 minutes", "90 min", "an hour",
  "1.5 hours", "two hours", "half an hour", "a quarter of an hour",
  "an hour and a half", "one and a half hours", "1h30", "1h 30m",
  "2 hours and 15 minutes", "a couple of hours".
* :func:`parse_date` ("YYYY-MM-DD"): "2027-03-03", "2027/3/3", "March 3",
  "Mar 3rd", "3 March", "the 3rd of March", "March third", "March 3, 2027",
  "3/3" and "3/3/2027" (US month/day), "the 3rd", "today", "tonight", "tomorrow"
  ("tmrw", "tmr", "tomorrow night"), "the day after tomorrow", "yesterday",
  weekdays with or without "this"/"next"/"on"/"coming" ("Fri" too),
  "in 3 days", "in three days", "in a week", "in two weeks", "in a month",
  "a week from today", "next week", "this weekend", "the weekend", "next weekend",
  "end of the month", "end of next month", "Friday, March 5" (the weekday is ignored),
  "Friday evening", "March 3 in the morning" (the part of the day is ignored).

Conventions (weeks run Monday to Sunday; examples for today = Monday 2027-03-01):

* Dates without a year: the next occurrence on or after today ("Feb 1" -> 2028-02-01).
  "the 3rd": this month if not past, else the next month that has that day.
* "Friday", "on Friday", "coming Friday": the first Friday after today (1-7 days on,
  so "Monday" said on a Monday is next week's). "this Friday": the Friday on or
  after today (today itself included) = 2027-03-05. "next Friday": the Friday of
  next week = 2027-03-12.
* "next week": Monday of next week (2027-03-08). "this weekend" / "the weekend":
  the Saturday on or after today (today if it is Sunday) = 2027-03-06.
  "next weekend": Saturday of next week = 2027-03-13.
* "in a month": the same day next month (clamped to its last day).
* Times with no am/pm and no part of the day ("at 8", "half past seven", "7:30"):
  hours 1-6 are afternoon/evening (13:00-18:59), 7-12 are taken as written,
  0 and 13-23 (and anything written "07:30") are 24-hour. "tonight" / "at night":
  12 is midnight, 1-4 are small hours, 5-11 are pm.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re

# --------------------------------------------------------------------- shared words

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_SCALES = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_NUMERAL = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+")
_EDGE_PUNCTUATION = " \t\n,.;:!?\"'()"


def _clean(text: str) -> str:
    """Lower case, single spaces, no punctuation at either end."""
    return re.sub(r"\s+", " ", text.lower()).strip(_EDGE_PUNCTUATION)


def _strip_words(text: str, leading: tuple[str, ...] = (), trailing: tuple[str, ...] = ()) -> str:
    """Drop edge words/phrases (repeatedly: "starting on Friday")."""
    changed = True
    while changed:
        changed = False
        for word in leading:
            if text.startswith(word + " "):
                text, changed = text[len(word) + 1:].lstrip(), True
        for word in trailing:
            if text.endswith(" " + word):
                text, changed = text[: -len(word) - 1].rstrip(), True
    return text.strip(_EDGE_PUNCTUATION)


def _numeral(word: str) -> float | None:
    """A written-out numeral: "45", "1,200", "2.5"."""
    return float(word.replace(",", "")) if _NUMERAL.fullmatch(word) else None


def words_to_number(text: str) -> float | None:
    """The number a numeral or English number words say ("forty-five" -> 45.0), else None."""
    if not isinstance(text, str):
        return None
    words = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", _clean(text)).split()  # "forty-five", not "-5"
    if not words:
        return None
    if "point" in words:  # "four point five": digits after the point, one word each
        at = words.index("point")
        whole = _integer_words(words[:at]) if at else 0.0
        digits = [_UNITS.get(word) for word in words[at + 1:]]
        if whole is None or not digits or any(d is None or d > 9 for d in digits):
            return None
        return whole + float("0." + "".join(str(d) for d in digits))
    if words in (["half"], ["a", "half"]):
        return 0.5
    if words[-3:] == ["and", "a", "half"] and len(words) > 3:
        whole = _integer_words(words[:-3])
        return None if whole is None else whole + 0.5
    return _integer_words(words)


def _integer_words(words: list[str]) -> float | None:
    """Sum number words the way English groups them: (units, tens, hundreds) x scale."""
    total, group, last_scale, said = 0.0, 0.0, float("inf"), False
    for at, word in enumerate(words):
        small = group % 100  # what the tens/units slot of the current group holds
        if word == "and" and 0 < at < len(words) - 1:
            continue
        if at == 0 and _numeral(word) is not None:  # "1.5 thousand", "2 dozen"
            group, said = _numeral(word), True
        elif at == 0 and word in ("a", "an") and len(words) > 1:  # "a hundred"
            group = 1.0
        elif word in _UNITS or word in _TENS:
            value = _UNITS.get(word, _TENS.get(word, 0))
            if word == "zero" and len(words) > 1:
                return None
            fits = small == 0 or (value < 10 and small >= 20 and small % 10 == 0)
            if not fits:  # "five five", "forty twenty"
                return None
            group, said = group + value, True
        elif word == "hundred":
            if group >= 100:
                return None
            group, said = max(group, 1.0) * 100, True
        elif word == "dozen":
            group, said = max(group, 1.0) * 12, True
        elif word in _SCALES:
            if _SCALES[word] >= last_scale:
                return None
            total, group, said = total + max(group, 1.0) * _SCALES[word], 0.0, True
            last_scale = _SCALES[word]
        else:
            return None
    return total + group if said else None


def _whole(value: float | None, minimum: int = 0) -> int | None:
    """``value`` as an int if it is a whole number >= ``minimum``."""
    if value is None or value != int(value) or value < minimum:
        return None
    return int(value)


# --------------------------------------------------------------------- amounts

_AMOUNT_LEAD = ("about", "around", "roughly", "approximately", "approx", "under", "below",
                "up to", "at most", "less than", "no more than", "max", "maximum", "only",
                "just", "exactly", "of", "for", "is")
_CURRENCY = r"(?:us dollars?|dollars?|bucks?|usd)"


def parse_amount(text: str) -> float | None:
    """US dollars in ``text`` ("forty-five bucks" -> 45.0, "fifty cents" -> 0.5), else None."""
    if not isinstance(text, str):
        return None
    words = _strip_words(_clean(text), _AMOUNT_LEAD)
    split = re.fullmatch(rf"(.+?) {_CURRENCY} (?:and )?(.+?) cents?", words)
    if split:
        dollars, cents = _dollars(split[1]), words_to_number(split[2])
        if dollars is None or cents is None or not 0 <= cents < 100:
            return None
        return round(dollars + cents / 100, 2)
    cents_only = re.fullmatch(r"(.+?) ?(?:cents?|c)", words)
    if cents_only:
        cents = words_to_number(cents_only[1])
        return None if cents is None else round(cents / 100, 2)
    dollars = _dollars(words)
    return None if dollars is None else round(dollars, 2)


def _dollars(words: str) -> float | None:
    """A dollar figure with its currency marks: "$1,200", "1.2k", "45 bucks", "usd 45"."""
    words = re.sub(rf"^(?:\$|usd )\s*|\s*(?:\$|{_CURRENCY})$", "", words).strip()
    multiplier = 1.0
    thousands = re.fullmatch(r"(.+?) ?(?:k|grand)", words)
    if thousands:
        words, multiplier = thousands[1], 1000.0
    value = words_to_number(words)
    return None if value is None else value * multiplier


# --------------------------------------------------------------------- counts

_COUNT_LEAD = ("for", "with", "just", "only", "party of", "table for", "a party of", "a table for",
               "the", "x")
_COUNT_NOUNS = ("nights", "night", "people", "persons", "person", "passengers", "passenger",
                "pax", "tickets", "ticket", "seats", "seat", "days", "day", "times", "time",
                "guests", "guest", "adults", "adult", "travellers", "travelers", "traveller",
                "traveler", "rooms", "room", "of us", "of them", "orders", "order", "of")
_COUNT_WORDS = {"a": 1, "an": 1, "single": 1, "a single": 1, "once": 1, "twice": 2,
                "thrice": 3, "couple": 2, "a couple": 2, "pair": 2, "a pair": 2,
                "few": 3, "a few": 3}


def parse_count(text: str) -> int | None:
    """A whole number >= 1 of things ("a couple of nights" -> 2, "a week" -> 7), else None."""
    if not isinstance(text, str):
        return None
    words = _strip_words(_clean(text), _COUNT_LEAD, _COUNT_NOUNS)
    words = re.sub(r"^(\d+) ?x$|^x ?(\d+)$", lambda m: m[1] or m[2], words)  # "2x", "x2"
    weeks = re.fullmatch(r"(.+?) (weeks?|fortnights?)|(weeks?|fortnights?)", words)
    if weeks:
        how_many = _count_word(weeks[1]) if weeks[1] else 1
        per = 14 if (weeks[2] or weeks[3]).startswith("fortnight") else 7
        return None if how_many is None else how_many * per
    return _count_word(words)


def _count_word(words: str) -> int | None:
    if words in _COUNT_WORDS:
        return _COUNT_WORDS[words]
    return _whole(words_to_number(words), minimum=1)


# --------------------------------------------------------------------- times

_TIME_LEAD = ("at", "around", "about", "approximately", "roughly", "by", "from", "starting",
              "for", "before", "after", "@", "on")
_TIME_TRAIL = ("ish", "o'clock", "oclock", "sharp", "or so")
# (pattern, part of the day) — found anywhere in the span, then removed from it.
_PERIODS = (
    (r"(?<![a-z])a\.? ?m\b\.?", "am"),
    (r"(?<![a-z])p\.? ?m\b\.?", "pm"),
    (r"\b(?:in the |this )?morning\b", "am"),
    (r"\b(?:in the |this )?(?:afternoon|evening)\b", "pm"),
    (r"\b(?:tonight|(?:at )?night)\b", "night"),
)
_HALF_HOURS = {"half": 30, "quarter": 15}


def parse_time(text: str) -> str | None:
    """A clock time "HH:MM" (24h) in ``text`` ("7:30 p.m." -> "19:30"), else None."""
    if not isinstance(text, str):
        return None
    words = _clean(text)
    periods = set()
    for pattern, period in _PERIODS:
        if re.search(pattern, words):
            periods.add(period)
            words = re.sub(pattern, " ", words)
    if len(periods) > 1:  # "7am in the evening"
        return None
    period = periods.pop() if periods else None
    words = re.sub(r"(\d|noon)-?ish$", r"\1", " ".join(words.split()))  # "9ish", "noon-ish"
    words = _strip_words(words.strip(_EDGE_PUNCTUATION), _TIME_LEAD, _TIME_TRAIL)
    if words in ("noon", "midday", "12 noon", "twelve noon") and period in (None, "pm"):
        return "12:00"
    if words in ("midnight", "12 midnight", "twelve midnight") and period in (None, "night"):
        return "00:00"
    minutes = _minutes_of_day(words, period)
    return None if minutes is None else f"{minutes // 60:02d}:{minutes % 60:02d}"


def _minutes_of_day(words: str, period: str | None) -> int | None:
    """Minutes after midnight for a clock reading in digits or words."""
    digits = re.fullmatch(r"(\d{1,2})(?:[:.](\d{2}))?", words)
    if digits:
        hour, minute = int(digits[1]), int(digits[2] or 0)
        written_24h = digits[1].startswith("0") and len(digits[1]) == 2 or hour == 0 or hour > 12
        return _resolve(hour, minute, period, written_24h)
    packed = re.fullmatch(r"(\d{1,2})(\d{2})", words)  # "730pm", "1930"
    if packed and (period or len(words) == 4):
        hour, minute = int(packed[1]), int(packed[2])
        return _resolve(hour, minute, period, written_24h=period is None)
    relative = re.fullmatch(r"(.+?)(?: minutes?)? (past|after|to|before|till|til|of) (.+)", words)
    if relative:
        offset = _HALF_HOURS.get(relative[1].removeprefix("a "), None)
        offset = offset if offset is not None else _whole(words_to_number(relative[1]))
        hour = _hour_word(relative[3])
        if offset is None or hour is None or not 0 < offset < 60:
            return None
        base = _resolve(hour, 0, period, written_24h=False)
        if base is None:
            return None
        sign = 1 if relative[2] in ("past", "after") else -1
        return (base + sign * offset) % (24 * 60)
    british_half = re.fullmatch(r"half (.+)", words)  # "half seven" = 7:30
    if british_half:
        hour = _hour_word(british_half[1])
        return None if hour is None else _resolve(hour, 30, period, written_24h=False)
    hour_then_minutes = re.fullmatch(r"(\S+)(?: (.+))?", words)  # "seven", "seven thirty"
    if hour_then_minutes:
        hour = _hour_word(hour_then_minutes[1])
        minute_words = hour_then_minutes[2] or "zero"
        minute_words = re.sub(r"^o(?:h)? ", "", minute_words)  # "seven oh five"
        minute = _whole(words_to_number(minute_words))
        if hour is None or minute is None:
            return None
        return _resolve(hour, minute, period, written_24h=False)
    return None


def _hour_word(word: str) -> int | None:
    hour = _whole(words_to_number(word))
    return hour if hour is not None and hour <= 23 else None


def _resolve(hour: int, minute: int, period: str | None, written_24h: bool) -> int | None:
    """Minutes after midnight for ``hour``:``minute`` read with the part of the day (see module doc)."""
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    if period == "am":
        if not 1 <= hour <= 12:
            return None
        hour %= 12
    elif period == "pm":
        if hour == 0:
            return None
        if hour <= 12:  # "19:00 pm" is written too: keep 13-23 as they are
            hour = hour % 12 + 12
    elif period == "night":
        if 1 <= hour <= 12:
            hour = 0 if hour == 12 else hour if hour <= 4 else hour + 12
    elif not written_24h and 1 <= hour <= 6:
        hour += 12
    return hour * 60 + minute


# --------------------------------------------------------------------- durations

_DURATION_LEAD = ("for", "about", "around", "roughly", "approximately", "lasting", "just",
                  "only", "a duration of", "duration")
_DURATION_TRAIL = ("long", "or so", "duration")
_HOUR_UNIT = r"(?:hours?|hrs?|h)"
_MINUTE_UNIT = r"(?:minutes?|mins?|m)"
_FRACTIONS = {"half an": 0.5, "half a": 0.5, "a half": 0.5, "half": 0.5,
              "quarter": 0.25, "a quarter": 0.25, "quarter of an": 0.25,
              "a quarter of an": 0.25, "quarter an": 0.25, "three quarters of an": 0.75,
              "three quarters": 0.75, "an": 1.0, "a": 1.0, "a couple of": 2.0,
              "a couple": 2.0, "couple of": 2.0}


def parse_duration_minutes(text: str) -> int | None:
    """A length of time in whole minutes ("an hour and a half" -> 90), else None."""
    if not isinstance(text, str):
        return None
    words = _strip_words(_clean(text).replace("-", " "), _DURATION_LEAD, _DURATION_TRAIL)
    words = re.sub(r"(?<=\d)(?=[a-z])|(?<=[a-z])(?=\d)", " ", words)  # "1h30" -> "1 h 30"
    hours = re.fullmatch(rf"(.+?) {_HOUR_UNIT}( and a half)?(?: (?:and )?(.+?)(?: {_MINUTE_UNIT})?)?",
                         words)
    if hours:
        count = _quantity(hours[1])
        extra = _quantity(hours[3]) if hours[3] else 0.0
        if count is None or extra is None:
            return None
        total = count * 60 + (30 if hours[2] else 0) + extra
    else:
        minutes = re.fullmatch(rf"(.+?) {_MINUTE_UNIT}", words)
        total = _quantity(minutes[1]) if minutes else None
    if total is None or total <= 0:
        return None
    return round(total)


def _quantity(words: str) -> float | None:
    """How many units: a number, "an", "half an", "a couple of"."""
    return _FRACTIONS[words] if words in _FRACTIONS else words_to_number(words)


# --------------------------------------------------------------------- dates

_MONTHS = {name: number for number in range(1, 13)
           for name in (calendar.month_name[number].lower(), calendar.month_abbr[number].lower())}
_MONTHS["sept"] = 9
_WEEKDAYS = {name: number for number in range(7)
             for name in (calendar.day_name[number].lower(), calendar.day_abbr[number].lower())}
_WEEKDAYS.update({"tues": 1, "weds": 2, "thur": 3, "thurs": 3})
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6,
             "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11,
             "twelfth": 12, "thirteenth": 13, "fourteenth": 14, "fifteenth": 15,
             "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19,
             "twentieth": 20, "thirtieth": 30}
_DATE_LEAD = ("on", "for", "starting", "start", "from", "by", "until", "till", "til",
              "beginning", "due", "over", "as of")
_DATE_TRAIL = ("onwards", "onward", "on")
_PART_OF_DAY = r"(?<=[a-z\d]) (?:in |at )?(?:morning|afternoon|evening|night)$"  # "the" is gone
_NAMED_DAYS = {"today": 0, "tonight": 0, "now": 0, "tomorrow": 1, "tmrw": 1, "tmr": 1,
               "tomorow": 1, "tommorow": 1, "tommorrow": 1, "day after tomorrow": 2,
               "yesterday": -1, "day before yesterday": -2}


def parse_date(text: str, today: dt.date) -> str | None:
    """An ISO date "YYYY-MM-DD" that ``text`` names relative to ``today``, else None.

    See the module docstring for the conventions ("this Friday", "next Friday", ...).
    """
    if not isinstance(text, str) or not isinstance(today, dt.date):
        return None
    # "Mar. 3, 2027" -> "mar 3 2027", "twenty-first" -> "twenty first"; ISO dates keep their dashes
    words = re.sub(r"(?<!\d)[.-]|[.-](?!\d)|,", " ", _clean(text))
    words = re.sub(r"\b(?:the|of)\b", " ", words)
    words = _strip_words(" ".join(words.split()), _DATE_LEAD, _DATE_TRAIL)
    # "Friday evening", "tomorrow night": the part of the day does not change the date
    found = _read_date(words, today) or _read_date(re.sub(_PART_OF_DAY, "", words), today)
    weekday_first = re.fullmatch(r"([a-z]+) (.+)", words)
    if found is None and weekday_first and weekday_first[1] in _WEEKDAYS:  # "Friday March 5"
        rest = weekday_first[2]
        found = _iso_date(rest) or _numeric_date(rest, today) or _month_day(rest, today) \
            or _day_of_month(rest, today)
    return None if found is None else found.isoformat()


def _read_date(words: str, today: dt.date) -> dt.date | None:
    return (_iso_date(words) or _numeric_date(words, today) or _named_day(words, today)
            or _offset_date(words, today) or _weekday(words, today) or _weekend(words, today)
            or _month_end(words, today) or _month_day(words, today)
            or _day_of_month(words, today))


def _date(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def _next_occurrence(month: int, day: int, today: dt.date) -> dt.date | None:
    """``month``/``day`` on or after today (up to 8 years on, for February 29)."""
    for year in range(today.year, today.year + 9):
        candidate = _date(year, month, day)
        if candidate is not None and candidate >= today:
            return candidate
    return None


def _iso_date(words: str) -> dt.date | None:
    match = re.fullmatch(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})", words)
    return _date(int(match[1]), int(match[2]), int(match[3])) if match else None


def _numeric_date(words: str, today: dt.date) -> dt.date | None:
    """US month/day: "3/3", "3/3/27", "3/3/2027"."""
    match = re.fullmatch(r"(\d{1,2})/(\d{1,2})(?:/(\d{2}|\d{4}))?", words)
    if not match:
        return None
    month, day = int(match[1]), int(match[2])
    if match[3] is None:
        return _next_occurrence(month, day, today)
    year = int(match[3])
    return _date(year + 2000 if year < 100 else year, month, day)


def _named_day(words: str, today: dt.date) -> dt.date | None:
    """"today", "tomorrow night", "this evening", "day after tomorrow"."""
    if re.fullmatch(r"this (?:morning|afternoon|evening)", words):
        return today
    offset = _NAMED_DAYS.get(words)
    return None if offset is None else today + dt.timedelta(days=offset)


def _offset_date(words: str, today: dt.date) -> dt.date | None:
    """"in 3 days", "in a week's time", "two weeks from today", "in a month"."""
    base = today
    match = re.fullmatch(r"in (.+?) (days?|weeks?|months?)(?:'s?)?(?: time)?", words)
    if not match:
        match = re.fullmatch(r"(.+?) (days?|weeks?|months?) (?:from )?(today|now|tomorrow)", words)
        if match and match[3] == "tomorrow":
            base = today + dt.timedelta(days=1)
    count = _count_word(match[1]) if match else None
    if match is None or count is None:
        return None
    unit = match[2].rstrip("s")
    if unit == "day":
        return base + dt.timedelta(days=count)
    if unit == "week":
        return base + dt.timedelta(weeks=count)
    month_index = base.month - 1 + count
    year, month = base.year + month_index // 12, month_index % 12 + 1
    return dt.date(year, month, min(base.day, calendar.monthrange(year, month)[1]))


def _weekday(words: str, today: dt.date) -> dt.date | None:
    """Weekday names: bare/"on"/"coming" (after today), "this" (on or after), "next" (next week)."""
    match = (re.fullmatch(r"(?:(this coming|this|coming|upcoming|next|following) )?([a-z]+)", words)
             or re.fullmatch(r"([a-z]+) (next|this) week", words))
    if not match:
        return None
    modifier, name = (match[1], match[2]) if match[2] in _WEEKDAYS else (match[2], match[1])
    if name not in _WEEKDAYS:
        return None
    target, current = _WEEKDAYS[name], today.weekday()
    if modifier in ("next", "following"):
        return today + dt.timedelta(days=7 - current + target)
    if modifier == "this":
        return today + dt.timedelta(days=(target - current) % 7)
    return today + dt.timedelta(days=(target - current - 1) % 7 + 1)


def _weekend(words: str, today: dt.date) -> dt.date | None:
    """"next week" (its Monday), "this weekend" / "weekend" (Saturday), "next weekend"."""
    current = today.weekday()
    if words == "next week":
        return today + dt.timedelta(days=7 - current)
    if words in ("weekend", "this weekend", "this coming weekend", "coming weekend"):
        return today if current == 6 else today + dt.timedelta(days=5 - current)
    if words in ("next weekend", "following weekend"):
        return today + dt.timedelta(days=7 - current + 5)
    return None


def _month_end(words: str, today: dt.date) -> dt.date | None:
    """"end of the month", "end of this month", "end of next month" ("the"/"of" removed)."""
    match = re.fullmatch(r"(?:end (this |next )?month|(this |next )?month end)", words)
    if not match:
        return None
    year, month = today.year, today.month
    if (match[1] or match[2] or "").strip() == "next":
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return dt.date(year, month, calendar.monthrange(year, month)[1])


def _day_number(words: str, ordinal_only: bool = False) -> int | None:
    """A day of the month: "3", "3rd", "third", "twenty first" (ordinal forms only if asked)."""
    digits = re.fullmatch(r"(\d{1,2})(st|nd|rd|th)?", words)
    if digits:
        return int(digits[1]) if digits[2] or not ordinal_only else None
    if words in _ORDINALS:
        return _ORDINALS[words]
    compound = re.fullmatch(r"(twenty|thirty) ([a-z]+)", words)
    if compound and compound[2] in _ORDINALS and _ORDINALS[compound[2]] < 10:
        return _TENS[compound[1]] + _ORDINALS[compound[2]]
    return None


def _month_day(words: str, today: dt.date) -> dt.date | None:
    """"March 3", "Mar 3rd 2027", "3 March", "3rd March" ("of"/"the" already removed)."""
    match = re.fullmatch(r"([a-z]+) (.+?)(?: (\d{4}))?", words)
    if match and match[1] in _MONTHS:
        month_word, day_words, year = match[1], match[2], match[3]
    else:
        match = re.fullmatch(r"(.+?) ([a-z]+)(?: (\d{4}))?", words)
        if not match or match[2] not in _MONTHS:
            return None
        day_words, month_word, year = match[1], match[2], match[3]
    day = _day_number(day_words)
    if day is None:
        return None
    if year is not None:
        return _date(int(year), _MONTHS[month_word], day)
    return _next_occurrence(_MONTHS[month_word], day, today)


def _day_of_month(words: str, today: dt.date) -> dt.date | None:
    """"the 3rd": this month if not past, else the next month that has that day."""
    day = _day_number(words, ordinal_only=True)
    if day is None:
        return None
    year, month = today.year, today.month
    for _ in range(13):
        candidate = _date(year, month, day)
        if candidate is not None and candidate >= today:
            return candidate
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return None


# -- by kind ----------------------------------------------------------------------------
#: The kinds of value :func:`read_value` reads (``ArgumentSource.kind``).
VALUE_KINDS = ("text", "date", "amount", "integer", "time", "duration", "account")


def parse_account(text: str) -> str | None:
    """``checking`` / ``savings`` / ``all`` from how people name their accounts."""
    lowered = text.lower()
    if "sav" in lowered:
        return "savings"
    if any(word in lowered for word in ("check", "chequ", "current", "main", "everyday", "debit")):
        return "checking"
    if any(word in lowered for word in ("all", "both", "every", "total")):
        return "all"
    return None


def read_value(kind: str, text: str, today: dt.date) -> object:
    """A value of ``kind`` (one of :data:`VALUE_KINDS`) read from ``text``; None if it does not say one."""
    if kind == "text":
        return text or None
    if kind == "date":
        return parse_date(text, today)
    if kind == "amount":
        amount = parse_amount(text)
        # Whole dollars as integers: the approval prompt says 45, not 45.0.
        return int(amount) if amount is not None and amount.is_integer() else amount
    if kind == "integer":
        return parse_count(text)
    if kind == "time":
        return parse_time(text)
    if kind == "duration":
        return parse_duration_minutes(text)
    if kind == "account":
        return parse_account(text)
    raise ValueError(f"unknown value kind {kind!r}")
