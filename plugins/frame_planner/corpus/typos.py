"""A small typo model: the slips people make typing on a phone, applied to words a template writes.

Only unlabelled words and trigger words pass through here — slot values
(names, cities, amounts, dates) are never misspelt, so every expected plan
argument is still the exact text of its span.
"""

from __future__ import annotations

import random
import re

#: Whole-word slips and shorthands seen in chat ("pls", "tmrw" is a date form, so not here).
COMMON = {
    "please": ("pls", "plz", "pleas"), "you": ("u", "yu"), "your": ("ur", "yor"), "want": ("wnat", "wan"),
    "flight": ("flite", "fligt"), "flights": ("flites", "flihgts"), "hotel": ("hotle", "hotell"),
    "book": ("bok", "boook"), "send": ("snd", "sned"), "what": ("wat", "waht"), "the": ("teh", "th"),
    "money": ("mony", "moeny"), "message": ("mesage", "messge"), "calendar": ("calender", "calandar"),
    "restaurant": ("resturant", "restaraunt"), "restaurants": ("resturants", "restaraunts"),
    "balance": ("balence", "ballance"), "tomorrow": ("tommorow",), "schedule": ("schedual", "shedule"),
    "search": ("serch", "seach"), "order": ("oder", "ordr"), "transfer": ("tranfer", "transfr"),
    "could": ("cud", "coud"), "would": ("wud", "woud"), "something": ("somethin", "smth"),
    "know": ("kno", "knwo"), "find": ("fnd", "fidn"), "appointment": ("appointmnet", "apointment"),
}
_WORD = re.compile(r"[A-Za-z']+")


def _slip(word: str, rng: random.Random) -> str:
    """One keyboard slip inside a word: swap, drop or double a letter (first letter kept)."""
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("swap", "drop", "double"))
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "drop":
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def misspell(text: str, rng: random.Random, rate: float) -> str:
    """``text`` with each word misspelt with probability ``rate`` (a known slip if there is one)."""

    def one(match: re.Match[str]) -> str:
        word = match.group(0)
        if rng.random() >= rate:
            return word
        known = COMMON.get(word.lower())
        if known:
            return rng.choice(known)
        return _slip(word, rng)

    return _WORD.sub(one, text)
