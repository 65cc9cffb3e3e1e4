"""The trained planner's code half: BIO decoding and frame assembly (no model needed).

The spans here are written by hand, as the tagger would label the request;
the plans they must become are the conventions of docs/design/frame_planner.md.
Every plan is also checked against the registered tools' schemas.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from agentd.agent.plan import Ref
from agentd.errors import InvalidArgument
from agentd.plugins.frame_planner.assemble import ArgumentSource, assemble
from agentd.plugins.frame_planner.labels import LABEL_IDS, TOKEN_LABELS
from agentd.plugins.frame_planner.spans import Span, Token, decode_spans, viterbi
from agentd.tools import tool_specs

TODAY = date(2027, 3, 1)


def spans_of(request: str, *parts: tuple[str, str]) -> list[Span]:
    """Spans for (words, label) pairs, found left to right in ``request``."""
    spans, cursor = [], 0
    for words, label in parts:
        start = request.index(words, cursor)
        spans.append(Span(start, start + len(words), label))
        cursor = start + len(words)
    return sorted(spans, key=lambda s: s.start)


def steps(request: str, *parts: tuple[str, str], **options):
    assembly = assemble(request, spans_of(request, *parts), today=TODAY, **options)
    known = {spec.name: spec for spec in tool_specs()}
    if all(step.tool in known for step in assembly.plan.steps):
        assembly.plan.check(known)
    return [(s.tool, dict(s.arguments)) for s in assembly.plan.steps], assembly


# -- decoding ------------------------------------------------------------------------------
def one_hot(label: str, strength: float = 8.0) -> np.ndarray:
    logits = np.zeros(len(TOKEN_LABELS), dtype=np.float32)
    logits[LABEL_IDS[label]] = strength
    return logits


def test_viterbi_never_starts_a_span_inside() -> None:
    # The per-token argmax would be I-place after O; the well-formed best is B-place.
    logits = np.stack([one_hot("O"), one_hot("I-place", 5.0) + one_hot("B-place", 4.0)])
    log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    path = [TOKEN_LABELS[i] for i in viterbi(log_probs, TOKEN_LABELS)]
    assert path == ["O", "B-place"]


def test_decode_spans_joins_word_pieces_and_widens_to_whole_words() -> None:
    request = "fly to Honolulu"
    # "honolulu" as word pieces "hono" "##lulu": only the first is labelled.
    tokens = [Token(0, 3, one_hot("INTENT:find_flights")), Token(4, 6, one_hot("INTENT:find_flights")),
              Token(7, 11, one_hot("B-place")), Token(11, 15, one_hot("O"))]
    spans = decode_spans(request, tokens, TOKEN_LABELS)
    assert [(s.text(request), s.label) for s in spans] == [("fly to Honolulu", "INTENT:find_flights"), ("Honolulu", "place")]


def test_every_word_of_a_clause_votes_for_its_intent() -> None:
    request = "please could you book flights to Denver and then text Sam"
    words = [(0, 6), (7, 12), (13, 16), (17, 21), (22, 29), (30, 32), (33, 39), (40, 43), (44, 48), (49, 53), (54, 57)]
    labels = ["INTENT:book_flight", "INTENT:find_flights", "INTENT:book_flight", "INTENT:book_flight",
              "INTENT:find_flights", "INTENT:book_flight", "B-place", "O", "O", "INTENT:send_message", "B-person"]
    spans = decode_spans(request, [Token(s, e, one_hot(l)) for (s, e), l in zip(words, labels)], TOKEN_LABELS)
    assert [(s.label, s.text(request)) for s in spans] == [
        ("INTENT:book_flight", "please could you book flights to Denver"), ("place", "Denver"),
        ("INTENT:send_message", "text Sam"), ("person", "Sam")]


def test_two_spans_of_one_role_side_by_side_are_one() -> None:
    request = "Middle Eastern"
    tokens = [Token(0, 6, one_hot("B-cuisine")), Token(7, 14, one_hot("B-cuisine"))]
    assert [(s.text(request), s.label) for s in decode_spans(request, tokens, TOKEN_LABELS)] == [("Middle Eastern", "cuisine")]


def test_clause_labels_follow_the_corpus_spans() -> None:
    from agentd.plugins.frame_planner.train import clause_ranges

    request = "book a flight to Austin and text Sam the code"
    spans = [{"start": s.start, "end": s.end, "label": s.label} for s in spans_of(
        request, ("book", "INTENT:book_flight"), ("Austin", "place"), ("text", "INTENT:send_message"), ("Sam", "person"))]
    assert [(request[a:b], label) for a, b, label in clause_ranges(request, spans)] == [
        ("book a flight to Austin", "INTENT:book_flight"), ("text Sam the code", "INTENT:send_message")]


# -- assembly -------------------------------------------------------------------------------
def test_transfer_with_amount_in_words_and_memo() -> None:
    request = "send Maria forty-five bucks for the concert tickets"
    plan, assembly = steps(request, ("send", "INTENT:transfer_money"), ("Maria", "person"),
                           ("forty-five bucks", "amount"), ("the concert tickets", "memo"))
    assert plan == [("transfer_money", {"to": "Maria", "amount": 45, "memo": "the concert tickets"})]
    start = request.index("forty")
    assert assembly.sources[(1, "amount")] == ArgumentSource(start, start + len("forty-five bucks"), "amount")


def test_booking_then_message_refers_to_the_confirmation() -> None:
    request = "Book a flight to Austin on March 8 and text Sam the confirmation"
    plan, _ = steps(request, ("Book a flight", "INTENT:book_flight"), ("Austin", "place"), ("March 8", "date"),
                    ("text", "INTENT:send_message"), ("Sam", "person"))
    assert plan == [
        ("search_flights", {"destination": "Austin", "date": "2027-03-08"}),
        ("book_flight", {"flight_id": Ref(1, ("flights", 0, "flight_id"))}),
        ("send_message", {"to": "Sam", "text": Ref(2, ("confirmation",))}),
    ]


def test_hotel_after_a_flight_takes_the_trip_city_and_day() -> None:
    request = "Fly to Denver on March 5 and book a hotel there for 2 nights"
    plan, _ = steps(request, ("Fly", "INTENT:book_flight"), ("Denver", "place"), ("March 5", "date"),
                    ("book a hotel", "INTENT:book_hotel"), ("2 nights", "nights"))
    assert plan[2] == ("search_hotels", {"city": "Denver", "check_in": "2027-03-05", "nights": 2})
    assert plan[3] == ("book_hotel", {"hotel_id": Ref(3, ("hotels", 0, "hotel_id")), "check_in": "2027-03-05", "nights": 2})


def test_afford_condition_checks_the_paying_account_first() -> None:
    request = "pay the electricity bill from savings if I can afford it"
    plan, _ = steps(request, ("pay", "INTENT:pay_bill"), ("electricity", "payee"), ("savings", "account"),
                    ("afford", "INTENT:afford"))
    assert plan == [("get_balance", {"account": "savings"}),
                    ("pay_bill", {"payee": "electricity", "from_account": "savings"})]


def test_order_pairs_each_quantity_with_its_dish() -> None:
    request = "order 2 Pad Thai and a Green Curry from a Thai place"
    plan, _ = steps(request, ("order", "INTENT:order_food"), ("2", "quantity"), ("Pad Thai", "item"),
                    ("a", "quantity"), ("Green Curry", "item"), ("Thai", "cuisine"))
    assert plan[0] == ("search_restaurants", {"cuisine": "Thai"})
    assert plan[1][1]["items"] == [{"name": "Pad Thai", "quantity": 2}, {"name": "Green Curry", "quantity": 1}]


def test_two_intents_each_keep_their_own_slots() -> None:
    request = "Find sushi near home and add dinner on March 5 at 7pm to my calendar"
    plan, _ = steps(request, ("Find", "INTENT:find_restaurants"), ("sushi", "dish"), ("home", "near"),
                    ("add", "INTENT:create_event"), ("dinner", "title"), ("March 5", "date"), ("7pm", "time"))
    assert plan == [("search_restaurants", {"dish": "sushi", "near": "home"}),
                    ("create_event", {"title": "dinner", "date": "2027-03-05", "time": "19:00"})]


def test_memory_fills_what_the_request_leaves_out() -> None:
    request = "send Sam 20 dollars"
    plan, _ = steps(request, ("send", "INTENT:transfer_money"), ("Sam", "person"), ("20 dollars", "amount"),
                    user_facts={"default_account": "savings"})
    assert plan == [("transfer_money", {"to": "Sam", "amount": 20, "from_account": "savings"})]
    request = "order my usual from the Thai place"
    usual = [{"name": "Pad Thai", "quantity": 2}]
    plan, _ = steps(request, ("order", "INTENT:order_food"), ("my usual", "usual"), ("Thai", "cuisine"),
                    usual=lambda search: usual if search.get("cuisine") == "Thai" else None)
    assert plan[1][1]["items"] == usual


def test_unreadable_values_and_unknown_requests_are_clear_errors() -> None:
    with pytest.raises(InvalidArgument, match="could not read amount from 'lots'"):
        steps("send Sam lots", ("send", "INTENT:transfer_money"), ("Sam", "person"), ("lots", "amount"))
    with pytest.raises(InvalidArgument, match="no action recognised"):
        steps("hello there", ("there", "place"))
    with pytest.raises(InvalidArgument, match="usual order"):
        steps("order my usual", ("order", "INTENT:order_food"), ("my usual", "usual"), usual=lambda search: None)
