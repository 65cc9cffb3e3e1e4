"""Stand-ins for the everyday tools (flights, hotels, food, money, calendar, messages, web).

The planner's tests and benchmark need tools to plan over even where no tool
pack is installed. These have the demo pack's names and the arguments the
planner is measured on; calling one returns an empty result of its schema's
shape. They are never registered as tools.
"""

from __future__ import annotations

from typing import Any

from agentd.tools import ToolSpec

DATE = {"type": "string", "format": "date"}
ACCOUNT = {"type": "string", "enum": ["checking", "savings"], "description": "which account"}


def _obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def _list_of(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return _obj({key: {"type": "array", "items": _obj(item)}}, (key,))


def _nothing(arguments: dict[str, Any], context: Any) -> dict[str, Any]:
    return {}


_FLIGHT = {"id": {"type": "string"}, "airline": {"type": "string"}, "price": {"type": "number"}, "depart_time": {"type": "string"}}
_HOTEL = {"id": {"type": "string"}, "name": {"type": "string"}, "nightly_price": {"type": "number"}}
_RESTAURANT = {"id": {"type": "string"}, "name": {"type": "string"}, "cuisine": {"type": "string"}}
_CONTACT = {"id": {"type": "string"}, "name": {"type": "string"}, "phone": {"type": "string"}}

#: (name, description, parameters, result, flags)
_TABLE: list[tuple[str, str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("search_flights", "Find flights from one city to another on a date, cheapest first.",
     _obj({"origin": {"type": "string", "description": "departure city; default home"},
           "destination": {"type": "string", "description": "arrival city"}, "date": DATE,
           "max_price": {"type": "number", "description": "in dollars"}}, ("destination", "date")),
     _list_of("flights", _FLIGHT), {"read_only": True}),
    ("book_flight", "Book a seat on a flight found by search_flights.",
     _obj({"flight_id": {"type": "string"}, "passengers": {"type": "integer", "minimum": 1, "maximum": 9}}, ("flight_id",)),
     _obj({"booking_id": {"type": "string"}, "price": {"type": "number"}}), {"needs_approval": True}),
    ("search_hotels", "Find hotels in a city for a check-in date, cheapest first.",
     _obj({"city": {"type": "string"}, "check_in": DATE, "nights": {"type": "integer", "minimum": 1, "maximum": 30},
           "near": {"type": "string", "description": "a landmark or neighbourhood"}}, ("city", "check_in")),
     _list_of("hotels", _HOTEL), {"read_only": True}),
    ("book_hotel", "Book a room at a hotel found by search_hotels.",
     _obj({"hotel_id": {"type": "string"}, "check_in": DATE, "nights": {"type": "integer", "minimum": 1, "maximum": 30}},
          ("hotel_id", "check_in", "nights")),
     _obj({"booking_id": {"type": "string"}, "total_price": {"type": "number"}}), {"needs_approval": True}),
    ("search_restaurants", "Find restaurants that deliver a dish or cuisine, best rated first.",
     _obj({"dish": {"type": "string", "description": "e.g. pizza, sushi, curry"}, "cuisine": {"type": "string"},
           "near": {"type": "string", "description": "neighbourhood; default home"}}),
     _list_of("restaurants", _RESTAURANT), {"read_only": True}),
    ("order_food", "Order food for delivery from a restaurant found by search_restaurants.",
     _obj({"restaurant_id": {"type": "string"},
           "items": {"type": "array", "minItems": 1, "maxItems": 5,
                     "items": _obj({"name": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1, "maximum": 9}},
                                   ("name", "quantity"))}},
          ("restaurant_id", "items")),
     _obj({"order_id": {"type": "string"}, "total": {"type": "number"}, "eta_minutes": {"type": "integer"}}),
     {"needs_approval": True}),
    ("get_balance", "The current balance of a bank account.",
     _obj({"account": ACCOUNT}), _obj({"account": {"type": "string"}, "balance": {"type": "number"}}), {"read_only": True}),
    ("list_transactions", "Recent transactions of a bank account, newest first, optionally by category.",
     _obj({"account": ACCOUNT, "since": DATE, "category": {"type": "string", "description": "e.g. groceries, dining, rent"}}),
     _list_of("transactions", {"date": {"type": "string"}, "amount": {"type": "number"}, "description": {"type": "string"}}),
     {"read_only": True}),
    ("transfer_money", "Send money to a contact from a bank account.",
     _obj({"contact_id": {"type": "string"}, "amount": {"type": "number", "exclusiveMinimum": 0, "description": "in dollars"},
           "from_account": ACCOUNT, "note": {"type": "string"}}, ("contact_id", "amount")),
     _obj({"transfer_id": {"type": "string"}, "amount": {"type": "number"}}), {"needs_approval": True}),
    ("pay_bill", "Pay a bill (electricity, water, phone, internet, rent) in full or a given amount.",
     _obj({"payee": {"type": "string", "description": "e.g. electricity, PG&E, internet"},
           "amount": {"type": "number", "exclusiveMinimum": 0}, "account": ACCOUNT}, ("payee",)),
     _obj({"payment_id": {"type": "string"}, "amount": {"type": "number"}}), {"needs_approval": True}),
    ("create_event", "Add an event to the calendar.",
     _obj({"title": {"type": "string"}, "date": DATE,
           "time": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$", "description": "HH:MM, 24-hour"},
           "duration_minutes": {"type": "integer", "minimum": 5, "maximum": 1440}, "location": {"type": "string"}},
          ("title", "date")),
     _obj({"event_id": {"type": "integer"}}), {}),
    ("list_events", "Calendar events on a date or from a date to another.",
     _obj({"date": DATE, "end_date": DATE}, ("date",)),
     _list_of("events", {"id": {"type": "integer"}, "title": {"type": "string"}, "time": {"type": "string"}}),
     {"read_only": True}),
    ("find_contact", "Look up a contact by name or relationship (mom, landlord).",
     _obj({"name": {"type": "string"}}, ("name",)), _list_of("contacts", _CONTACT), {"read_only": True}),
    ("send_message", "Send a text message to a contact.",
     _obj({"contact_id": {"type": "string"}, "text": {"type": "string"}}, ("contact_id", "text")),
     _obj({"message_id": {"type": "integer"}}), {}),
    ("web_search", "Search the web; returns page titles, links and snippets.",
     _obj({"query": {"type": "string"}}, ("query",)),
     _list_of("results", {"title": {"type": "string"}, "url": {"type": "string"}, "snippet": {"type": "string"}}),
     {"read_only": True, "untrusted_output": True}),
]


def reference_tools() -> list[ToolSpec]:
    """The fifteen stand-in tools, in a fixed order."""
    return [ToolSpec(name, description, parameters, result, _nothing, **flags)
            for name, description, parameters, result, flags in _TABLE]
