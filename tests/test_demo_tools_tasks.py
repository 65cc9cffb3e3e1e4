"""Agent tasks end to end at the tool level, and the pack as the registry sees it.

Each task is the sequence of calls a good plan makes, feeding one tool's
result into the next as a planner would; the check is the world's final
state by SQL, not the tools' own answers.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agentd import tools as registry

from test_demo_tools_fixtures import balance, call, context, count, db, home, template_world  # noqa: F401

FLAGS = {
    # name: (read_only, needs_approval, idempotent, credential_scopes, untrusted_output)
    "search_flights": (True, False, False, ("airline",), False),
    "book_flight": (False, True, True, ("airline",), False),
    "search_hotels": (True, False, False, ("hotel",), False),
    "book_hotel": (False, True, True, ("hotel",), False),
    "search_restaurants": (True, False, False, ("restaurant",), True),  # menus are the restaurants' text
    "order_food": (False, True, True, ("restaurant",), False),
    "get_balance": (True, False, False, ("bank",), False),
    "list_transactions": (True, False, False, ("bank",), False),
    "transfer_money": (False, True, True, ("bank",), False),
    "pay_bill": (False, True, True, ("bank",), False),
    "create_event": (False, False, True, (), False),
    "list_events": (True, False, False, (), False),
    "find_contact": (True, False, False, (), False),
    "send_message": (False, True, True, (), False),
    "web_search": (True, False, False, (), True),
}


def test_registry_lists_the_fifteen_tools_with_their_flags() -> None:
    registry.reset()
    demo = {spec.name: spec for spec in registry.tool_specs() if spec.plugin == "demo_tools"}
    assert set(demo) == set(FLAGS)
    for name, flags in FLAGS.items():
        spec = demo[name]
        assert (spec.read_only, spec.needs_approval, spec.idempotent, spec.credential_scopes, spec.untrusted_output) == flags, name
        assert registry.tool(name) is spec


def test_fly_me_to_denver_on_the_3rd_and_a_hotel_for_two_nights(home: Path, db: sqlite3.Connection) -> None:
    checking = balance(db)
    flights = call(home, "search_flights", {"destination": "Denver", "date": "2027-03-03"}, context(home, "trip", 1))["flights"]
    cheapest = min(flights, key=lambda f: (f["price"], f["depart"]))
    call(home, "book_flight", {"flight_id": cheapest["flight_id"]}, context(home, "trip", 2))
    hotels = call(home, "search_hotels", {"city": "Denver", "check_in": "2027-03-03", "nights": 2},
                  context(home, "trip", 3))["hotels"]
    call(home, "book_hotel", {"hotel_id": hotels[0]["hotel_id"], "check_in": "2027-03-03", "nights": 2}, context(home, "trip", 4))

    flight = db.execute(
        "SELECT f.destination, f.depart_date, f.origin, b.passengers, b.total_cents FROM flight_bookings b"
        " JOIN flights f ON f.id = b.flight_id").fetchall()
    assert [tuple(r) for r in flight] == [("denver", "2027-03-03", "san_francisco", 1, round(cheapest["price"] * 100))]
    stay = db.execute(
        "SELECT h.city_id, b.check_in, b.check_out, b.nights, b.total_cents, h.nightly_cents FROM hotel_bookings b"
        " JOIN hotels h ON h.id = b.hotel_id").fetchall()
    assert len(stay) == 1
    city, check_in, check_out, nights, total, nightly = stay[0]
    assert (city, check_in, check_out, nights, total) == ("denver", "2027-03-03", "2027-03-05", 2, 2 * nightly)
    assert balance(db) == checking - flight[0]["total_cents"] - total
    assert count(db, "transactions", "category = 'travel'") == 2


def test_send_maria_45_bucks(home: Path, db: sqlite3.Connection) -> None:
    checking = balance(db)
    maria = call(home, "find_contact", {"name": "Maria"}, context(home, "pay", 1))["contacts"][0]
    call(home, "transfer_money", {"to": maria["name"], "amount": 45, "memo": "concert tickets"}, context(home, "pay", 2))
    moved = db.execute("SELECT account_id, amount_cents FROM transactions WHERE counterparty = 'maria-lopez'").fetchall()
    assert [tuple(r) for r in moved] == [("checking", -4500)]
    assert balance(db) == checking - 4500


def test_pay_my_electricity_bill(home: Path, db: sqlite3.Connection) -> None:
    due = db.execute("SELECT amount_due_cents FROM bills WHERE id = 'electricity'").fetchone()[0]
    checking = balance(db)
    call(home, "pay_bill", {"payee": "my electricity bill"})
    assert tuple(db.execute("SELECT status, amount_due_cents FROM bills WHERE id = 'electricity'").fetchone()) == ("paid", 0)
    assert db.execute("SELECT SUM(amount_cents) FROM bill_payments WHERE bill_id = 'electricity'").fetchone()[0] == due
    assert balance(db) == checking - due
    assert count(db, "bills", "status = 'due'") == 3  # only that bill


def test_order_a_pizza_to_my_place(home: Path, db: sqlite3.Connection) -> None:
    found = call(home, "search_restaurants", {"dish": "pizza", "near": "home"}, context(home, "food", 1))["restaurants"]
    first = found[0]
    assert first["neighbourhood"] == "Mission"
    call(home, "order_food", {"restaurant_id": first["restaurant_id"], "items": [{"name": first["matching_dishes"][0]}]},
         context(home, "food", 2))
    order = db.execute("SELECT o.restaurant_id, i.name, i.quantity FROM orders o JOIN order_items i ON i.order_id = o.id").fetchall()
    assert [tuple(r) for r in order] == [(first["restaurant_id"], first["matching_dishes"][0], 1)]
    assert "Pizza" in order[0]["name"]


def test_trip_to_hawaii_round_trip_and_a_calendar_entry(home: Path, db: sqlite3.Connection) -> None:
    out = call(home, "search_flights", {"destination": "Hawaii", "date": "2027-03-20"})["flights"]
    back = call(home, "search_flights", {"origin": "HNL", "destination": "SF", "date": "2027-03-27"})["flights"]
    call(home, "book_flight", {"flight_id": out[0]["flight_id"], "passengers": 2}, context(home, "hawaii", 1))
    call(home, "book_flight", {"flight_id": back[-1]["flight_id"], "passengers": 2}, context(home, "hawaii", 2))
    call(home, "create_event", {"title": "Hawaii trip", "date": "2027-03-20"}, context(home, "hawaii", 3))
    legs = db.execute("SELECT f.origin, f.destination, b.passengers FROM flight_bookings b JOIN flights f ON f.id = b.flight_id"
                      " ORDER BY b.id").fetchall()
    assert [tuple(r) for r in legs] == [("san_francisco", "honolulu", 2), ("honolulu", "san_francisco", 2)]
    assert count(db, "events", "title = 'Hawaii trip' AND date = '2027-03-20' AND time IS NULL") == 1


def test_how_much_did_i_spend_on_dining_in_february(home: Path, db: sqlite3.Connection) -> None:
    result = call(home, "list_transactions", {"category": "food", "since": "2027-02-01", "until": "2027-02-28"})
    spent = db.execute("SELECT SUM(amount_cents) FROM transactions WHERE category = 'dining' AND posted_at LIKE '2027-02-%'").fetchone()[0]
    assert spent < 0 and round(result["total"] * 100) == spent


def test_planner_facts_come_from_the_world_clock(tmp_path) -> None:
    from agentd.agent.planner import planner_facts
    from agentd.plugins.demo_tools import World

    facts = planner_facts(tmp_path)
    assert facts["today"] == "2027-03-01 (Monday)" and facts["home_city"] == "San Francisco"
    with World(tmp_path / "demo_world" / "world.sqlite") as world:
        world.set_clock("2027-03-05")
    assert planner_facts(tmp_path)["today"] == "2027-03-05 (Friday)"
