"""Labelled spans -> frames -> a plan: the code half of the trained planner.

The model only says *which words* ask for what (intent triggers) and *which
words* give which argument (roles). Everything else is code with fixed,
documented conventions (``docs/design/frame_planner.md``):

* one frame per intent trigger, in the order the request says them (an
  ``afford`` condition goes right before the payment it guards);
* a role span joins the nearest frame before it that takes that role and has
  it free, else the nearest one after it;
* values are normalised by :mod:`agentd.agent.normalise` (dates, amounts, counts, times);
  a span the normaliser cannot read is an error naming the words, never a guess;
* each intent expands to fixed steps with typed references between them
  (``book_flight`` = ``search_flights`` then ``book_flight($1.flights.0.flight_id)``);
* what the request leaves out may come from the user's memory: the home city
  they told us, their default account, their usual order.

Every literal argument remembers which characters of the request it came from
(:class:`ArgumentSource`), so a plan can later serve as a template for a
similar request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Mapping, Sequence

from agentd.agent import normalise
from agentd.agent.normalise import read_value
from agentd.agent.plan import Plan, Ref, Step
from agentd.agent.planner import ArgumentSource
from agentd.errors import InvalidArgument

from .labels import intent_of, is_intent
from .spans import Span

#: The roles each intent takes (everything else in the request is ignored by that frame).
INTENT_ROLES: dict[str, frozenset[str]] = {
    "find_flights": frozenset({"origin", "place", "date", "max_price", "passengers"}),
    "book_flight": frozenset({"origin", "place", "date", "max_price", "passengers", "account"}),
    "find_hotels": frozenset({"place", "date", "nights", "near", "max_price"}),
    "book_hotel": frozenset({"place", "date", "nights", "near", "max_price", "account"}),
    "find_restaurants": frozenset({"cuisine", "dish", "near"}),
    "order_food": frozenset({"cuisine", "dish", "near", "item", "quantity", "account", "usual"}),
    "check_balance": frozenset({"account"}),
    "list_transactions": frozenset({"category", "since", "until", "account"}),
    "transfer_money": frozenset({"person", "amount", "account", "memo"}),
    "pay_bill": frozenset({"payee", "amount", "account"}),
    "create_event": frozenset({"title", "date", "time", "duration", "location"}),
    "list_events": frozenset({"date", "days"}),
    "find_contact": frozenset({"person"}),
    "send_message": frozenset({"person", "message"}),
    "web_search": frozenset({"query"}),
    "afford": frozenset({"account"}),
    "remember": frozenset({"fact_city", "fact_account", "fact_diet"}),
}
#: Roles a frame may hold several of (each order item is its own span).
MULTI_ROLES = frozenset({"item", "quantity"})
#: Intents that spend money or make a booking: what an ``afford`` condition guards.
PAYMENTS = ("transfer_money", "pay_bill", "book_flight", "book_hotel", "order_food")
#: Optional details dropped, not refused, when their words do not read ("from the funds" as an account).
LENIENT_ROLES = frozenset({"account", "passengers", "days", "duration", "quantity"})
#: How a role's words become a value, and the source kind a template re-reads them with.
ROLE_KINDS: dict[str, str] = {
    "date": "date", "since": "date", "until": "date",
    "amount": "amount", "max_price": "amount",
    "nights": "integer", "passengers": "integer", "quantity": "integer", "days": "integer",
    "time": "time", "duration": "duration", "account": "account", "fact_account": "account",
}


@dataclass
class Frame:
    """One thing the user asked for: its intent and the spans that fill it."""

    intent: str
    trigger: Span
    slots: dict[str, list[Span]] = field(default_factory=dict)

    def has(self, role: str) -> bool:
        return bool(self.slots.get(role))

    def first(self, role: str) -> Span | None:
        spans = self.slots.get(role)
        return spans[0] if spans else None


@dataclass
class Assembly:
    """The assembled plan and where its literal arguments came from."""

    plan: Plan
    sources: dict[tuple[int, str], ArgumentSource]
    frames: list[Frame]


#: ``usual(frame_arguments) -> items | None``: the user's usual order for a search, from memory.
UsualOrder = Callable[[Mapping[str, Any]], "list[dict[str, Any]] | None"]


def frames_of(spans: Sequence[Span]) -> list[Frame]:
    """Frames in request order with every role span attached (see the module docstring)."""
    frames = [Frame(intent_of(s.label), s) for s in spans if is_intent(s.label) and intent_of(s.label) in INTENT_ROLES]
    for span in spans:
        if is_intent(span.label):
            continue
        takers = [f for f in frames if span.label in INTENT_ROLES[f.intent]]
        if not takers:
            continue
        free = [f for f in takers if span.label in MULTI_ROLES or not f.has(span.label)]
        before = [f for f in free if f.trigger.start <= span.start]
        after = [f for f in free if f.trigger.start > span.start]
        if before:
            target = before[-1]
        elif after:
            target = after[0]
        else:
            continue  # a second value for a role already filled: ignored rather than guessed
        target.slots.setdefault(span.label, []).append(span)
    return frames


def assemble(
    request: str,
    spans: Sequence[Span],
    *,
    today: date,
    user_facts: Mapping[str, str] | None = None,
    usual: UsualOrder | None = None,
) -> Assembly:
    """The plan for ``request`` from its labelled spans; INVALID_ARGUMENT saying what is missing."""
    frames = frames_of(spans)
    if not frames:
        raise InvalidArgument("request", "the planner could not tell what to do (no action recognised)")
    builder = _Builder(request, today, dict(user_facts or {}), usual)
    ordered = _order(frames)
    for index, frame in enumerate(ordered):
        builder.add(frame, ordered[:index], ordered[index + 1 :])
    return Assembly(Plan(tuple(builder.steps)), builder.sources, ordered)


def _order(frames: list[Frame]) -> list[Frame]:
    """Request order, with each ``afford`` moved right before the payment it guards."""
    conditions = [f for f in frames if f.intent == "afford"]
    ordered = [f for f in frames if f.intent != "afford"]
    for condition in conditions:
        payments = [i for i, f in enumerate(ordered) if f.intent in PAYMENTS]
        if not payments:
            continue  # "can I afford it?" alone: a balance check, like check_balance
        # The payment nearest to the condition's words.
        nearest = min(payments, key=lambda i: abs(ordered[i].trigger.start - condition.trigger.start))
        ordered.insert(nearest, condition)
    conditions_alone = [f for f in conditions if f not in ordered]
    return ordered + conditions_alone


class _Builder:
    """Appends each frame's steps, numbering them and noting argument sources."""

    def __init__(self, request: str, today: date, user_facts: dict[str, str], usual: UsualOrder | None):
        self.request, self.today, self.user_facts, self.usual = request, today, user_facts, usual
        self.steps: list[Step] = []
        self.sources: dict[tuple[int, str], ArgumentSource] = {}
        #: Step id of each frame's main step (the booking, the transfer), by frame identity.
        self.main_step: dict[int, int] = {}

    # -- values -------------------------------------------------------------------
    def value(self, role: str, span: Span) -> Any:
        words = span.text(self.request).strip()
        kind = ROLE_KINDS.get(role, "text")
        value = read_value(kind, words, self.today)
        if value is None:
            raise InvalidArgument("request", f"could not read {role.replace('_', ' ')} from {words!r}")
        return value

    def fill(self, arguments: dict[str, Any], pending: dict[str, ArgumentSource], frame: Frame, role: str, argument: str) -> None:
        span = frame.first(role)
        if span is None:
            return
        if role in LENIENT_ROLES and read_value(ROLE_KINDS.get(role, "text"), span.text(self.request).strip(), self.today) is None:
            return
        arguments[argument] = self.value(role, span)
        pending[argument] = ArgumentSource(span.start, span.end, ROLE_KINDS.get(role, "text"))

    def step(self, tool: str, arguments: dict[str, Any], pending: Mapping[str, ArgumentSource] = {}) -> int:
        step_id = len(self.steps) + 1
        self.steps.append(Step(step_id, tool, arguments))
        for argument, source in pending.items():
            if argument in arguments and not isinstance(arguments[argument], Ref):
                self.sources[(step_id, argument)] = source
        return step_id

    def account(self, frame: Frame, arguments: dict[str, Any], pending: dict[str, ArgumentSource], argument: str) -> None:
        """The account the request names, else the user's default account, else the tool's default."""
        self.fill(arguments, pending, frame, "account", argument)
        if argument not in arguments and self.user_facts.get("default_account") in ("checking", "savings"):
            arguments[argument] = self.user_facts["default_account"]

    # -- frames -------------------------------------------------------------------
    def add(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        getattr(self, "_" + frame.intent)(frame, earlier, later)

    def _flights(self, frame: Frame) -> int:
        arguments: dict[str, Any] = {}
        pending: dict[str, ArgumentSource] = {}
        self.fill(arguments, pending, frame, "origin", "origin")
        if "origin" not in arguments and self.user_facts.get("home_city"):
            arguments["origin"] = self.user_facts["home_city"]
        for role, argument in (("place", "destination"), ("date", "date"), ("max_price", "max_price"), ("passengers", "passengers")):
            self.fill(arguments, pending, frame, role, argument)
        if "date" not in arguments:
            arguments["date"] = self.today.isoformat()
        return self.step("search_flights", arguments, pending)

    def _find_flights(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        self.main_step[id(frame)] = self._flights(frame)

    def _book_flight(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        search = self._flights(frame)
        arguments: dict[str, Any] = {"flight_id": Ref(search, ("flights", 0, "flight_id"))}
        pending: dict[str, ArgumentSource] = {}
        self.fill(arguments, pending, frame, "passengers", "passengers")
        self.account(frame, arguments, pending, "pay_from")
        self.main_step[id(frame)] = self.step("book_flight", arguments, pending)

    def _hotels(self, frame: Frame, earlier: list[Frame]) -> tuple[int, dict[str, Any], dict[str, ArgumentSource]]:
        arguments: dict[str, Any] = {}
        pending: dict[str, ArgumentSource] = {}
        for role, argument in (("place", "city"), ("date", "check_in"), ("nights", "nights"), ("near", "near"), ("max_price", "max_price")):
            self.fill(arguments, pending, frame, role, argument)
        # "Fly to Portland on the 5th and book a hotel there": the trip's city and day.
        trip = next((f for f in reversed(earlier) if f.intent in ("find_flights", "book_flight")), None)
        if trip is not None:
            if "city" not in arguments and trip.has("place"):
                arguments["city"] = self.value("place", trip.first("place"))
                pending["city"] = _source(trip.first("place"), "text")
            if "check_in" not in arguments and trip.has("date"):
                arguments["check_in"] = self.value("date", trip.first("date"))
                pending["check_in"] = _source(trip.first("date"), "date")
        arguments.setdefault("check_in", self.today.isoformat())
        arguments.setdefault("nights", 1)
        return self.step("search_hotels", arguments, pending), arguments, pending

    def _find_hotels(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        self.main_step[id(frame)], _, _ = self._hotels(frame, earlier)

    def _book_hotel(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        search, found, found_sources = self._hotels(frame, earlier)
        arguments: dict[str, Any] = {"hotel_id": Ref(search, ("hotels", 0, "hotel_id")),
                                     "check_in": found["check_in"], "nights": found["nights"]}
        pending = {k: v for k, v in found_sources.items() if k in ("check_in", "nights")}
        self.account(frame, arguments, pending, "pay_from")
        self.main_step[id(frame)] = self.step("book_hotel", arguments, pending)

    def _restaurants(self, frame: Frame) -> tuple[int, dict[str, Any]]:
        arguments: dict[str, Any] = {}
        pending: dict[str, ArgumentSource] = {}
        for role in ("cuisine", "dish", "near"):
            self.fill(arguments, pending, frame, role, role)
        return self.step("search_restaurants", arguments, pending), arguments

    def _find_restaurants(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        self.main_step[id(frame)], _ = self._restaurants(frame)

    def _order_food(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        search, searched = self._restaurants(frame)
        items = self._items(frame)
        if not items and self.usual is not None and frame.has("usual"):
            items = self.usual(searched) or []
        if not items:
            what = "your usual order (no earlier order matches)" if frame.has("usual") else "which dishes to order"
            raise InvalidArgument("request", f"the planner could not tell {what}")
        arguments: dict[str, Any] = {"restaurant_id": Ref(search, ("restaurants", 0, "restaurant_id")), "items": items}
        pending: dict[str, ArgumentSource] = {}
        self.account(frame, arguments, pending, "pay_from")
        self.main_step[id(frame)] = self.step("order_food", arguments, pending)

    def _items(self, frame: Frame) -> list[dict[str, Any]]:
        """Each ``item`` span with the ``quantity`` span just before it (if any, since the last item)."""
        quantities = sorted(frame.slots.get("quantity", []), key=lambda s: s.start)
        items: list[dict[str, Any]] = []
        previous_end = -1
        for span in sorted(frame.slots.get("item", []), key=lambda s: s.start):
            item: dict[str, Any] = {"name": span.text(self.request).strip()}
            counts = [q for q in quantities if previous_end <= q.start < span.start]
            if counts:
                item["quantity"] = self.value("quantity", counts[-1])
            items.append(item)
            previous_end = span.end
        return items

    def _check_balance(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        arguments: dict[str, Any] = {}
        pending: dict[str, ArgumentSource] = {}
        self.fill(arguments, pending, frame, "account", "account")
        self.main_step[id(frame)] = self.step("get_balance", arguments, pending)

    def _afford(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        """The balance of the account the guarded payment uses (its words, else checking)."""
        arguments: dict[str, Any] = {}
        pending: dict[str, ArgumentSource] = {}
        guarded = later[0] if later and later[0].intent in PAYMENTS else None
        source = frame if frame.has("account") else guarded
        if source is not None and source.has("account"):
            self.fill(arguments, pending, source, "account", "account")
        else:
            arguments["account"] = self.user_facts.get("default_account") or "checking"
        self.main_step[id(frame)] = self.step("get_balance", arguments, pending)

    def _list_transactions(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        arguments: dict[str, Any] = {}
        pending: dict[str, ArgumentSource] = {}
        for role in ("category", "since", "until", "account"):
            self.fill(arguments, pending, frame, role, role)
        self.main_step[id(frame)] = self.step("list_transactions", arguments, pending)

    def _transfer_money(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        arguments: dict[str, Any] = {}
        pending: dict[str, ArgumentSource] = {}
        for role, argument in (("person", "to"), ("amount", "amount"), ("memo", "memo")):
            self.fill(arguments, pending, frame, role, argument)
        self.account(frame, arguments, pending, "from_account")
        self.main_step[id(frame)] = self.step("transfer_money", arguments, pending)

    def _pay_bill(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        arguments: dict[str, Any] = {}
        pending: dict[str, ArgumentSource] = {}
        for role, argument in (("payee", "payee"), ("amount", "amount")):
            self.fill(arguments, pending, frame, role, argument)
        self.account(frame, arguments, pending, "from_account")
        self.main_step[id(frame)] = self.step("pay_bill", arguments, pending)

    def _create_event(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        arguments: dict[str, Any] = {}
        pending: dict[str, ArgumentSource] = {}
        for role, argument in (("title", "title"), ("date", "date"), ("time", "time"),
                               ("duration", "duration_minutes"), ("location", "location")):
            self.fill(arguments, pending, frame, role, argument)
        arguments.setdefault("date", self.today.isoformat())
        self.main_step[id(frame)] = self.step("create_event", arguments, pending)

    def _list_events(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        arguments: dict[str, Any] = {}
        pending: dict[str, ArgumentSource] = {}
        span = frame.first("date")
        words = span.text(self.request) if span is not None else ""
        if span is not None and normalise.parse_date(words, self.today) is None:
            # "the next seven days": a number of days from today, not a date.
            days = normalise.parse_count(re.sub(r"^(?:over |for |in )?(?:the )?(?:next|coming|following) ", "", words.lower()))
            if days is not None and "day" in words.lower():
                arguments["days"] = days
                del frame.slots["date"]
        self.fill(arguments, pending, frame, "date", "date")
        self.fill(arguments, pending, frame, "days", "days")
        self.main_step[id(frame)] = self.step("list_events", arguments, pending)

    def _find_contact(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        arguments: dict[str, Any] = {}
        pending: dict[str, ArgumentSource] = {}
        self.fill(arguments, pending, frame, "person", "name")
        self.main_step[id(frame)] = self.step("find_contact", arguments, pending)

    def _send_message(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        arguments: dict[str, Any] = {}
        pending: dict[str, ArgumentSource] = {}
        self.fill(arguments, pending, frame, "person", "to")
        if "to" not in arguments:
            # "...and tell her": the person an earlier frame names.
            named = next((f for f in reversed(earlier) if f.has("person")), None)
            if named is not None:
                self.fill(arguments, pending, named, "person", "to")
        message = frame.first("message")
        if message is not None:
            # What to say runs to the end of the clause: words inside it that look like a place
            # or a time ("meet me by the fountain at 5") are part of the message.
            end = len(self.request[: frame.trigger.end].rstrip(" .!?"))
            if end > message.end:
                frame.slots["message"] = [Span(message.start, end, "message", message.score)]
        self.fill(arguments, pending, frame, "message", "text")
        if "text" not in arguments:
            # "...and text Sam the confirmation": the booking's confirmation code.
            booking = next((f for f in reversed(earlier) if f.intent in ("book_flight", "book_hotel")), None)
            if booking is not None:
                arguments["text"] = Ref(self.main_step[id(booking)], ("confirmation",))
        self.main_step[id(frame)] = self.step("send_message", arguments, pending)

    def _web_search(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        arguments: dict[str, Any] = {}
        pending: dict[str, ArgumentSource] = {}
        self.fill(arguments, pending, frame, "query", "query")
        self.main_step[id(frame)] = self.step("web_search", arguments, pending)

    def _remember(self, frame: Frame, earlier: list[Frame], later: list[Frame]) -> None:
        for role, key in (("fact_city", "home_city"), ("fact_account", "default_account"), ("fact_diet", "diet")):
            for span in frame.slots.get(role, [])[:1]:
                arguments = {"key": key, "value": self.value(role, span)}
                self.main_step[id(frame)] = self.step(
                    "remember_fact", arguments, {"value": ArgumentSource(span.start, span.end, ROLE_KINDS.get(role, "text"))})
        if id(frame) not in self.main_step:
            raise InvalidArgument("request", "the planner could not tell what to remember")


def _source(span: Span | None, kind: str) -> ArgumentSource:
    assert span is not None
    return ArgumentSource(span.start, span.end, kind)
