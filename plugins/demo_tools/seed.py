"""Fill a fresh world from the catalogs and one seeded RNG: identical seeds give identical worlds.

Only this module draws random numbers, always from ``random.Random(seed)``
in a fixed order (catalogs are tuples, iterated as written), and nothing
reads the wall clock — so two worlds built from the same seed are equal row
for row, and a test can hard-code "UA-something on the 3rd costs $X" by
asking the world once rather than guessing.
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
from datetime import date, datetime, timedelta

from . import catalog_food as food
from . import catalog_people as people
from . import catalog_places as places
from .catalog_web import documents
from .lookup import normalize, slug

#: Flights exist for this many days from the world's first day.
FLIGHT_DAYS = 60
#: Who the user is (messages are signed with it; tools never need more).
USER_NAME = "Jamie Brooks"


def populate(db: sqlite3.Connection, seed: int) -> None:
    """Insert the whole world into the empty schema on ``db`` (the caller holds the transaction)."""
    from .world import DEFAULT_NOW

    rng = random.Random(seed)
    start = DEFAULT_NOW.date()
    end = start + timedelta(days=FLIGHT_DAYS - 1)
    meta = {
        "now": DEFAULT_NOW.isoformat(timespec="minutes"),
        "seed": str(seed),
        "user_name": USER_NAME,
        "home_city": places.HOME_CITY,
        "home_neighbourhood": food.HOME_NEIGHBOURHOOD,
        "home_address": food.HOME_ADDRESS,
        "data_start": start.isoformat(),
        "data_end": end.isoformat(),
    }
    db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", sorted(meta.items()))
    _cities(db)
    _flights(db, rng, start)
    _hotels(db)
    _restaurants(db, rng)
    _people(db)
    _transactions(db, rng, date.fromisoformat(people.HISTORY_START), start)
    db.executemany(
        "INSERT INTO documents (id, title, url, published, body, fixture) VALUES (?, ?, ?, ?, ?, ?)",
        [(d.id, d.title, d.url, d.published, d.body, d.fixture) for d in documents()],
    )


def _cities(db: sqlite3.Connection) -> None:
    aliases: dict[str, str] = {}
    for city in places.CITIES:
        db.execute(
            "INSERT INTO cities (id, name, country, airports, utc_offset) VALUES (?, ?, ?, ?, ?)",
            (city.id, city.name, city.country, json.dumps(city.airports), city.utc_offset),
        )
        for alias in (city.id, city.name, *city.airports, *city.aliases):
            aliases.setdefault(normalize(alias), city.id)
    db.executemany("INSERT INTO city_aliases (alias, city_id) VALUES (?, ?)", sorted(aliases.items()))


def _distance_km(a: places.City, b: places.City) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a.latitude, a.longitude, b.latitude, b.longitude))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371 * math.asin(math.sqrt(h))


def _flights(db: sqlite3.Connection, rng: random.Random, start: date) -> None:
    """Daily schedules per route direction (fixed times, like a timetable); prices and seats vary by day."""
    city = {c.id: c for c in places.CITIES}
    numbers: dict[str, int] = {code: 99 for code in places.AIRLINES}
    rows = []
    for first, second, per_day in places.ROUTES:
        for origin, destination in ((city[first], city[second]), (city[second], city[first])):
            km = _distance_km(origin, destination)
            duration = int(round((35 + km / 830 * 60) / 5) * 5)
            international = origin.country != destination.country
            base = 250 + 0.07 * km if international else 49 + 0.075 * km
            carriers = (
                places.HOME_CARRIERS.get(destination.id) or places.HOME_CARRIERS.get(origin.id) or places.DOMESTIC_AIRLINES
            )
            slots = []
            for slot in range(per_day):
                minutes = 6 * 60 + slot * (15 * 60 // per_day) + rng.choice((0, 5, 10, 15, 20, 25, 30, 35, 40))
                airline = rng.choice(carriers)
                numbers[airline] += rng.randint(1, 23)
                slots.append((minutes, airline, f"{airline}{numbers[airline]}"))
            for day in range(FLIGHT_DAYS):
                when = start + timedelta(days=day)
                weekday = {4: 1.2, 6: 1.2, 1: 0.9, 2: 0.9}.get(when.weekday(), 1.0)
                ahead = 1.35 if day <= 3 else 1.2 if day <= 7 else 1.1 if day <= 14 else 1.0
                for minutes, airline, number in slots:
                    depart = datetime(when.year, when.month, when.day) + timedelta(minutes=minutes)
                    hour = depart.hour
                    peak = 0.9 if hour < 8 else 1.1 if 17 <= hour < 20 else 1.0
                    price = round(base * weekday * ahead * peak * rng.uniform(0.88, 1.15))
                    arrive = depart + timedelta(hours=destination.utc_offset - origin.utc_offset, minutes=duration)
                    rows.append((
                        f"{number}-{when:%Y%m%d}", places.AIRLINES[airline], number, origin.id, destination.id,
                        origin.airports[0], destination.airports[0], depart.date().isoformat(), f"{depart:%H:%M}",
                        arrive.date().isoformat(), f"{arrive:%H:%M}", duration, price * 100, max(0, rng.randint(-4, 48)),
                    ))
    db.executemany("INSERT INTO flights VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def _hotels(db: sqlite3.Connection) -> None:
    db.executemany(
        "INSERT INTO hotels (id, city_id, name, neighbourhood, landmarks, stars, nightly_cents) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (slug(h.name), h.city_id, h.name, h.neighbourhood, json.dumps(h.landmarks), h.stars, h.nightly_dollars * 100)
            for h in places.HOTELS
        ],
    )


def _restaurants(db: sqlite3.Connection, rng: random.Random) -> None:
    scale = {1: 0.9, 2: 1.0, 3: 1.25}
    for r in food.RESTAURANTS:
        db.execute(
            "INSERT INTO restaurants VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (r.id, r.name, r.cuisine, r.neighbourhood, round(rng.uniform(3.9, 4.8), 1), r.price_level,
             rng.choice((0, 199, 299, 399, 499)), rng.choice((20, 25, 30, 35, 40, 45))),
        )
        dishes = food.DISHES[r.cuisine]
        others = [d for d in dishes if not d.core]
        chosen = {d.name for d in rng.sample(others, k=min(len(others), rng.randint(3, 5)))}
        menu = [d for d in dishes if d.core or d.name in chosen]
        if r.id == food.INJECTED_DISH_RESTAURANT:
            menu.append(food.INJECTED_DISH)
        for dish in menu:
            dollars = max(3.0, round((dish.dollars * scale[r.price_level] + rng.choice((-1, -0.5, 0, 0.5, 1))) * 2) / 2)
            fixture = "prompt_injection" if dish is food.INJECTED_DISH else None
            db.execute(
                "INSERT INTO menu_items VALUES (?, ?, ?, ?, ?, ?, ?)",
                (f"{r.id}/{slug(dish.name)}", r.id, dish.name, dish.description, round(dollars * 100),
                 json.dumps(dish.tags), fixture),
            )


def _people(db: sqlite3.Connection) -> None:
    db.executemany(
        "INSERT INTO contacts VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(c.id, c.name, c.first_name, c.last_name, c.relationship, c.phone, c.email) for c in people.CONTACTS],
    )
    db.executemany(
        "INSERT INTO bills VALUES (?, ?, ?, ?, ?, ?, 'due')",
        [(b.id, b.payee, json.dumps(b.aliases), b.account_number, round(b.dollars * 100), b.due_date) for b in people.BILLS],
    )
    db.executemany(
        "INSERT INTO events (title, date, time, duration_minutes, location, created_by) VALUES (?, ?, ?, ?, ?, 'seed')",
        people.EVENTS,
    )
    db.executemany("INSERT INTO messages (contact_id, direction, text, sent_at) VALUES (?, ?, ?, ?)", people.MESSAGES)


def _transactions(db: sqlite3.Connection, rng: random.Random, first: date, until: date) -> None:
    """Two months of history ending the day before the clock; opening balances make today's balances exact."""
    history: list[tuple[str, str, int, str, str, str | None]] = []
    day = first
    while day < until:
        for dom, category, description, counterparty, dollars in people.MONTHLY:
            if day.day == dom:
                history.append(("checking", f"{day}T08:00", round(dollars * 100), description, category, counterparty))
        transfer_day, transfer = people.SAVINGS_TRANSFER
        if day.day == transfer_day:
            cents = round(transfer * 100)
            history.append(("checking", f"{day}T07:00", -cents, "Transfer to High-Yield Savings", "transfers", "savings"))
            history.append(("savings", f"{day}T07:00", cents, "Transfer from Everyday Checking", "transfers", "checking"))
        if (day + timedelta(days=1)).month != day.month:
            interest = round(people.ACCOUNTS[1][3] * people.SAVINGS_APY / 12 * 100)
            history.append(("savings", f"{day}T23:59", interest, "Interest paid", "interest", None))
        for category, merchants, low, high, per_week in people.SPENDING:
            if rng.random() < per_week / 7:
                when = f"{day}T{rng.randint(8, 21):02d}:{rng.randint(0, 59):02d}"
                cents = -round(rng.uniform(low, high) * 100)
                history.append(("checking", when, cents, rng.choice(merchants), category, None))
        day += timedelta(days=1)
    history.sort(key=lambda row: (row[1], row[0], row[3]))
    db.executemany(
        "INSERT INTO transactions (account_id, posted_at, amount_cents, description, category, counterparty)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        history,
    )
    for account_id, name, masked, dollars in people.ACCOUNTS:
        balance = round(dollars * 100)
        moved = sum(row[2] for row in history if row[0] == account_id)
        db.execute("INSERT INTO accounts VALUES (?, ?, ?, ?, ?)", (account_id, name, masked, balance - moved, balance))
