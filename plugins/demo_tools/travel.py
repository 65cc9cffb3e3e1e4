"""Travel tools: search and book flights and hotels in the sandbox world.

Searches are read-only and forgiving (city names, codes, "NYC"); bookings
need approval, charge the paying account at once (so the money side of a
trip is checkable too) and are idempotent per plan step: a resumed run that
repeats ``book_flight`` gets the first booking back, not a second ticket.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from agentd.tools import ToolContext, ToolError, ToolSpec

from . import common as c
from .lookup import contains_words, resolve_account, resolve_city
from .world import World

FLIGHT = c.obj(
    {
        "flight_id": c.ID, "airline": {"type": "string"}, "flight_number": {"type": "string"},
        "origin": {"type": "string"}, "destination": {"type": "string"},
        "origin_airport": {"type": "string"}, "destination_airport": {"type": "string"},
        "depart": c.DATETIME, "arrive": c.DATETIME, "duration_minutes": {"type": "integer"},
        "price": c.described(c.MONEY, "Fare per passenger, US dollars"), "seats_left": {"type": "integer"},
        "nonstop": {"type": "boolean"},
    },
    ("flight_id", "airline", "flight_number", "origin", "destination", "origin_airport", "destination_airport",
     "depart", "arrive", "duration_minutes", "price", "seats_left", "nonstop"),
)

HOTEL = c.obj(
    {
        "hotel_id": c.ID, "name": {"type": "string"}, "city": {"type": "string"}, "neighbourhood": {"type": "string"},
        "landmarks": c.array({"type": "string"}), "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        "nightly_price": c.MONEY, "total_price": c.described(c.MONEY, "Nightly price times nights"),
        "check_in": c.DATE, "check_out": c.DATE,
    },
    ("hotel_id", "name", "city", "neighbourhood", "landmarks", "stars", "nightly_price", "total_price", "check_in", "check_out"),
)

NIGHTS = {"type": "integer", "minimum": 1, "maximum": 30, "description": "Number of nights"}
CONFIRMATION = {"type": "string", "pattern": "^[A-Z0-9]{6}$"}


def _flight(row: dict[str, Any], cities: dict[str, str]) -> dict[str, Any]:
    return {
        "flight_id": row["id"], "airline": row["airline"], "flight_number": row["flight_number"],
        "origin": cities[row["origin"]], "destination": cities[row["destination"]],
        "origin_airport": row["origin_airport"], "destination_airport": row["destination_airport"],
        "depart": f"{row['depart_date']}T{row['depart_time']}", "arrive": f"{row['arrive_date']}T{row['arrive_time']}",
        "duration_minutes": row["duration_minutes"], "price": c.dollars(row["price_cents"]),
        "seats_left": row["seats_left"], "nonstop": True,
    }


def _city_names(world: World) -> dict[str, str]:
    return {row["id"]: row["name"] for row in world.rows("SELECT id, name FROM cities")}


def _confirmation(booking_id: str, subject: str) -> str:
    """A six-character code like airlines print, derived from the booking so it is reproducible."""
    digest = hashlib.sha256(f"{booking_id}:{subject}".encode()).hexdigest().upper()
    return "".join(ch for ch in digest if ch not in "01")[:6]


def search_flights(world: World, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Nonstop flights on one day, earliest first; sold-out and already-departed ones left out."""
    origin = resolve_city(world, args.get("origin") or world.meta("home_city"))
    destination = resolve_city(world, args["destination"])
    if origin["id"] == destination["id"]:
        raise ToolError(f"origin and destination are both {origin['name']}")
    day = c.future_date(world, args["date"], "date")
    passengers = args.get("passengers", 1)
    served = world.rows(
        "SELECT DISTINCT c.name FROM flights f JOIN cities c ON c.id = f.destination WHERE f.origin = ? ORDER BY c.name",
        origin["id"],
    )
    if not world.scalar("SELECT 1 FROM flights WHERE origin = ? AND destination = ? LIMIT 1", origin["id"], destination["id"]):
        raise ToolError(
            f"no nonstop flights from {origin['name']} to {destination['name']}; "
            f"from {origin['name']} you can fly to: {', '.join(r['name'] for r in served)}"
        )
    now = world.now()
    rows = world.rows(
        "SELECT * FROM flights WHERE origin = ? AND destination = ? AND depart_date = ? ORDER BY depart_time, id",
        origin["id"], destination["id"], day.isoformat(),
    )
    rows = [r for r in rows if datetime.fromisoformat(f"{r['depart_date']}T{r['depart_time']}") > now]
    available = [r for r in rows if r["seats_left"] >= passengers]
    cities = _city_names(world)
    flights = [_flight(r, cities) for r in available]
    note = None
    if "max_price" in args:
        cheaper = [f for f in flights if f["price"] <= args["max_price"]]
        if flights and not cheaper:
            note = f"no flight at or under ${args['max_price']:,.2f}; the cheapest that day is ${min(f['price'] for f in flights):,.2f}"
        flights = cheaper
    if not rows:
        note = f"no more flights from {origin['name']} to {destination['name']} on {day}; try the next day"
    elif not available:
        note = f"every flight on {day} has fewer than {passengers} seats left"
    result: dict[str, Any] = {
        "origin": origin["name"], "destination": destination["name"], "date": day.isoformat(), "flights": flights,
    }
    if note:
        result["note"] = note
    return result


