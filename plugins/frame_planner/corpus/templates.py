"""Phrasing templates: how people ask for each intent, each with its expected plan, split train/test.

A template is a pattern (:mod:`.pattern`) plus the plan it means, written with
the builders of :mod:`.plans`. Test templates are phrasings no training
template uses — other verbs and sentence shapes, not a word swapped — so the
held-out score measures generalisation to new ways of asking.

Styles: ``plain``, ``casual`` ("yo book me..."), ``terse`` ("flights sfo->den
fri"), ``polite`` / ``indirect`` ("could you possibly...", "I was wondering
whether..."), ``misspelt`` (the typo model runs over the template's own words),
``multi`` (several intents), ``condition`` ("if I can afford it").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

from . import plans as p
from .pattern import Node, parse
from .phrasings import broad_templates
from .plans import PlanWriter, Values, ref

PlanFn = Callable[[PlanWriter, Values], Any]


@dataclass(frozen=True)
class Template:
    id: str
    split: str
    style: str
    #: The intents the request asks for, in the order it says them.
    intents: tuple[str, ...]
    pattern: str
    #: Writes the expected plan from the slot values; None: the single intent's standard plan.
    plan: PlanFn | None = None
    #: The expected plan depends on the user's memory ("my usual"): kept out of the main score.
    needs_memory: bool = False

    @cached_property
    def nodes(self) -> tuple[Node, ...]:
        return parse(self.pattern)

    @property
    def typo_rate(self) -> float:
        return 0.3 if self.style == "misspelt" else 0.0

    def write_plan(self, values: Values) -> dict[str, Any]:
        writer = PlanWriter()
        (self.plan or p.SINGLE[self.intents[0]])(writer, values)
        return writer.to_json()


def _t(id: str, split: str, style: str, intents: str, pattern: str, plan: PlanFn | None = None, **kw: Any) -> Template:
    return Template(id, split, style, tuple(intents.split()), pattern, plan, **kw)


# -- multi-intent plans -------------------------------------------------------------------------


def flight_then_confirmation(w: PlanWriter, v: Values) -> None:
    booking = p.book_flight(w, v)
    p.send_message(w, v, text=ref(booking, "confirmation"))


def hotel_then_confirmation(w: PlanWriter, v: Values) -> None:
    booking = p.book_hotel(w, v)
    p.send_message(w, v, text=ref(booking, "confirmation"))


def flight_and_hotel(w: PlanWriter, v: Values) -> None:
    p.book_flight(w, v)
    p.book_hotel(w, v, "2", trip="")


def flights_and_hotels(w: PlanWriter, v: Values) -> None:
    p.search_flights(w, v)
    p.search_hotels(w, v, "2", trip="")


def balance_then_transfer(w: PlanWriter, v: Values) -> None:
    p.get_balance(w, v)
    p.transfer_money(w, v, "2")


def balance_then_bill(w: PlanWriter, v: Values) -> None:
    p.get_balance(w, v)
    p.pay_bill(w, v, "2")


def two_bills(w: PlanWriter, v: Values) -> None:
    p.pay_bill(w, v)
    p.pay_bill(w, v, "2")


def two_transfers(w: PlanWriter, v: Values) -> None:
    p.transfer_money(w, v)
    p.transfer_money(w, v, "2")


def events_then_new_event(w: PlanWriter, v: Values) -> None:
    p.list_events(w, v)
    p.create_event(w, v, "2")


def transfer_then_tell_them(w: PlanWriter, v: Values) -> None:
    p.transfer_money(w, v)
    p.send_message(w, v, to=v["person"])


def transfer_then_message(w: PlanWriter, v: Values) -> None:
    p.transfer_money(w, v)
    p.send_message(w, v, "2")


def order_then_message(w: PlanWriter, v: Values) -> None:
    p.order_food(w, v)
    p.send_message(w, v)


def search_then_event(w: PlanWriter, v: Values) -> None:
    p.web_search(w, v)
    p.create_event(w, v, "2")


def event_then_message(w: PlanWriter, v: Values) -> None:
    p.create_event(w, v)
    p.send_message(w, v, "2")


def contact_then_message(w: PlanWriter, v: Values) -> None:
    p.find_contact(w, v)
    p.send_message(w, v, to=v["person"])


def flight_hotel_then_confirmation(w: PlanWriter, v: Values) -> None:
    p.book_flight(w, v)
    hotel = p.book_hotel(w, v, "2", trip="")
    p.send_message(w, v, text=ref(hotel, "confirmation"))  # the latest booking's code


def order_then_bill(w: PlanWriter, v: Values) -> None:
    p.order_food(w, v)
    p.pay_bill(w, v, "2")


def bill_then_transfer(w: PlanWriter, v: Values) -> None:
    p.pay_bill(w, v)
    p.transfer_money(w, v, "2")


def search_then_message(w: PlanWriter, v: Values) -> None:
    p.web_search(w, v)
    p.send_message(w, v, "2")


def afford_then(pay: Callable[[PlanWriter, Values], int]) -> PlanFn:
    """"...if I can afford it": the balance of the paying account, then the payment."""

    def plan(w: PlanWriter, v: Values) -> None:
        p.afford(w, v)
        pay(w, v)

    return plan


def usual_order(w: PlanWriter, v: Values) -> None:
    p.order_food(w, v, items=v["_usual_items"])


# -- the templates ------------------------------------------------------------------------------

TRAIN = "train"
TEST = "test"

TEMPLATES: tuple[Template, ...] = (
    # find_flights
    _t("t001", TRAIN, "plain", "find_flights", "[find|show me|search for](find_flights) flights to {place} {date}"),
    _t("t002", TRAIN, "plain", "find_flights", "[any flights](find_flights) from {origin} to {place} {date}?"),
    _t("t003", TRAIN, "plain", "find_flights", "[what flights are there](find_flights) to {place} {date} <{max_price}>"),
    _t("t004", TRAIN, "terse", "find_flights", "[flights](find_flights) {origin}->{place} {!date}"),
    _t("t005", TRAIN, "casual", "find_flights", "(yo|hey) [need flights](find_flights) to {place} {date} for {passengers} people"),
    _t("h001", TEST, "indirect", "find_flights", "I'm [looking into ways to fly](find_flights) from {origin} to {place} {date}"),
    _t("h002", TEST, "terse", "find_flights", "{place} [flights](find_flights)? {!date}, {passengers} pax"),
    _t("h003", TEST, "polite", "find_flights",
       "I was wondering [which planes are going](find_flights) to {place} {date}, ideally {max_price}"),
    _t("t006", TRAIN, "plain", "find_flights", "[when are the flights](find_flights) from {origin} to {place} {date}"),
    _t("h004", TEST, "misspelt", "find_flights", "[any flights going](find_flights) out of {origin} into {place} {date}"),
    # book_flight
    _t("t010", TRAIN, "plain", "book_flight", "[book](book_flight) me a flight to {place} {date}"),
    _t("t011", TRAIN, "plain", "book_flight", "[book a flight](book_flight) from {origin} to {place} {date} <for {passengers} people>"),
    _t("t012", TRAIN, "casual", "book_flight", "(yo|ok) [get me on a flight](book_flight) to {place} {date}"),
    _t("t013", TRAIN, "polite", "book_flight", "please [book](book_flight) the first flight to {place} {date} <and pay from {account}>"),
    _t("t014", TRAIN, "plain", "book_flight", "[reserve](book_flight) {passengers} seats to {place} {date}"),
    _t("t015", TRAIN, "misspelt", "book_flight", "can you [book](book_flight) a flight to {place} {date} please"),
    _t("h010", TEST, "casual", "book_flight", "[put me on the first plane](book_flight) to {place} {date}"),
    _t("h011", TEST, "polite", "book_flight",
       "would you mind [booking](book_flight) {passengers} tickets from {origin} to {place} {date}? charge it to {account}"),
    _t("h012", TEST, "misspelt", "book_flight", "[grab us seats](book_flight) to {place} {date} for {passengers} of us thanks"),
    _t("t016", TRAIN, "casual", "book_flight", "[fly me](book_flight) to {place} {date} <with {passengers} passengers>"),
    _t("h013", TEST, "terse", "book_flight", "[flight booking](book_flight): {place}, {!date}, {passengers} adults"),
    # find_hotels
    _t("t020", TRAIN, "plain", "find_hotels", "[find|show me|look for](find_hotels) hotels in {place:city} {date} for {nights} nights"),
    _t("t021", TRAIN, "plain", "find_hotels", "[any hotels](find_hotels) near {near:hotel} in {place:city}? checking in {!date}, {nights} nights"),
    _t("t022", TRAIN, "terse", "find_hotels", "[hotels](find_hotels) {place:city} {max_price:hotel} a night {!date}"),
    _t("h020", TEST, "indirect", "find_hotels", "[where could I stay](find_hotels) in {place:city} for {nights} nights starting {!date}"),
    _t("h021", TEST, "casual", "find_hotels", "[need a place to crash](find_hotels) in {place:city} {date}, somewhere close to {near:hotel}"),
    _t("t023", TRAIN, "plain", "find_hotels", "[what hotels are there](find_hotels) in {place:city} near {near:hotel} {max_price:hotel} a night"),
    _t("h022", TEST, "misspelt", "find_hotels",
       "[looking for a hotel](find_hotels) in {place:city} {max_price:hotel} per night, {nights} nights from {!date}"),
    # book_hotel
    _t("t030", TRAIN, "plain", "book_hotel", "[book](book_hotel) a hotel in {place:city} {date} for {nights} nights"),
    _t("t031", TRAIN, "casual", "book_hotel", "[get me a room](book_hotel) in {place:city} for {nights} nights {date} <and pay with {account}>"),
    _t("t032", TRAIN, "plain", "book_hotel", "[book the cheapest hotel](book_hotel) near {near:hotel} in {place:city} {date}"),
    _t("h030", TEST, "polite", "book_hotel", "could you [reserve somewhere to stay](book_hotel) in {place:city}, {nights} nights from {!date}"),
    _t("h031", TEST, "terse", "book_hotel", "[hotel booking](book_hotel): {place:city}, {!date}, {nights} nts"),
    _t("t033", TRAIN, "misspelt", "book_hotel", "please [book](book_hotel) me a hotel in {place:city} for {nights} nights starting {!date}"),
    _t("h032", TEST, "casual", "book_hotel",
       "[lock in](book_hotel) the cheapest room near {near:hotel} in {place:city} {date} for {nights} nights"),
    # find_restaurants
    _t("t040", TRAIN, "plain", "find_restaurants", "[find|show me](find_restaurants) {cuisine} restaurants <near {near}>"),
    _t("t041", TRAIN, "plain", "find_restaurants", "[where can I get](find_restaurants) {dish} <near {near}>"),
    _t("t042", TRAIN, "casual", "find_restaurants", "[any good](find_restaurants) {cuisine} places around {near}?"),
    _t("h040", TEST, "indirect", "find_restaurants", "[I'm craving](find_restaurants) {dish}, what delivers to {near}?"),
    _t("h041", TEST, "polite", "find_restaurants", "[is there a](find_restaurants) {cuisine} spot that would deliver to {near}"),
    _t("t043", TRAIN, "terse", "find_restaurants", "[restaurants](find_restaurants) {cuisine} near {near}"),
    _t("h042", TEST, "terse", "find_restaurants", "{cuisine} [delivery options](find_restaurants) near {near}"),
    # order_food
    _t("t050", TRAIN, "plain", "order_food", "[order](order_food) {item} from a {cuisine} place"),
    _t("t051", TRAIN, "plain", "order_food", "[get me](order_food) {quantity} {item} and {item2} from the {cuisine} place <near {near}>"),
    _t("t052", TRAIN, "plain", "order_food", "[order](order_food) a {item} from somewhere with {dish}"),
    _t("t053", TRAIN, "casual", "order_food", "[order](order_food) {quantity} {item} from the {cuisine} spot and pay with {account}"),
    _t("h050", TEST, "polite", "order_food",
       "could you [put in an order for](order_food) {item} and {quantity2} {item2} from a {cuisine} restaurant"),
    _t("h051", TEST, "indirect", "order_food", "[I want](order_food) {item} delivered from whichever {cuisine} place is closest to {near}"),
    _t("t054", TRAIN, "misspelt", "order_food", "could you [order](order_food) me {quantity} {item} from a {dish} place"),
    _t("h052", TEST, "misspelt", "order_food", "[order](order_food) me {quantity} {item} please, from a place that does {dish}"),
    # check_balance
    _t("t060", TRAIN, "plain", "check_balance", "[what's my balance](check_balance)<?>"),
    _t("t061", TRAIN, "plain", "check_balance", "[how much money do I have](check_balance) in {account}"),
    _t("t062", TRAIN, "terse", "check_balance", "[balance](check_balance) {account}"),
    _t("t063", TRAIN, "plain", "check_balance", "[check my](check_balance) {account} balance"),
    _t("h060", TEST, "casual", "check_balance", "[how much is left](check_balance) in my {account}?"),
    _t("h061", TEST, "indirect", "check_balance", "I was wondering [how much cash I've got](check_balance) right now"),
    _t("t064", TRAIN, "casual", "check_balance", "[how broke am I](check_balance) right now"),
    _t("h062", TEST, "terse", "check_balance", "{account} [bal](check_balance)?"),
    # list_transactions
    _t("t070", TRAIN, "plain", "list_transactions", "[show my|list my](list_transactions) {category} transactions <since {!since}>"),
    _t("t071", TRAIN, "plain", "list_transactions", "[what did I spend](list_transactions) on {category} between {!since} and {!until}"),
    _t("t072", TRAIN, "terse", "list_transactions", "[transactions](list_transactions) from {!since} to {!until}"),
    _t("h070", TEST, "casual", "list_transactions", "[how much have I blown](list_transactions) on {category} since {!since}"),
    _t("h071", TEST, "polite", "list_transactions",
       "could you [pull up my spending](list_transactions) on {category} from {!since} through {!until}"),
    _t("t073", TRAIN, "plain", "list_transactions", "[list](list_transactions) {account} transactions <since {!since}>"),
    _t("h072", TEST, "indirect", "list_transactions", "I'd love to [see what I spent](list_transactions) on {category} since {!since}"),
    # transfer_money
    _t("t080", TRAIN, "plain", "transfer_money", "[send](transfer_money) {person} {amount} <for {memo}>"),
    _t("t081", TRAIN, "misspelt", "transfer_money", "hey can you [send](transfer_money) {person} {amount} for {memo}"),
    _t("t082", TRAIN, "plain", "transfer_money", "[transfer](transfer_money) {amount} to {person} from {account}"),
    _t("t083", TRAIN, "plain", "transfer_money", "[pay](transfer_money) {person} back {amount} <for {memo}>"),
    _t("t084", TRAIN, "casual", "transfer_money", "[venmo](transfer_money) {person} {amount}"),
    _t("h080", TEST, "terse", "transfer_money", "[wire](transfer_money) {amount} over to {person}, memo: {memo}"),
    _t("h081", TEST, "polite", "transfer_money", "could you possibly [move](transfer_money) {amount} to {person} out of {account}?"),
    _t("h082", TEST, "indirect", "transfer_money", "[I owe](transfer_money) {person} {amount} for {memo}, can you sort that out"),
    _t("h083", TEST, "misspelt", "transfer_money", "please [shoot](transfer_money) {person} {amount} real quick"),
    _t("t085", TRAIN, "terse", "transfer_money", "[send](transfer_money) {amount} to {person} re {memo}"),
    # pay_bill
    _t("t090", TRAIN, "plain", "pay_bill", "[pay](pay_bill) my {payee} bill <from {account}>"),
    _t("t091", TRAIN, "plain", "pay_bill", "[pay](pay_bill) {amount:bill} toward the {payee} bill"),
    _t("t092", TRAIN, "casual", "pay_bill", "[pay off](pay_bill) the {payee} bill"),
    _t("h090", TEST, "polite", "pay_bill", "please [settle](pay_bill) the {payee} bill using {account}"),
    _t("h091", TEST, "indirect", "pay_bill", "I'd like to [put](pay_bill) {amount:bill} towards my {payee} bill"),
    _t("t093", TRAIN, "misspelt", "pay_bill", "please [pay](pay_bill) the {payee} bill from my {account}"),
    _t("h092", TEST, "casual", "pay_bill", "[clear out](pay_bill) what I owe on the {payee} bill"),
    # create_event
    _t("t100", TRAIN, "plain", "create_event", "[add|schedule|put](create_event) {title} on my calendar {date} {time}"),
    _t("t101", TRAIN, "plain", "create_event", "[create an event](create_event) {title} {date} {time} <{duration}> <at {location}>"),
    _t("t102", TRAIN, "plain", "create_event", "[remind me about](create_event) {title} {date}"),
    _t("t103", TRAIN, "casual", "create_event", "[block off](create_event) {!duration} {date} for {title}"),
    _t("h100", TEST, "casual", "create_event", "[pencil in](create_event) {title} {date} {time}, location {location}"),
    _t("h101", TEST, "polite", "create_event",
       "would you [make a calendar entry](create_event) for {title} {date} {time}? it runs {!duration}"),
    _t("t104", TRAIN, "terse", "create_event", "[event](create_event): {title}, {!date}, {!time}"),
    _t("h102", TEST, "misspelt", "create_event", "[set up a meeting](create_event) called {title} {date} {time} at {location}"),
    # list_events
    _t("t110", TRAIN, "plain", "list_events", "[what's on|what's on my calendar](list_events) {date:any}"),
    _t("t111", TRAIN, "plain", "list_events", "[show my schedule](list_events) for the next {days} days"),
    _t("t112", TRAIN, "plain", "list_events", "[what do I have](list_events) {date:any}<?>"),
    _t("h110", TEST, "indirect", "list_events", "[am I free](list_events) {date:any}?"),
    _t("h111", TEST, "casual", "list_events", "[anything planned](list_events) over the next {days} days?"),
    _t("t113", TRAIN, "casual", "list_events", "[what's happening](list_events) {date:any}"),
    _t("h112", TEST, "terse", "list_events", "[agenda](list_events) {!date:any}"),
    # find_contact
    _t("t120", TRAIN, "plain", "find_contact", "[what's](find_contact) {person}'s number"),
    _t("t121", TRAIN, "plain", "find_contact", "[find|look up](find_contact) {person}'s contact info"),
    _t("t122", TRAIN, "terse", "find_contact", "[email for](find_contact) {person}"),
    _t("h120", TEST, "indirect", "find_contact", "[how do I reach](find_contact) {person}?"),
    _t("h121", TEST, "polite", "find_contact", "[do I have](find_contact) {person}'s phone number saved?"),
    _t("t123", TRAIN, "plain", "find_contact", "[get me](find_contact) {person}'s email"),
    _t("h122", TEST, "casual", "find_contact", "[gimme](find_contact) {person}'s digits"),
    # send_message
    _t("t130", TRAIN, "plain", "send_message", "[text](send_message) {person} that {message}"),
    _t("t131", TRAIN, "plain", "send_message", "[tell](send_message) {person} \"{message}\""),
    _t("t132", TRAIN, "terse", "send_message", "[message](send_message) {person}: {message}"),
    _t("t133", TRAIN, "misspelt", "send_message", "[send](send_message) {person} a message saying {message}"),
    _t("h130", TEST, "casual", "send_message", "[drop](send_message) {person} a line: {message}"),
    _t("h131", TEST, "polite", "send_message", "could you [shoot a text to](send_message) {person} saying {message}"),
    _t("t134", TRAIN, "casual", "send_message", "[msg](send_message) {person} {message}"),
    _t("h132", TEST, "indirect", "send_message", "[can you let](send_message) {person} know that {message}"),
    # web_search
    _t("t140", TRAIN, "plain", "web_search", "[search the web for|google|look online for](web_search) {query}"),
    _t("t141", TRAIN, "terse", "web_search", "[search](web_search): {query}"),
    _t("h140", TEST, "casual", "web_search", "[find me some info on](web_search) {query}"),
    _t("h141", TEST, "indirect", "web_search", "[what does the internet say about](web_search) {query}?"),
    _t("t142", TRAIN, "plain", "web_search", "[look up](web_search) {query} online"),
    _t("h142", TEST, "terse", "web_search", "[quick search](web_search) - {query}"),
    # remember
    _t("t150", TRAIN, "plain", "remember", "[I live in](remember) {fact_city} now"),
    _t("t151", TRAIN, "plain", "remember", "[from now on](remember) pay from {fact_account}"),
    _t("t152", TRAIN, "plain", "remember", "[remember that I'm](remember) {fact_diet}"),
    _t("t153", TRAIN, "casual", "remember", "[I moved to](remember) {fact_city}"),
    _t("h150", TEST, "casual", "remember", "[just so you know, I'm](remember) {fact_diet} these days"),
    _t("h151", TEST, "plain", "remember", "[my new home city is](remember) {fact_city}"),
    _t("h152", TEST, "polite", "remember", "[please default to](remember) my {fact_account} for payments going forward"),
    _t("t154", TRAIN, "casual", "remember", "[I'm](remember) {fact_diet} btw"),
    _t("t155", TRAIN, "plain", "remember", "[use](remember) {fact_account} by default from now on"),
    _t("h153", TEST, "misspelt", "remember", "[I'm now based in](remember) {fact_city}"),
    # conditions
    _t("t160", TRAIN, "condition", "book_flight afford", "[book](book_flight) a flight to {place} {date} if I [can afford it](afford)",
       afford_then(p.book_flight)),
    _t("t161", TRAIN, "condition", "afford transfer_money", "if I [have enough money](afford), [send](transfer_money) {person} {amount}",
       afford_then(p.transfer_money)),
    _t("t162", TRAIN, "condition", "order_food afford",
       "[order](order_food) {item} from the {cuisine} place if I [can afford it](afford)", afford_then(p.order_food)),
    _t("t163", TRAIN, "condition", "pay_bill afford",
       "[pay](pay_bill) the {payee} bill from {account} if [there's enough](afford)", afford_then(p.pay_bill)),
    _t("h160", TEST, "condition", "book_hotel afford",
       "[get me a hotel room](book_hotel) in {place:city} for {nights} nights {date}, assuming I [can swing it](afford)",
       afford_then(p.book_hotel)),
    _t("h161", TEST, "condition", "transfer_money afford",
       "[transfer](transfer_money) {amount} to {person} out of {account} but only if I [have the funds](afford)",
       afford_then(p.transfer_money)),
    _t("t164", TRAIN, "condition", "transfer_money afford", "[venmo](transfer_money) {person} {amount} if I [can cover it](afford)",
       afford_then(p.transfer_money)),
    _t("h162", TEST, "condition", "pay_bill afford",
       "[take care of](pay_bill) the {payee} bill as long as [there's money for it](afford)", afford_then(p.pay_bill)),
    _t("h163", TEST, "condition", "order_food afford",
       "[order](order_food) {item} from the {cuisine} place provided I [can afford it](afford)", afford_then(p.order_food)),
    # several intents
    _t("t170", TRAIN, "multi", "book_flight send_message",
       "[book](book_flight) a flight to {place} {date} and [text](send_message) {person} the confirmation", flight_then_confirmation),
    _t("t171", TRAIN, "multi", "book_flight book_hotel",
       "[book a flight](book_flight) to {place} {date} and [a hotel](book_hotel) for {nights2} nights", flight_and_hotel),
    _t("t172", TRAIN, "multi", "check_balance transfer_money",
       "[check my balance](check_balance) and [send](transfer_money) {person2} {amount2}", balance_then_transfer),
    _t("t173", TRAIN, "multi", "pay_bill pay_bill",
       "[pay](pay_bill) my {payee} bill and [pay](pay_bill) the {payee2} bill too", two_bills),
    _t("t174", TRAIN, "multi", "list_events create_event",
       "[what's on](list_events) {date:any} and [add](create_event) {title2} {date2} {time2}", events_then_new_event),
    _t("t175", TRAIN, "multi", "transfer_money send_message",
       "[send](transfer_money) {person} {amount} for {memo} and [text](send_message) them {message}", transfer_then_tell_them),
    _t("t176", TRAIN, "multi", "find_flights find_hotels",
       "[find flights](find_flights) to {place} {date} and [hotels](find_hotels) there for {nights2} nights", flights_and_hotels),
    _t("t177", TRAIN, "multi", "order_food send_message",
       "[order](order_food) {item} from the {cuisine} place and [tell](send_message) {person} {message}", order_then_message),
    _t("t178", TRAIN, "multi", "web_search create_event",
       "[google](web_search) {query} and [put](create_event) {title2} on my calendar {date2}", search_then_event),
    _t("t179", TRAIN, "multi", "transfer_money transfer_money",
       "[send](transfer_money) {person} {amount} and [send](transfer_money) {person2} {amount2}", two_transfers),
    _t("h170", TEST, "multi", "book_flight send_message",
       "[grab me a seat](book_flight) to {place} {date}, then [message](send_message) {person} the booking code",
       flight_then_confirmation),
    _t("h171", TEST, "multi", "book_flight book_hotel",
       "I'm [flying](book_flight) to {place} {date} so [sort out a hotel](book_hotel) there too, {nights2} nights", flight_and_hotel),
    _t("h172", TEST, "multi", "check_balance pay_bill",
       "[how much do I have](check_balance) in {account}? also [settle](pay_bill) the {payee2} bill", balance_then_bill),
    _t("h173", TEST, "multi", "transfer_money send_message",
       "[wire](transfer_money) {amount} to {person} and [drop](send_message) {person2} a line saying {message2}",
       transfer_then_message),
    _t("h174", TEST, "multi", "create_event send_message",
       "[pencil in](create_event) {title} {date} {time} and [ping](send_message) {person2} to say {message2}", event_then_message),
    _t("h175", TEST, "multi", "find_flights find_hotels",
       "[look for](find_flights) flights from {origin} to {place} {date} and also [see what hotels there are](find_hotels) "
       "for {nights2} nights", flights_and_hotels),
    _t("t180", TRAIN, "multi", "book_hotel send_message",
       "[book](book_hotel) a hotel in {place:city} {date} for {nights} nights and [send](send_message) {person} the confirmation",
       hotel_then_confirmation),
    _t("t181", TRAIN, "multi", "find_contact send_message",
       "[find](find_contact) {person}'s number and [text](send_message) them {message}", contact_then_message),
    _t("t182", TRAIN, "multi", "order_food pay_bill",
       "[order](order_food) {item} from the {cuisine} place and [pay](pay_bill) the {payee2} bill", order_then_bill),
    _t("t183", TRAIN, "multi", "book_flight book_hotel send_message",
       "[book a flight](book_flight) to {place} {date}, [a hotel](book_hotel) for {nights2} nights, and [text](send_message) "
       "{person} the confirmation", flight_hotel_then_confirmation),
    _t("t184", TRAIN, "multi", "web_search send_message",
       "[search for](web_search) {query} and [message](send_message) {person2} {message2}", search_then_message),
    _t("h176", TEST, "multi", "find_contact send_message",
       "[what's the number for](find_contact) {person}? and [tell](send_message) them {message}", contact_then_message),
    _t("h177", TEST, "multi", "list_events create_event",
       "[check what's happening](list_events) {date:any} and [put](create_event) {title2} down for {!date2} {time2}",
       events_then_new_event),
    _t("h178", TEST, "multi", "book_flight book_hotel send_message",
       "[get me on the first flight](book_flight) to {place} {date}, [reserve a hotel](book_hotel) for {nights2} nights "
       "and [ping](send_message) {person} the confirmation", flight_hotel_then_confirmation),
    _t("h179", TEST, "multi", "pay_bill transfer_money",
       "[clear out](pay_bill) the {payee} bill and then [wire](transfer_money) {person2} {amount2}", bill_then_transfer),
    # "my usual": the items come from memory
    _t("t190", TRAIN, "memory", "order_food", "[order](order_food) [my usual](usual) from the {cuisine} place", usual_order,
       needs_memory=True),
    _t("h190", TEST, "memory", "order_food", "[get me](order_food) [the usual](usual) from that {cuisine} spot", usual_order,
       needs_memory=True),
)


#: The broad training phrasings (word banks and clause combinations, :mod:`.phrasings`), after the hand-written ones.
TEMPLATES += tuple(broad_templates(_t, TRAIN))


def of_split(split: str) -> list[Template]:
    return [t for t in TEMPLATES if t.split == split]
