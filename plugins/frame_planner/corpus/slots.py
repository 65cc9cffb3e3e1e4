"""Fill a template's slots: a value for each, from the split's vocabulary, consistent with the world.

Slots are filled in an order that lets later ones depend on earlier ones: a
destination with a flight from the chosen origin, a partial bill payment under
what that bill has due, order items that are on the menu of the restaurant
the search will find first (looked up in a pristine sandbox world). A slot
that cannot be filled raises :class:`Resample` and the generator draws the
example again.
"""

from __future__ import annotations

import random
from datetime import date
from functools import lru_cache
from typing import Any

from agentd.plugins.demo_tools import catalog_places

from . import values as said
from . import vocabulary as vocab
from .pattern import Slot
from .values import Said


class Resample(Exception):
    """These choices cannot make a valid example; draw again."""


#: Which slot labels are filled first (later samplers read what these chose).
_ORDER = ("origin", "place", "payee", "cuisine", "dish", "near", "person")

_ROUTES = {frozenset((a, b)) for a, b, _ in catalog_places.ROUTES}
_AIRPORTS = {code for city in catalog_places.CITIES for code in city.airports}


def fill(slots: list[Slot], split: str, rng: random.Random) -> tuple[dict[str, Said], dict[str, Any]]:
    """A :class:`Said` per slot name, and the hidden facts the choices rest on (city ids, bill ids)."""
    ordered = sorted(slots, key=lambda s: (_ORDER.index(s.label) if s.label in _ORDER else len(_ORDER), s.name))
    chosen: dict[str, Said] = {}
    facts: dict[str, Any] = {}
    for slot in ordered:
        for _ in range(20):
            value = _sample(slot, split, rng, chosen, facts)
            if not _repeats(slot, value, chosen, facts):
                break
        else:
            raise Resample(f"no distinct value for {slot.name}")
        chosen[slot.name] = value
    return chosen, facts


def _repeats(slot: Slot, value: Said, chosen: dict[str, Said], facts: dict[str, Any]) -> bool:
    """Two slots of one label saying the same thing ("text Sam and Sam") make a muddled request."""
    same_label = [name for name in chosen if name.rstrip("0123456789") == slot.label]
    if any(_meaning(chosen[name]) == _meaning(value) for name in same_label):
        return True
    if slot.label == "payee":  # two words for one bill: the second payment would find it paid
        bills = [facts.get(f"bill:{name}") for name in same_label]
        return facts.get(f"bill:{slot.name}") in bills
    return False


def _meaning(value: Said) -> str:
    return str(value.text if value.value is None else value.value).lower()


def _suffix(name: str) -> str:
    return name[len(name.rstrip("0123456789")):]