def book_flight(world: World, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Book seats on one flight and charge the fare to the paying account, once per plan step."""

    def apply() -> dict[str, Any]:
        flight = world.row("SELECT * FROM flights WHERE id = ?", args["flight_id"])
        if flight is None:
            raise ToolError(f"unknown flight_id {args['flight_id']!r}; use a flight_id returned by search_flights")
        passengers = args.get("passengers", 1)
        depart = datetime.fromisoformat(f"{flight['depart_date']}T{flight['depart_time']}")
        if depart <= world.now():
            raise ToolError(f"flight {flight['flight_number']} on {flight['depart_date']} has already departed")
        if flight["seats_left"] < passengers:
            raise ToolError(
                f"flight {flight['flight_number']} on {flight['depart_date']} has {flight['seats_left']} seats left, "
                f"{passengers} requested; pick another flight"
            )
        account = resolve_account(args.get("pay_from"))
        total = flight["price_cents"] * passengers
        booking_id = world.next_id("flight_bookings", "FB")
        transaction = world.post(
            account, -total,
            f"{flight['airline']} {flight['flight_number']} {flight['origin_airport']}-{flight['destination_airport']} "
            f"{flight['depart_date']} x{passengers}",
            "travel", flight["airline"],
        )
        confirmation = _confirmation(booking_id, flight["id"])
        world.db.execute("UPDATE flights SET seats_left = seats_left - ? WHERE id = ?", (passengers, flight["id"]))
        world.db.execute(
            "INSERT INTO flight_bookings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (booking_id, flight["id"], passengers, total, account, transaction, confirmation, world.meta("now")),
        )
        flight["seats_left"] -= passengers
        return {
            "booking_id": booking_id, "confirmation": confirmation, "flight": _flight(flight, _city_names(world)),
            "passengers": passengers, "total_price": c.dollars(total), "paid_from": account,
            "balance_after": c.dollars(world.scalar("SELECT balance_cents FROM accounts WHERE id = ?", account)),
        }

    return world.once("book_flight", context.idempotency_key, args, apply)


def _hotel(row: dict[str, Any], city: str, check_in: Any, nights: int) -> dict[str, Any]:
    return {
        "hotel_id": row["id"], "name": row["name"], "city": city, "neighbourhood": row["neighbourhood"],
        "landmarks": json.loads(row["landmarks"]), "stars": row["stars"],
        "nightly_price": c.dollars(row["nightly_cents"]), "total_price": c.dollars(row["nightly_cents"] * nights),
        "check_in": check_in.isoformat(), "check_out": c.plus_days(check_in, nights).isoformat(),
    }


def search_hotels(world: World, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Hotels in a city for a stay, cheapest first, optionally near a neighbourhood or landmark."""
    city = resolve_city(world, args["city"])
    check_in = c.future_date(world, args["check_in"], "check_in")
    nights = args["nights"]
    rows = world.rows("SELECT * FROM hotels WHERE city_id = ? ORDER BY nightly_cents, id", city["id"])
    note = None
    near = args.get("near")
    if near:
        close = [r for r in rows if contains_words(near, f"{r['neighbourhood']} {' '.join(json.loads(r['landmarks']))} {r['name']}")]
        if not close:
            areas = ", ".join(sorted({r["neighbourhood"] for r in rows}))
            note = f"no hotel near {near!r} in {city['name']}; neighbourhoods with hotels: {areas}"
        rows = close
    if "max_price" in args:
        cheaper = [r for r in rows if r["nightly_cents"] <= round(args["max_price"] * 100)]
        if rows and not cheaper:
            note = f"no hotel at or under ${args['max_price']:,.2f} a night; the cheapest is ${rows[0]['nightly_cents'] / 100:,.2f}"
        rows = cheaper
    result: dict[str, Any] = {
        "city": city["name"], "check_in": check_in.isoformat(), "nights": nights,
        "hotels": [_hotel(r, city["name"], check_in, nights) for r in rows],
    }
    if note:
        result["note"] = note
    return result


def book_hotel(world: World, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Book a stay and charge it to the paying account, once per plan step."""

    def apply() -> dict[str, Any]:
        hotel = world.row("SELECT h.*, c.name AS city FROM hotels h JOIN cities c ON c.id = h.city_id WHERE h.id = ?", args["hotel_id"])
        if hotel is None:
            raise ToolError(f"unknown hotel_id {args['hotel_id']!r}; use a hotel_id returned by search_hotels")
        check_in = c.future_date(world, args["check_in"], "check_in")
        nights = args["nights"]
        account = resolve_account(args.get("pay_from"))
        total = hotel["nightly_cents"] * nights
        booking_id = world.next_id("hotel_bookings", "HB")
        check_out = c.plus_days(check_in, nights)
        transaction = world.post(account, -total, f"{hotel['name']} {check_in} ({nights} nights)", "travel", hotel["name"])
        confirmation = _confirmation(booking_id, hotel["id"])
        world.db.execute(
            "INSERT INTO hotel_bookings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (booking_id, hotel["id"], check_in.isoformat(), check_out.isoformat(), nights, total, account, transaction,
             confirmation, world.meta("now")),
        )
        return {
            "booking_id": booking_id, "confirmation": confirmation,
            "hotel": _hotel(hotel, hotel["city"], check_in, nights), "check_in": check_in.isoformat(),
            "check_out": check_out.isoformat(), "nights": nights, "total_price": c.dollars(total), "paid_from": account,
            "balance_after": c.dollars(world.scalar("SELECT balance_cents FROM accounts WHERE id = ?", account)),
        }

    return world.once("book_hotel", context.idempotency_key, args, apply)


BOOKING = ("booking_id", "confirmation", "total_price", "paid_from", "balance_after")


def tools() -> list[ToolSpec]:
    return [
        c.make_tool(
            search_flights, name="search_flights", read_only=True, credential_scopes=("airline",),
            description="Find nonstop flights for one day between two cities (names, airport codes or 'NYC' work), "
            "earliest first, with fare per passenger and seats left. Origin defaults to the user's home, San Francisco.",
            parameters=c.obj({
                "origin": c.described(c.TEXT, "Departure city or airport; default: the user's home city (San Francisco)"),
                "destination": c.described(c.TEXT, "Arrival city or airport code, e.g. 'Denver' or 'DEN'"),
                "date": c.described(c.DATE, "Departure date, YYYY-MM-DD"),
                "max_price": c.described(c.AMOUNT, "Only fares at or under this, US dollars per passenger"),
                "passengers": {"type": "integer", "minimum": 1, "maximum": 9, "default": 1, "description": "Seats needed"},
            }, ("destination", "date")),
            result=c.obj({
                "origin": {"type": "string"}, "destination": {"type": "string"}, "date": c.DATE,
                "flights": c.array(FLIGHT), "note": {"type": "string"},
            }, ("origin", "destination", "date", "flights")),
        ),
        c.make_tool(
            book_flight, name="book_flight", needs_approval=True, idempotent=True, credential_scopes=("airline",),
            description="Book seats on a flight found by search_flights and pay the fare (times passengers) from the "
            "user's account. Spends money.",
            parameters=c.obj({
                "flight_id": c.described(c.ID, "A flight_id from search_flights, e.g. 'UA162-20270303'"),
                "passengers": {"type": "integer", "minimum": 1, "maximum": 9, "default": 1, "description": "Number of travellers"},
                "pay_from": c.described(c.ACCOUNT, "Account to charge; default checking"),
            }, ("flight_id",)),
            result=c.obj({
                "booking_id": c.ID, "confirmation": CONFIRMATION, "flight": FLIGHT,
                "passengers": {"type": "integer"}, "total_price": c.MONEY, "paid_from": c.ACCOUNT, "balance_after": c.MONEY,
            }, ("flight", "passengers", *BOOKING)),
        ),
        c.make_tool(
            search_hotels, name="search_hotels", read_only=True, credential_scopes=("hotel",),
            description="Find hotels in a city for a stay of some nights, cheapest first, optionally near a "
            "neighbourhood or landmark ('downtown', 'the airport', 'Union Station') and under a nightly price.",
            parameters=c.obj({
                "city": c.described(c.TEXT, "City, e.g. 'Denver'"),
                "check_in": c.described(c.DATE, "Arrival date, YYYY-MM-DD"),
                "nights": NIGHTS,
                "near": c.described(c.TEXT, "Neighbourhood or landmark to be close to"),
                "max_price": c.described(c.AMOUNT, "Highest nightly price, US dollars"),
            }, ("city", "check_in", "nights")),
            result=c.obj({
                "city": {"type": "string"}, "check_in": c.DATE, "nights": {"type": "integer"},
                "hotels": c.array(HOTEL), "note": {"type": "string"},
            }, ("city", "check_in", "nights", "hotels")),
        ),
        c.make_tool(
            book_hotel, name="book_hotel", needs_approval=True, idempotent=True, credential_scopes=("hotel",),
            description="Book a hotel found by search_hotels from check_in for some nights and pay the total from "
            "the user's account. Spends money.",
            parameters=c.obj({
                "hotel_id": c.described(c.ID, "A hotel_id from search_hotels"),
                "check_in": c.described(c.DATE, "Arrival date, YYYY-MM-DD"),
                "nights": NIGHTS,
                "pay_from": c.described(c.ACCOUNT, "Account to charge; default checking"),
            }, ("hotel_id", "check_in", "nights")),
            result=c.obj({
                "booking_id": c.ID, "confirmation": CONFIRMATION, "hotel": HOTEL, "check_in": c.DATE,
                "check_out": c.DATE, "nights": {"type": "integer"}, "total_price": c.MONEY, "paid_from": c.ACCOUNT,
                "balance_after": c.MONEY,
            }, ("hotel", "check_in", "check_out", "nights", *BOOKING)),
        ),
    ]
