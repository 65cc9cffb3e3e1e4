"""Stand-ins for the everyday tools (flights, hotels, food, money, calendar, messages, web).

The planner's tests and benchmark need tools to plan over even where no tool
pack is installed. These have the demo pack's (``plugins/demo_tools``) names
and arguments, with shorter schemas; calling one returns ``{}``. They are
never registered as tools.
"""

from __future__ import annotations

from typing import Any

from agentd.tools import ToolSpec

DATE = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
TEXT = {"type": "string", "minLength": 1, "maxLength": 200}
ACCOUNT = {"type": "string", "enum": ["checking", "savings"]}
ANY_ACCOUNT = {"type": "string", "enum": ["checking", "savings", "all"]}
AMOUNT = {"type": "number", "exclusiveMinimum": 0, "maximum": 1000000}
NIGHTS = {"type": "integer", "minimum": 1, "maximum": 30}
PASSENGERS = {"type": "integer", "minimum": 1, "maximum": 9}


def _obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def _list_of(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return _obj({key: {"type": "array", "items": _obj(item)}}, (key,))


def _nothing(arguments: dict[str, Any], context: Any) -> dict[str, Any]:
    return {}


_S = {"type": "string"}
_N = {"type": "number"}

#: (name, description, parameters, result, flags) — the demo pack's names and arguments.
_TABLE: list[tuple[str, str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("search_flights", "Find nonstop flights for one day between two cities, earliest first. Origin defaults to home.",
     _obj({"origin": TEXT, "destination": TEXT, "date": DATE, "max_price": AMOUNT, "passengers": PASSENGERS},
          ("destination", "date")),
     _list_of("flights", {"flight_id": _S, "airline": _S, "price": _N, "depart": _S}), {"read_only": True}),
    ("book_flight", "Book seats on a flight found by search_flights and pay the fare. Spends money.",
     _obj({"flight_id": TEXT, "passengers": PASSENGERS, "pay_from": ACCOUNT}, ("flight_id",)),
     _obj({"booking_id": _S, "confirmation": _S, "total_price": _N}), {"needs_approval": True}),
    ("search_hotels", "Find hotels in a city for a stay of some nights, cheapest first, optionally near a landmark.",
     _obj({"city": TEXT, "check_in": DATE, "nights": NIGHTS, "near": TEXT, "max_price": AMOUNT},
          ("city", "check_in", "nights")),
     _list_of("hotels", {"hotel_id": _S, "name": _S, "nightly_price": _N}), {"read_only": True}),
    ("book_hotel", "Book a hotel found by search_hotels and pay the total. Spends money.",
     _obj({"hotel_id": TEXT, "check_in": DATE, "nights": NIGHTS, "pay_from": ACCOUNT}, ("hotel_id", "check_in", "nights")),
     _obj({"booking_id": _S, "confirmation": _S, "total_price": _N}), {"needs_approval": True}),
    ("search_restaurants", "Find restaurants that deliver, by cuisine, dish and/or neighbourhood, with menus.",
     _obj({"cuisine": TEXT, "dish": TEXT, "near": TEXT, "limit": {"type": "integer", "minimum": 1, "maximum": 40}}),
     _list_of("restaurants", {"restaurant_id": _S, "name": _S, "cuisine": _S}), {"read_only": True, "untrusted_output": True}),
    ("order_food", "Order dishes for delivery from a restaurant found by search_restaurants. Spends money.",
     _obj({"restaurant_id": TEXT,
           "items": {"type": "array", "minItems": 1, "maxItems": 20,
                     "items": {"type": "object", "additionalProperties": False, "required": ["name"],
                               "properties": {"name": TEXT, "quantity": {"type": "integer", "minimum": 1, "maximum": 20}}}},
           "pay_from": ACCOUNT}, ("restaurant_id", "items")),
     _obj({"order_id": _S, "total": _N, "eta_minutes": {"type": "integer"}}), {"needs_approval": True}),
    ("get_balance", "Current balance of the user's checking account, savings account, or both ('all').",
     _obj({"account": ANY_ACCOUNT}), _obj({"accounts": {"type": "array"}, "total": _N}), {"read_only": True}),
    ("list_transactions", "The user's bank transactions, newest first, optionally by category and date range.",
     _obj({"category": TEXT, "since": DATE, "until": DATE, "account": ANY_ACCOUNT,
           "limit": {"type": "integer", "minimum": 1, "maximum": 500}}),
     _list_of("transactions", {"id": {"type": "integer"}, "amount": _N, "description": _S}), {"read_only": True}),
    ("transfer_money", "Send money to one of the user's contacts (by name) or between the user's own accounts. Moves money.",
     _obj({"to": TEXT, "amount": AMOUNT, "from_account": ACCOUNT, "memo": TEXT}, ("to", "amount")),
     _obj({"transfer_id": _S, "amount": _N}), {"needs_approval": True}),
    ("pay_bill", "Pay one of the user's bills (electricity, internet, phone, water). Moves money.",
     _obj({"payee": TEXT, "amount": AMOUNT, "from_account": ACCOUNT}, ("payee",)),
     _obj({"payment_id": _S, "amount": _N, "status": _S}), {"needs_approval": True}),
    ("create_event", "Add an event to the user's calendar on a date, optionally at a time.",
     _obj({"title": TEXT, "date": DATE, "time": {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d$"},
           "duration_minutes": {"type": "integer", "minimum": 0, "maximum": 1440}, "location": TEXT}, ("title", "date")),
     _obj({"event": _obj({"event_id": {"type": "integer"}, "title": _S})}), {}),
    ("list_events", "The user's calendar events on a date (default today), or over several days from it.",
     _obj({"date": DATE, "days": {"type": "integer", "minimum": 1, "maximum": 62}}),
     _list_of("events", {"event_id": {"type": "integer"}, "title": _S, "time": _S}), {"read_only": True}),
    ("find_contact", "Look up the user's contacts by name or relationship, with phone and email.",
     _obj({"name": TEXT}, ("name",)), _list_of("contacts", {"contact_id": _S, "name": _S, "phone": _S}), {"read_only": True}),
    ("send_message", "Send a text message to one of the user's contacts (by name).",
     _obj({"to": TEXT, "text": {"type": "string", "minLength": 1, "maxLength": 2000}}, ("to", "text")),
     _obj({"message_id": {"type": "integer"}}), {}),
    ("web_search", "Search the web for information; returns pages' titles, addresses and text.",
     _obj({"query": {"type": "string", "minLength": 1, "maxLength": 300},
           "limit": {"type": "integer", "minimum": 1, "maximum": 10}}, ("query",)),
     _list_of("results", {"title": _S, "url": _S, "text": _S}), {"read_only": True, "untrusted_output": True}),
]


def reference_tools() -> list[ToolSpec]:
    """The fifteen stand-in tools, in a fixed order."""
    return [ToolSpec(name, description, parameters, result, _nothing, **flags)
            for name, description, parameters, result, flags in _TABLE]