def _sample(slot: Slot, split: str, rng: random.Random, chosen: dict[str, Said], facts: dict[str, Any]) -> Said:
    label, kind, n = slot.label, slot.kind, _suffix(slot.name)
    if label == "origin":
        if kind == "home" or rng.random() < 0.3:
            facts["city:origin" + n] = vocab.HOME_CITY_ID
            return Said(rng.choice(vocab.HOME_NAMES), None)  # the value is set below, from the words
        city = rng.choice(vocab.CITIES.of(split))
        facts["city:origin" + n] = city.city_id
        return Said(rng.choice(city.names), None)
    if label == "place":
        origin = facts.get("city:origin" + n, vocab.HOME_CITY_ID)
        cities = [c for c in vocab.CITIES.of(split) if c.city_id != origin and frozenset((origin, c.city_id)) in _ROUTES]
        if not cities:
            raise Resample("no route from the origin")
        city = rng.choice(cities)
        facts["city:place" + n] = city.city_id
        names = city.names
        if kind == "city":  # a hotel is "in Denver", not "in DEN"
            names = tuple(name for name in names if name not in _AIRPORTS) or names
        return Said(rng.choice(names), None)
    if label == "date":
        first, last = {"any": (0, 20), "soon": (1, 7), "far": (8, 45)}.get(kind, (1, 30))
        value = said.sample_date(rng, first, last)
        while slot.bare and value.text.startswith("in "):  # "starting in 3 days" reads badly
            value = said.sample_date(rng, first, last)
        return value
    if label in ("since", "until"):
        return _history_date(label, n, rng, chosen)
    if label == "nights":  # one night is what a stay with no nights said means
        return said.sample_count(rng, 2, 6)
    if label == "passengers":
        return said.sample_count(rng, 2, 4)
    if label == "days":
        return said.sample_count(rng, 2, 7)
    if label == "quantity":
        n_items = rng.randint(2, 3)
        return rng.choice([f for f in said.count_forms(n_items) if not f.text.startswith("a ")])
    if label == "max_price":
        caps = (120, 150, 180, 200, 250, 300, 400) if kind == "hotel" else said.PRICE_CAPS
        form = said.sample_amount(rng, caps)
        return Said(form.text, form.value, rng.choice(("under ", "below ", "for less than ")))
    if label == "amount":
        if kind == "bill":
            bill = facts.get("bill:payee" + n)
            if bill is None:
                raise ValueError(f"{slot.name!r} of kind 'bill' needs a payee{n} slot")
            due = vocab.BILL_DUE[bill]
            return said.sample_amount(rng, tuple(a for a in (10, 15, 20, 25, 30, 35, 40) if a < due))
        return said.sample_amount(rng, said.TRANSFER_AMOUNTS)
    if label == "near":
        if kind == "hotel":
            city = facts.get("city:place" + n)
            landmarks = next((c.landmarks for c in vocab.CITIES.of(split) if c.city_id == city), ())
            return Said(rng.choice(landmarks + vocab.SHARED_HOTEL_NEAR), None)
        pool = vocab.NEIGHBOURHOODS.of(split) + vocab.HOME_WORDS
        return Said(rng.choice(pool), None)
    if label == "cuisine":
        words, cuisine = rng.choice(vocab.CUISINES.of(split))
        facts["cuisine" + n] = cuisine
        return Said(words, None)
    if label == "dish":
        return Said(rng.choice(vocab.DISH_WORDS.of(split)), None)
    if label == "item":
        return _item(slot, split, rng, chosen)
    if label == "person":
        person = rng.choice(vocab.PEOPLE.of(split))
        roll = rng.random()
        if roll < 0.15 and person.relationship not in vocab.AMBIGUOUS_RELATIONSHIPS:
            return Said(person.relationship, None, "my ")
        return Said(person.full if roll < 0.3 else person.first, None)
    if label == "payee":
        payee = rng.choice(vocab.PAYEES.of(split))
        facts["bill:" + slot.name] = payee.bill_id
        return Said(payee.word, None)
    if label in ("account", "fact_account"):
        words, account = rng.choice(vocab.ACCOUNTS.of(split))
        return Said(words, account)
    if label == "time":
        return said.sample_time(rng)
    if label == "duration":
        return said.sample_duration(rng)
    pools = {"memo": vocab.MEMOS, "title": vocab.TITLES, "location": vocab.LOCATIONS, "message": vocab.MESSAGES,
             "query": vocab.QUERIES, "category": vocab.CATEGORIES, "fact_city": vocab.FACT_CITIES,
             "fact_diet": vocab.DIETS}
    if label in pools:
        return Said(rng.choice(pools[label].of(split)), None)
    raise ValueError(f"no sampler for slot {slot.name!r}")


def _history_date(label: str, n: str, rng: random.Random, chosen: dict[str, Said]) -> Said:
    """A day of the transaction history (January and February 2027); until comes after since."""
    if label == "until" and "since" + n in chosen:
        first = date.fromisoformat(chosen["since" + n].value)
        if first >= date(2027, 2, 28):
            raise Resample("since is the last day")
        return said.sample_past_date(rng, date.fromordinal(first.toordinal() + 1), date(2027, 2, 28))
    return said.sample_past_date(rng, date(2027, 1, 1), date(2027, 2, 20))


def _item(slot: Slot, split: str, rng: random.Random, chosen: dict[str, Said]) -> Said:
    """A dish on the menu of the restaurant the order's search finds first, said as on the menu."""
    search = {role: chosen[role].text for role in ("cuisine", "dish", "near") if role in chosen}
    if not search.keys() & {"cuisine", "dish"}:
        raise ValueError(f"an order template needs a cuisine or dish slot before {slot.name!r}")
    menu = first_menu(tuple(sorted(search.items())))
    allowed = set(vocab.ITEMS.of(split))
    taken = {chosen[name].text.lower() for name in chosen if name.startswith("item")}
    dishes = [dish for dish in menu if dish.lower() in allowed and dish.lower() not in taken]
    if "dish" in search:  # "a pizza place": order one of the pizzas
        matching = [d for d in dishes if d in first_matching(tuple(sorted(search.items())))]
        dishes = matching or dishes
    if not dishes:
        raise Resample("nothing on that menu to order")
    dish = rng.choice(dishes)
    return Said(dish.lower() if rng.random() < 0.7 else dish, None)


@lru_cache(maxsize=None)
def _search(search: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    from agentd.agent.evaluation import call_in_pristine_world

    return call_in_pristine_world("search_restaurants", dict(search))


def first_menu(search: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """Menu dish names of the first restaurant ``search_restaurants(**search)`` returns (empty if none)."""
    found = _search(search)["restaurants"]
    return tuple(item["name"] for item in found[0]["menu"]) if found else ()


def first_matching(search: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    found = _search(search)["restaurants"]
    return tuple(found[0].get("matching_dishes", ())) if found else ()


def finish(values: dict[str, Said]) -> dict[str, Any]:
    """The plan values: a slot's normalised value, or its words where the words are the value."""
    return {name: s.text if s.value is None else s.value for name, s in values.items()}
