"""Forgiving names: how what a user (or a small planner model) says maps to rows of the world.

People say "NYC", "new york", "JFK"; "Maria" or "maria lopez" or "my
landlord"; "curries" for a curry. A failed lookup is a :class:`ToolError`
listing what *does* exist, so the planner can correct itself in one step
instead of guessing again.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from agentd.tools import ToolError

if TYPE_CHECKING:
    from .world import World

_FILLER = ("my ", "the ", "our ")


def normalize(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces ("L.A." -> "l a", "PG&E" keeps its "&")."""
    return re.sub(r"[^a-z0-9&]+", " ", text.lower()).strip()


def slug(text: str) -> str:
    """A readable id from a name ("Fog City Inn" -> "fog-city-inn")."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("&", "and").replace("'", "")).strip("-")


def stem(word: str) -> str:
    """Plural-insensitive form of one word: curries -> curry, tacos -> taco, dumplings -> dumpling."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """The stemmed words of ``text``."""
    return [stem(word) for word in normalize(text).split()]


#: Words that carry no meaning in a place or dish ("near the airport", "a pizza").
NOISE_WORDS = {"the", "a", "an", "my", "near", "close", "to", "by", "of", "some", "any", "and", "with", "in"}


def contains_words(needle: str, haystack: str) -> bool:
    """Every meaningful word of ``needle`` (plural-insensitive) appears in ``haystack``."""
    have = set(words(haystack))
    wanted = [word for word in words(needle) if word not in NOISE_WORDS]
    return bool(wanted) and all(word in have for word in wanted)


def _strip_filler(text: str) -> str:
    text = normalize(text)
    for filler in _FILLER:
        if text.startswith(filler):
            text = text[len(filler):]
    return text


def resolve_city(world: "World", name: str) -> dict[str, Any]:
    """The city called ``name`` (name, id, airport code or alias, any case), or a ToolError listing cities."""
    key = _strip_filler(name)
    candidates = [key, re.sub(r"\b(city|airport|international)\b", "", key).strip()]
    for candidate in candidates:
        row = world.row(
            "SELECT c.* FROM city_aliases a JOIN cities c ON c.id = a.city_id WHERE a.alias = ?", normalize(candidate)
        )
        if row is not None:
            row["airports"] = json.loads(row["airports"])
            return row
    known = ", ".join(r["name"] for r in world.rows("SELECT name FROM cities ORDER BY name"))
    raise ToolError(f"unknown city {name!r}; cities with flights and hotels: {known}")


def find_contacts(world: "World", name: str) -> list[dict[str, Any]]:
    """Contacts matching ``name``: full name, first or last name, relationship, phone or email; best first."""
    key = _strip_filler(name)
    if key.endswith(" s"):  # "Maria's" -> "maria s"
        key = key[:-2]
    contacts = world.rows("SELECT * FROM contacts ORDER BY name")
    digits = re.sub(r"\D", "", name)
    tiers: list[list[dict[str, Any]]] = [[], [], []]
    for contact in contacts:
        full = normalize(contact["name"])
        phone = re.sub(r"\D", "", contact["phone"])
        if key in {full, normalize(contact["email"])} or (len(digits) >= 7 and phone.endswith(digits)):
            tiers[0].append(contact)
        elif key in {normalize(contact["first_name"]), normalize(contact["last_name"]), normalize(contact["relationship"])}:
            tiers[1].append(contact)
        elif key and (full.startswith(key) or contains_words(key, full)):
            tiers[2].append(contact)
    for tier in tiers:
        if tier:
            return tier
    return []


def resolve_contact(world: "World", name: str) -> dict[str, Any]:
    """Exactly one contact for ``name``; a ToolError when none or several match (naming them)."""
    found = find_contacts(world, name)
    if len(found) == 1:
        return found[0]
    if not found:
        known = ", ".join(r["name"] for r in world.rows("SELECT name FROM contacts ORDER BY name"))
        raise ToolError(f"no contact matches {name!r}; contacts: {known}")
    raise ToolError(f"{name!r} matches several contacts: {', '.join(c['name'] for c in found)}; use the full name")


ACCOUNT_WORDS = {
    "checking": "checking", "check": "checking", "everyday checking": "checking", "current": "checking",
    "savings": "savings", "saving": "savings", "high yield savings": "savings",
}


def resolve_account(name: str | None, default: str = "checking") -> str:
    """``checking`` or ``savings`` for what the user calls an account ("my savings account")."""
    if name is None:
        return default
    key = re.sub(r"\baccount\b", "", _strip_filler(name)).strip()
    if key in ACCOUNT_WORDS:
        return ACCOUNT_WORDS[key]
    raise ToolError(f"unknown account {name!r}; accounts: checking, savings")


def resolve_bill(world: "World", payee: str) -> dict[str, Any]:
    """The bill for ``payee``: its kind ("electricity"), the payee ("PG&E") or an alias ("power")."""
    key = re.sub(r"\b(bill|payment|company)\b", "", _strip_filler(payee)).strip()
    bills = world.rows("SELECT * FROM bills ORDER BY id")
    for bill in bills:
        names = {normalize(bill["id"]), normalize(bill["payee"]), *(normalize(a) for a in json.loads(bill["aliases"]))}
        if key in names or stem(key) in names:
            return bill
    for bill in bills:
        if key and contains_words(key, f"{bill['id']} {bill['payee']} {' '.join(json.loads(bill['aliases']))}"):
            return bill
    known = ", ".join(f"{b['id']} ({b['payee']})" for b in bills)
    raise ToolError(f"no bill for {payee!r}; bills: {known}")
