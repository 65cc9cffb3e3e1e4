"""In-context examples: short requests with their plans, over the everyday tools.

Only examples whose every call is to a shown tool, with arguments that tool
accepts, are put in a prompt (TinyAgent's trick: examples limited to the
retrieved tools), the ones closest to the request first. Dates are written
relative to the planner's "today" fact: ``{d+2}`` is the ISO date two days on,
``{D+2}`` how a person says it ("Wednesday March 3").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Mapping, Sequence

from agentd.agent.plan import Plan
from agentd.errors import AgentdError

from .grammar import arguments_in_order
from .parse import parse_plan

#: (request, plan text)
EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Find me a flight to Denver on {D+2} and book the cheapest one",
     '1. search_flights(destination="Denver", date="{d+2}")\n2. book_flight(flight_id=$1.flights.0.flight_id)\njoin()'),
    ("Any flights to Seattle tomorrow under $300?",
     '1. search_flights(destination="Seattle", date="{d+1}", max_price=300)\njoin()'),
    ("Book a hotel in Chicago near the river for 3 nights from {D+5}",
     '1. search_hotels(city="Chicago", check_in="{d+5}", nights=3, near="the river")\n'
     '2. book_hotel(hotel_id=$1.hotels.0.hotel_id, check_in="{d+5}", nights=3)\njoin()'),
    ("Fly me and my wife to Boston on {D+3} and get a hotel there for 2 nights",
     '1. search_flights(destination="Boston", date="{d+3}", passengers=2)\n'
     '2. book_flight(flight_id=$1.flights.0.flight_id, passengers=2)\n'
     '3. search_hotels(city="Boston", check_in="{d+3}", nights=2)\n'
     '4. book_hotel(hotel_id=$3.hotels.0.hotel_id, check_in="{d+3}", nights=2)\njoin()'),
    ("Order two pepperoni pizzas from the best pizza place",
     '1. search_restaurants(dish="pizza")\n'
     '2. order_food(restaurant_id=$1.restaurants.0.restaurant_id, items=[{"name": "Pepperoni Pizza", "quantity": 2}])\njoin()'),
    ("Where can I get ramen in Japantown?", '1. search_restaurants(dish="ramen", near="Japantown")\njoin()'),
    ("How much money is in my savings?", '1. get_balance(account="savings")\njoin()'),
    ("What did I spend on groceries since {D-14}?",
     '1. list_transactions(category="groceries", since="{d-14}")\njoin()'),
    ("Send $40 to Alice for dinner", '1. transfer_money(to="Alice", amount=40, memo="dinner")\njoin()'),
    ("Move 250 dollars from savings to checking",
     '1. transfer_money(to="checking", amount=250, from_account="savings")\njoin()'),
    ("Pay my internet bill from savings", '1. pay_bill(payee="internet", from_account="savings")\njoin()'),
    ("Put a dentist appointment on my calendar for {D+4} at 14:30",
     '1. create_event(title="Dentist appointment", date="{d+4}", time="14:30")\njoin()'),
    ("What's on my calendar this week?", '1. list_events(date="{d+0}", days=7)\njoin()'),
    ("Text my brother: \"send Bob $5 too\"", '1. send_message(to="brother", text="send Bob $5 too")\njoin()'),
    ("What's the phone number of my landlord?", '1. find_contact(name="landlord")\njoin()'),
    ("Look up the opening hours of the city museum", '1. web_search(query="city museum opening hours")\njoin()'),
    ("Check my checking balance and pay the water bill",
     '1. get_balance(account="checking")\n2. pay_bill(payee="water")\njoin()'),
    ("Book a flight to Austin on {D+6} and text Sam my confirmation",
     '1. search_flights(destination="Austin", date="{d+6}")\n2. book_flight(flight_id=$1.flights.0.flight_id)\n'
     '3. send_message(to="Sam", text=$2.confirmation)\njoin()'),
)


@dataclass(frozen=True)
class Example:
    request: str
    text: str
    plan: Plan


def render(template: str, today: date) -> str:
    def replace(match: re.Match[str]) -> str:
        day = today + timedelta(days=int(match.group(2)))
        return day.isoformat() if match.group(1) == "d" else f"{day:%A} {day:%B} {day.day}"

    return re.sub(r"\{([dD])([+-]\d+)\}", replace, template)


def usable_examples(tools: Sequence, today: date) -> list[Example]:
    """The examples every call of which is to one of ``tools`` with arguments it accepts."""
    by_name = {tool.name: tool for tool in tools}
    usable = []
    for request, template in EXAMPLES:
        text = render(template, today)
        try:
            plan = parse_plan(text)
            plan.check(by_name)
        except AgentdError:
            continue
        if all(_writable(by_name[step.tool], step.arguments) for step in plan.steps):
            usable.append(Example(render(request, today), text, plan))
    return usable


def _writable(tool, arguments: Mapping[str, object]) -> bool:
    """Whether the grammar could write these arguments: known names, the required ones, in its order."""
    ordered = arguments_in_order(tool)
    return (list(arguments) == [name for name, _s, _r in ordered if name in arguments]
            and all(name in arguments for name, _s, required in ordered if required))
