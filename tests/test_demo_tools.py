"""Each demo tool: a realistic call whose effect is checked in the world by SQL; schemas; errors.

Every call goes through :func:`call`, which validates the arguments as the
executor does and the result against the tool's declared result schema.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agentd import tools as registry
from agentd.errors import InvalidArgument
from agentd.plugins.demo_tools import World
from agentd.tools import ToolError, validate_arguments

from test_demo_tools_fixtures import (  # noqa: F401
    balance, call, context, count, db, dump_digest, home, template_world, world_file,
)

DEMO = ["search_flights", "book_flight", "search_hotels", "book_hotel", "search_restaurants", "order_food",
        "get_balance", "list_transactions", "transfer_money", "pay_bill", "create_event", "list_events",
        "find_contact", "send_message", "web_search"]


# -- schemas -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DEMO)
def test_schemas_are_valid_and_described(name: str) -> None:
    spec = registry.tool(name)
    jsonschema.Draft202012Validator.check_schema(spec.parameters)
    jsonschema.Draft202012Validator.check_schema(spec.result)
    assert spec.result["type"] == "object" and spec.result.get("required")
    assert set(spec.required) <= set(spec.parameters["properties"])
    assert len(spec.description) > 40
    for field, schema in spec.parameters["properties"].items():
        assert schema.get("description") or schema.get("type") == "array" or field in {"amount"}, (name, field)


VALID = [
    ("search_flights", {"destination": "Denver", "date": "2027-03-03", "max_price": 300}),
    ("book_flight", {"flight_id": "UA162-20270303", "passengers": 2}),
    ("search_hotels", {"city": "Denver", "check_in": "2027-03-03", "nights": 2, "near": "downtown"}),
    ("book_hotel", {"hotel_id": "the-lodo-denver", "check_in": "2027-03-03", "nights": 2}),
    ("search_restaurants", {"cuisine": "thai", "near": "home"}),
    ("order_food", {"restaurant_id": "thai-basil-house", "items": [{"name": "Pad Thai", "quantity": 2}]}),
    ("get_balance", {"account": "savings"}),
    ("list_transactions", {"category": "dining", "since": "2027-02-01", "until": "2027-02-28"}),
    ("transfer_money", {"to": "Maria", "amount": 45.5, "memo": "concert tickets"}),
    ("pay_bill", {"payee": "electricity", "amount": 20, "from_account": "savings"}),
    ("create_event", {"title": "Dinner", "date": "2027-03-04", "time": "19:00", "duration_minutes": 90}),
    ("list_events", {"date": "2027-03-04"}),
    ("find_contact", {"name": "Sam"}),
    ("send_message", {"to": "Linda", "text": "See you on the 10th!"}),
    ("web_search", {"query": "weather in Denver"}),
]

INVALID = [
    ("search_flights", {"date": "2027-03-03"}),  # destination missing
    ("search_flights", {"destination": "Denver", "date": "03/03/2027"}),
    ("search_flights", {"destination": "Denver", "date": "2027-13-03"}),
    ("search_flights", {"destination": "Denver", "date": "2027-03-03", "max_price": -5}),
    ("book_flight", {"flight_id": "UA162-20270303", "passengers": 0}),
    ("book_flight", {"passengers": 1}),
    ("search_hotels", {"city": "Denver", "check_in": "2027-03-03", "nights": 0}),
    ("search_hotels", {"city": "Denver", "check_in": "2027-03-03"}),
    ("book_hotel", {"hotel_id": "the-lodo-denver", "check_in": "2027-03-03", "nights": "two"}),
    ("search_restaurants", {"cuisine": "thai", "stars": 5}),  # unknown argument
    ("order_food", {"restaurant_id": "thai-basil-house", "items": []}),
    ("order_food", {"restaurant_id": "thai-basil-house", "items": [{"name": "Pad Thai", "quantity": 0}]}),
    ("order_food", {"restaurant_id": "thai-basil-house", "items": [{"quantity": 1}]}),
    ("get_balance", {"account": "brokerage"}),
    ("list_transactions", {"since": "last week"}),
    ("transfer_money", {"to": "Maria", "amount": "45"}),
    ("transfer_money", {"to": "Maria", "amount": -45}),
    ("transfer_money", {"to": "Maria", "amount": 0}),
    ("transfer_money", {"amount": 45}),
    ("transfer_money", {"to": "Maria", "amount": 45, "from_account": "credit"}),
    ("pay_bill", {"amount": 10}),
    ("create_event", {"title": "Dinner", "date": "2027-03-04", "time": "25:00"}),
    ("create_event", {"date": "2027-03-04"}),
    ("list_events", {"date": "tomorrow"}),
    ("find_contact", {"name": ""}),
    ("send_message", {"to": "Linda"}),
    ("web_search", {}),
]


@pytest.mark.parametrize("name, arguments", VALID, ids=[v[0] for v in VALID])
def test_valid_arguments_pass(name: str, arguments: dict[str, Any]) -> None:
    assert validate_arguments(registry.tool(name), arguments) == arguments


@pytest.mark.parametrize("name, arguments", INVALID, ids=[f"{v[0]}-{i}" for i, v in enumerate(INVALID)])
def test_bad_arguments_are_rejected(name: str, arguments: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument, match=name):
        validate_arguments(registry.tool(name), arguments)


@pytest.mark.parametrize("name, arguments", VALID, ids=[v[0] for v in VALID])
def test_every_tool_answers_a_realistic_call_within_its_result_schema(home: Path, name: str, arguments: dict[str, Any]) -> None:
    call(home, name, arguments)


# -- read-only tools -----------------------------------------------------------------------------


def test_read_only_tools_change_nothing(home: Path) -> None:
    before = dump_digest(world_file(home))
    for name, arguments in VALID:
        if registry.tool(name).read_only:
            call(home, name, arguments)
    assert dump_digest(world_file(home)) == before


def test_search_flights_lists_the_days_flights_from_home(home: Path, db: sqlite3.Connection) -> None:
    result = call(home, "search_flights", {"destination": "den", "date": "2027-03-03"})
    expected = [r[0] for r in db.execute(
        "SELECT id FROM flights WHERE origin='san_francisco' AND destination='denver' AND depart_date='2027-03-03'"
        " AND seats_left > 0 ORDER BY depart_time")]
    assert [f["flight_id"] for f in result["flights"]] == expected and len(expected) >= 4
    assert result["origin"] == "San Francisco" and all(f["origin_airport"] == "SFO" for f in result["flights"])
    assert result == call(home, "search_flights", {"origin": "SFO", "destination": "Denver", "date": "2027-03-03"})
    cap = sorted(f["price"] for f in result["flights"])[1]
    cheap = call(home, "search_flights", {"destination": "Denver", "date": "2027-03-03", "max_price": cap})
    assert 1 <= len(cheap["flights"]) < len(result["flights"]) and all(f["price"] <= cap for f in cheap["flights"])
    nyc = call(home, "search_flights", {"origin": "NYC", "destination": "London", "date": "2027-03-20"})
    assert nyc["flights"] and {f["origin_airport"] for f in nyc["flights"]} == {"JFK"}


def test_search_flights_today_leaves_out_departed_flights(home: Path) -> None:
    flights = call(home, "search_flights", {"destination": "Los Angeles", "date": "2027-03-01"})["flights"]
    assert flights and all(f["depart"] > "2027-03-01T09:00" for f in flights)


def test_search_hotels_near_and_price(home: Path) -> None:
    everything = call(home, "search_hotels", {"city": "denver", "check_in": "2027-03-03", "nights": 2})["hotels"]
    assert len(everything) == 5 and [h["nightly_price"] for h in everything] == sorted(h["nightly_price"] for h in everything)
    assert all(h["total_price"] == h["nightly_price"] * 2 and h["check_out"] == "2027-03-05" for h in everything)
    airport = call(home, "search_hotels", {"city": "Denver", "check_in": "2027-03-03", "nights": 2, "near": "the airport"})
    assert [h["name"] for h in airport["hotels"]] == ["Denver Airport Marriott"]
    cheap = call(home, "search_hotels", {"city": "Denver", "check_in": "2027-03-03", "nights": 1, "max_price": 150})
    assert cheap["hotels"] and all(h["nightly_price"] <= 150 for h in cheap["hotels"])


def test_search_restaurants_by_cuisine_dish_and_place(home: Path) -> None:
    thai = call(home, "search_restaurants", {"cuisine": "THAI"})["restaurants"]
    assert len(thai) >= 3 and {r["cuisine"] for r in thai} == {"Thai"}
    curries = call(home, "search_restaurants", {"dish": "curries", "limit": 40})["restaurants"]
    assert {"Indian", "Thai"} <= {r["cuisine"] for r in curries}
    assert all(r["matching_dishes"] for r in curries)
    near = call(home, "search_restaurants", {"cuisine": "mexican", "near": "home"})["restaurants"]
    assert near[0]["neighbourhood"] == "Mission" and "Marina Taco Co." not in [r["name"] for r in near]
    bbq = call(home, "search_restaurants", {"cuisine": "bbq"})["restaurants"]
    assert bbq and {r["cuisine"] for r in bbq} == {"Barbecue"}
    assert call(home, "search_restaurants", {"dish": "beef wellington"})["restaurants"] == []


def test_get_balance_and_list_transactions_match_the_ledger(home: Path, db: sqlite3.Connection) -> None:
    result = call(home, "get_balance", {"account": "all"})
    assert {a["account"]: round(a["balance"] * 100) for a in result["accounts"]} == dict(
        db.execute("SELECT id, balance_cents FROM accounts"))
    assert call(home, "get_balance", {"account": "savings"})["accounts"][0]["balance"] == balance(db, "savings") / 100
    dining = call(home, "list_transactions", {"category": "Dining", "since": "2027-02-01", "until": "2027-02-28", "limit": 500})
    expected = db.execute(
        "SELECT COUNT(*), SUM(amount_cents) FROM transactions WHERE category='dining' AND posted_at >= '2027-02-01'"
        " AND posted_at < '2027-03-01'").fetchone()
    assert dining["count"] == expected[0] > 0 and round(dining["total"] * 100) == expected[1]
    assert all("2027-02-01" <= t["posted_at"] < "2027-03-01" for t in dining["transactions"])
    assert call(home, "list_transactions", {"category": "restaurants"})["count"] == count(db, "transactions", "category='dining'")


def test_transfer_money_to_a_contact_and_between_accounts(home: Path, db: sqlite3.Connection) -> None:
    checking, savings = balance(db), balance(db, "savings")
    result = call(home, "transfer_money", {"to": "maria lopez", "amount": 45, "memo": "concert tickets"})
    assert result["to"]["contact_id"] == "maria-lopez"
    row = db.execute("SELECT * FROM transactions ORDER BY id DESC LIMIT 1").fetchone()
    assert (row["account_id"], row["amount_cents"], row["counterparty"]) == ("checking", -4500, "maria-lopez")
    assert "concert tickets" in row["description"] and balance(db) == checking - 4500
    call(home, "transfer_money", {"to": "savings", "amount": 200}, context(home, step=2))
    assert balance(db) == checking - 24500 and balance(db, "savings") == savings + 20000


def test_pay_bill_full_and_partial(home: Path, db: sqlite3.Connection) -> None:
    checking = balance(db)
    result = call(home, "pay_bill", {"payee": "PG&E"})
    assert result["bill"] == "electricity" and result["amount"] == 84.27 and result["status"] == "paid"
    assert tuple(db.execute("SELECT status, amount_due_cents FROM bills WHERE id='electricity'").fetchone()) == ("paid", 0)
    assert count(db, "bill_payments", "bill_id='electricity' AND amount_cents=8427") == 1
    assert balance(db) == checking - 8427
    call(home, "pay_bill", {"payee": "internet bill", "amount": 20, "from_account": "savings"}, context(home, step=2))
    assert tuple(db.execute("SELECT status, amount_due_cents FROM bills WHERE id='internet'").fetchone()) == ("due", 4000)
    assert balance(db) == checking - 8427


def test_book_flight_books_charges_and_takes_seats(home: Path, db: sqlite3.Connection) -> None:
    flight = dict(db.execute("SELECT * FROM flights WHERE id='UA162-20270303'").fetchone())
    checking = balance(db)
    result = call(home, "book_flight", {"flight_id": flight["id"], "passengers": 2})
    booking = db.execute("SELECT * FROM flight_bookings").fetchall()
    assert len(booking) == 1 and (booking[0]["flight_id"], booking[0]["passengers"]) == (flight["id"], 2)
    assert booking[0]["confirmation"] == result["confirmation"]
    assert balance(db) == checking - 2 * flight["price_cents"] == round(result["balance_after"] * 100)
    assert db.execute("SELECT seats_left FROM flights WHERE id=?", (flight["id"],)).fetchone()[0] == flight["seats_left"] - 2
    assert db.execute("SELECT category FROM transactions ORDER BY id DESC LIMIT 1").fetchone()[0] == "travel"


def test_book_hotel_books_the_stay(home: Path, db: sqlite3.Connection) -> None:
    checking = balance(db)
    call(home, "book_hotel", {"hotel_id": "the-lodo-denver", "check_in": "2027-03-03", "nights": 2})
    row = db.execute("SELECT * FROM hotel_bookings").fetchone()
    assert (row["hotel_id"], row["check_in"], row["check_out"], row["nights"]) == ("the-lodo-denver", "2027-03-03", "2027-03-05", 2)
    assert row["total_cents"] == 2 * 22900 and balance(db) == checking - 45800


def test_order_food_records_the_order_and_pays(home: Path, db: sqlite3.Connection) -> None:
    checking = balance(db)
    result = call(home, "order_food", {"restaurant_id": "tonys-pizza-napoletana", "items": [
        {"name": "margherita pizzas", "quantity": 2}, {"name": "Pepperoni Pizza"}]})
    prices = dict(db.execute("SELECT name, price_cents FROM menu_items WHERE restaurant_id='tonys-pizza-napoletana'"))
    fee = db.execute("SELECT delivery_fee_cents FROM restaurants WHERE id='tonys-pizza-napoletana'").fetchone()[0]
    total = 2 * prices["Margherita Pizza"] + prices["Pepperoni Pizza"] + fee
    order = db.execute("SELECT * FROM orders").fetchone()
    assert order["total_cents"] == total == round(result["total"] * 100) and balance(db) == checking - total
    items = {r["name"]: r["quantity"] for r in db.execute("SELECT * FROM order_items WHERE order_id=?", (order["id"],))}
    assert items == {"Margherita Pizza": 2, "Pepperoni Pizza": 1}


def test_calendar_contacts_and_messages(home: Path, db: sqlite3.Connection) -> None:
    created = call(home, "create_event", {"title": "Flight to Denver", "date": "2027-03-03", "time": "06:30", "duration_minutes": 60})
    assert [c["title"] for c in created["conflicts"]] == ["Gym with Jordan"]
    assert count(db, "events", "title='Flight to Denver' AND date='2027-03-03' AND time='06:30' AND created_by='agent'") == 1
    listed = call(home, "list_events", {"date": "2027-03-03"})["events"]
    assert [e["title"] for e in listed] == ["Flight to Denver", "Gym with Jordan"]
    assert len(call(home, "list_events", {"date": "2027-03-01", "days": 7})["events"]) >= 8
    for name in ("Maria", "maria lopez", "LOPEZ", "my landlord"):
        assert len(call(home, "find_contact", {"name": name})["contacts"]) == 1
    assert call(home, "find_contact", {"name": "landlord"})["contacts"][0]["name"] == "Pat Rivera"
    call(home, "send_message", {"to": "Linda", "text": "Still on for the 10th!"})
    row = db.execute("SELECT * FROM messages ORDER BY id DESC LIMIT 1").fetchone()
    assert (row["contact_id"], row["direction"], row["text"]) == ("linda-park", "out", "Still on for the 10th!")


def test_web_search_ranks_the_right_page_first(home: Path) -> None:
    assert call(home, "web_search", {"query": "weather in Denver"})["results"][0]["url"].endswith("/denver/march")
    assert "Japan" in call(home, "web_search", {"query": "do I need a visa for Japan?"})["results"][0]["title"]
    assert "SXSW" in call(home, "web_search", {"query": "austin sxsw dates"})["results"][0]["title"]
    assert call(home, "web_search", {"query": "zzzz qqqq"})["results"] == []
    assert len(call(home, "web_search", {"query": "weather", "limit": 3})["results"]) == 3


# -- idempotency ---------------------------------------------------------------------------------

SIDE_EFFECTS = [
    ("transfer_money", {"to": "Maria", "amount": 45}, "transactions", "counterparty='maria-lopez'"),
    ("book_flight", {"flight_id": "UA162-20270303"}, "flight_bookings", "1 = 1"),
    ("order_food", {"restaurant_id": "thai-basil-house", "items": [{"name": "Pad Thai"}]}, "orders", "1 = 1"),
    ("book_hotel", {"hotel_id": "the-lodo-denver", "check_in": "2027-03-03", "nights": 2}, "hotel_bookings", "1 = 1"),
    ("pay_bill", {"payee": "water", "amount": 10}, "bill_payments", "1 = 1"),
    ("send_message", {"to": "Sam", "text": "running late"}, "messages", "direction='out'"),
    ("create_event", {"title": "Haircut", "date": "2027-03-05"}, "events", "title='Haircut'"),
]


@pytest.mark.parametrize("name, arguments, table, where", SIDE_EFFECTS, ids=[s[0] for s in SIDE_EFFECTS])
def test_same_key_applies_once_another_key_again(
    home: Path, db: sqlite3.Connection, name: str, arguments: dict[str, Any], table: str, where: str
) -> None:
    before_rows, before_balance = count(db, table, where), balance(db)
    first = call(home, name, arguments, context(home, "run-7", 3))
    after_one = balance(db)
    again = call(home, name, arguments, context(home, "run-7", 3))  # a resumed run repeats the step
    assert again == first
    assert count(db, table, where) == before_rows + 1 and balance(db) == after_one
    call(home, name, arguments, context(home, "run-7", 4))  # a different step is a new effect
    assert count(db, table, where) == before_rows + 2
    assert balance(db) - after_one == after_one - before_balance


# -- errors leave the world unchanged ------------------------------------------------------------

ERRORS = [
    ("transfer_money", {"to": "Maria", "amount": 50000}, "insufficient funds"),
    ("transfer_money", {"to": "Bob", "amount": 5}, "no contact matches 'Bob'"),
    ("transfer_money", {"to": "checking", "amount": 5}, "itself"),
    ("transfer_money", {"to": "Maria", "amount": 4.999}, "two decimals"),
    ("book_flight", {"flight_id": "XX999-20270303"}, "unknown flight_id"),
    ("book_flight", {"flight_id": "UA162-20270303", "passengers": 9, "pay_from": "checking"}, None),
    ("book_hotel", {"hotel_id": "ritz-atlantis", "check_in": "2027-03-03", "nights": 2}, "unknown hotel_id"),
    ("book_hotel", {"hotel_id": "the-lodo-denver", "check_in": "2027-02-20", "nights": 2}, "in the past"),
    ("book_hotel", {"hotel_id": "the-lodo-denver", "check_in": "2027-09-01", "nights": 2}, "beyond"),
    ("order_food", {"restaurant_id": "thai-basil-house", "items": [{"name": "Lobster Thermidor"}]}, "no 'Lobster Thermidor'"),
    ("order_food", {"restaurant_id": "noma", "items": [{"name": "Pad Thai"}]}, "unknown restaurant_id"),
    ("order_food", {"restaurant_id": "tandoori-nights", "items": [{"name": "curry"}]}, None),
    ("pay_bill", {"payee": "gym"}, "no bill for 'gym'"),
    ("pay_bill", {"payee": "electricity", "amount": 500}, "more than"),
    ("search_flights", {"destination": "Atlantis", "date": "2027-03-03"}, "unknown city"),
    ("search_flights", {"destination": "Denver", "date": "2027-02-27"}, "in the past"),
    ("search_flights", {"destination": "Denver", "date": "2027-05-15"}, "beyond"),
    ("search_flights", {"origin": "Denver", "destination": "Lisbon", "date": "2027-03-03"}, "no nonstop flights"),
    ("create_event", {"title": "Yesterday", "date": "2027-02-28"}, "in the past"),
    ("send_message", {"to": "Zed", "text": "hi"}, "no contact"),
    ("find_contact", {"name": "Zed"}, "no contact"),
    ("list_transactions", {"category": "yachts"}, "unknown category"),
    ("search_restaurants", {"cuisine": "martian"}, "cuisines:"),
]


@pytest.mark.parametrize("name, arguments, message", ERRORS, ids=[f"{e[0]}-{i}" for i, e in enumerate(ERRORS)])
def test_errors_are_tool_errors_and_change_nothing(home: Path, name: str, arguments: dict[str, Any], message: str | None) -> None:
    before = dump_digest(world_file(home))
    if name == "book_flight" and message is None:  # more passengers than seats left
        with World(world_file(home)) as world:
            world.db.execute("UPDATE flights SET seats_left = 3 WHERE id = 'UA162-20270303'")
        before = dump_digest(world_file(home))
        message = "3 seats left"
    if name == "order_food" and message is None:
        message = "matches several dishes"  # every Indian menu has several curries
    with pytest.raises(ToolError, match=message):
        call(home, name, arguments)
    assert dump_digest(world_file(home)) == before


def test_departed_flight_and_paid_bill_are_refused(home: Path) -> None:
    with World(world_file(home)) as world:
        world.set_clock("2027-03-03T10:00")
    with pytest.raises(ToolError, match="already departed"):
        call(home, "book_flight", {"flight_id": "UA162-20270303"})
    call(home, "pay_bill", {"payee": "phone"})
    with pytest.raises(ToolError, match="already paid"):
        call(home, "pay_bill", {"payee": "phone"}, context(home, step=2))


def test_a_failed_step_can_be_retried_with_the_same_key(home: Path, db: sqlite3.Connection) -> None:
    ctx = context(home, "run-9", 1)
    with pytest.raises(ToolError, match="insufficient funds"):
        call(home, "transfer_money", {"to": "Sam", "amount": 5000}, ctx)
    call(home, "transfer_money", {"to": "Sam", "amount": 50}, ctx)
    assert count(db, "transactions", "counterparty='sam-chen' AND amount_cents=-5000") == 1


# -- credentials ---------------------------------------------------------------------------------


def test_declared_credentials_are_required_when_a_source_is_given(home: Path) -> None:
    empty = context(home, credential=lambda scope: "")
    with pytest.raises(ToolError, match="'bank' credential"):
        call(home, "get_balance", {}, empty)

    def missing(scope: str) -> str:
        raise KeyError(scope)

    with pytest.raises(ToolError, match="'airline' credential"):
        call(home, "search_flights", {"destination": "Denver", "date": "2027-03-03"}, context(home, credential=missing))
    asked: list[str] = []
    ok = context(home, credential=lambda scope: asked.append(scope) or "token")
    call(home, "get_balance", {}, ok)
    call(home, "find_contact", {"name": "Maria"}, empty)  # declares no scope
    assert asked == ["bank"]
