"""The expected plans, written out by hand per intent (independently of the planner's assembler).

Each builder appends the steps of one intent to a :class:`PlanWriter`, taking
its values from the example's normalised slot values ``v`` (``v["place"]``,
``v["date2"]``: the suffix picks the frame of a multi-intent template). Only
what the request determines is written — no tool defaults — except required
arguments the request leaves to convention (a hotel stay of one night from
today, a flight today), as ``docs/design/frame_planner.md`` fixes them.
"""

from __future__ import annotations

from typing import Any, Callable

from .values import TODAY

Values = dict[str, Any]


class PlanWriter:
    """Numbered steps in the JSON form of :class:`agentd.agent.plan.Plan`."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def call(self, tool: str, **arguments: Any) -> int:
        """Append a call; arguments that are None are left out. Returns the step's number."""
        step = len(self.steps) + 1
        self.steps.append({"id": step, "tool": tool, "arguments": {k: v for k, v in arguments.items() if v is not None}})
        return step

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps}


def ref(step: int, *path: str | int) -> dict[str, Any]:
    return {"$ref": {"step": step, "path": list(path)}}


# -- travel ---------------------------------------------------------------------------------


def search_flights(w: PlanWriter, v: Values, n: str = "") -> int:
    return w.call(
        "search_flights", origin=v.get("origin" + n), destination=v["place" + n], date=v.get("date" + n, TODAY.isoformat()),
        max_price=v.get("max_price" + n), passengers=v.get("passengers" + n),
    )


def book_flight(w: PlanWriter, v: Values, n: str = "") -> int:
    search = search_flights(w, v, n)
    return w.call("book_flight", flight_id=ref(search, "flights", 0, "flight_id"), passengers=v.get("passengers" + n),
                  pay_from=v.get("account" + n))


def _stay(v: Values, n: str, trip: str | None) -> tuple[str, str, int]:
    """City, check-in and nights of a hotel frame; a trip's place and date fill what it leaves out."""
    city = v.get("place" + n) or (v["place" + trip] if trip is not None else None)
    check_in = v.get("date" + n) or (v.get("date" + trip) if trip is not None else None) or TODAY.isoformat()
    return city, check_in, v.get("nights" + n, 1)


def search_hotels(w: PlanWriter, v: Values, n: str = "", trip: str | None = None) -> int:
    city, check_in, nights = _stay(v, n, trip)
    return w.call("search_hotels", city=city, check_in=check_in, nights=nights, near=v.get("near" + n),
                  max_price=v.get("max_price" + n))


def book_hotel(w: PlanWriter, v: Values, n: str = "", trip: str | None = None) -> int:
    """``trip``: the suffix of a flight frame said before, whose city and day the stay takes if it names none."""
    search = search_hotels(w, v, n, trip)
    _, check_in, nights = _stay(v, n, trip)
    return w.call("book_hotel", hotel_id=ref(search, "hotels", 0, "hotel_id"), check_in=check_in, nights=nights,
                  pay_from=v.get("account" + n))


# -- food -----------------------------------------------------------------------------------


def search_restaurants(w: PlanWriter, v: Values, n: str = "") -> int:
    return w.call("search_restaurants", cuisine=v.get("cuisine" + n), dish=v.get("dish" + n), near=v.get("near" + n))


def order_items(v: Values) -> list[dict[str, Any]]:
    """``item``, ``item2``, ... each with the ``quantity`` of the same number, in that order."""
    items = []
    for suffix in ("", "2", "3", "4"):
        if "item" + suffix in v:
            item: dict[str, Any] = {"name": v["item" + suffix]}
            if "quantity" + suffix in v:
                item["quantity"] = v["quantity" + suffix]
            items.append(item)
    return items


def order_food(w: PlanWriter, v: Values, n: str = "", items: list[dict[str, Any]] | None = None) -> int:
    """``items``: from memory for "my usual", else the request's."""
    search = search_restaurants(w, v, n)
    return w.call("order_food", restaurant_id=ref(search, "restaurants", 0, "restaurant_id"),
                  items=items if items is not None else order_items(v), pay_from=v.get("account" + n))


# -- money ----------------------------------------------------------------------------------


def get_balance(w: PlanWriter, v: Values, n: str = "") -> int:
    return w.call("get_balance", account=v.get("account" + n))


def afford(w: PlanWriter, v: Values, n: str = "") -> int:
    """The balance check an "if I can afford it" puts before the payment: that payment's account, else checking."""
    return w.call("get_balance", account=v.get("account" + n, "checking"))


def list_transactions(w: PlanWriter, v: Values, n: str = "") -> int:
    return w.call("list_transactions", category=v.get("category" + n), since=v.get("since" + n),
                  until=v.get("until" + n), account=v.get("account" + n))


def transfer_money(w: PlanWriter, v: Values, n: str = "") -> int:
    return w.call("transfer_money", to=v["person" + n], amount=v["amount" + n], from_account=v.get("account" + n),
                  memo=v.get("memo" + n))


def pay_bill(w: PlanWriter, v: Values, n: str = "") -> int:
    return w.call("pay_bill", payee=v["payee" + n], amount=v.get("amount" + n), from_account=v.get("account" + n))


# -- personal -------------------------------------------------------------------------------


def create_event(w: PlanWriter, v: Values, n: str = "") -> int:
    return w.call("create_event", title=v["title" + n], date=v.get("date" + n, TODAY.isoformat()), time=v.get("time" + n),
                  duration_minutes=v.get("duration" + n), location=v.get("location" + n))


def list_events(w: PlanWriter, v: Values, n: str = "") -> int:
    return w.call("list_events", date=v.get("date" + n), days=v.get("days" + n))


def find_contact(w: PlanWriter, v: Values, n: str = "") -> int:
    return w.call("find_contact", name=v["person" + n])


def send_message(w: PlanWriter, v: Values, n: str = "", text: Any = None, to: str | None = None) -> int:
    """``text``: a reference (a booking's confirmation) when the request says no words to send."""
    return w.call("send_message", to=to or v["person" + n], text=text if text is not None else v["message" + n])


def web_search(w: PlanWriter, v: Values, n: str = "") -> int:
    return w.call("web_search", query=v["query" + n])


def remember(w: PlanWriter, v: Values, n: str = "") -> int:
    """One remembered fact: the home city, the default account or a diet."""
    for role, key in (("fact_city", "home_city"), ("fact_account", "default_account"), ("fact_diet", "diet")):
        if role + n in v:
            return w.call("remember_fact", key=key, value=v[role + n])
    raise ValueError("a remember template needs a fact slot")


#: The plan of a single-intent request, by intent.
SINGLE: dict[str, Callable[[PlanWriter, Values], int]] = {
    "find_flights": search_flights, "book_flight": book_flight, "find_hotels": search_hotels, "book_hotel": book_hotel,
    "find_restaurants": search_restaurants, "order_food": order_food, "check_balance": get_balance,
    "list_transactions": list_transactions, "transfer_money": transfer_money, "pay_bill": pay_bill,
    "create_event": create_event, "list_events": list_events, "find_contact": find_contact,
    "send_message": send_message, "web_search": web_search, "remember": remember,
}
