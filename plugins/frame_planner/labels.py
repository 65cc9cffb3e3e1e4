"""The trained planner's label set: the intent of each clause, and argument roles.

Every token of a clause that asks for something is labelled with that clause's
intent (``INTENT:<intent>``) unless it gives an argument: then it carries a
BIO-coded role (``B-place``, ``I-place``, ...). The words that join two
clauses ("and then", "if") are ``O``. Labelling whole clauses rather than a few
trigger words lets every word vote for the intent, which is what carries over
to phrasings the model never saw. The order below is the classifier's output
order, so changing it means retraining.
"""

from __future__ import annotations

#: Every intent the planner knows, in a fixed order.
INTENTS: tuple[str, ...] = (
    "find_flights", "book_flight", "find_hotels", "book_hotel",
    "find_restaurants", "order_food",
    "check_balance", "list_transactions", "transfer_money", "pay_bill",
    "create_event", "list_events",
    "find_contact", "send_message", "web_search",
    "afford", "remember",
)

#: Argument roles: what a span of the request gives (the assembler maps roles to tool arguments).
ROLES: tuple[str, ...] = (
    "origin", "place", "date", "nights", "passengers", "max_price", "near",
    "cuisine", "dish", "item", "quantity",
    "account", "person", "amount", "memo", "payee",
    "title", "time", "duration", "location",
    "message", "query", "category", "since", "until", "days",
    "fact_city", "fact_account", "fact_diet", "usual",
)

INTENT_PREFIX = "INTENT:"

#: Span labels: intents first, then roles.
SPAN_LABELS: tuple[str, ...] = tuple(INTENT_PREFIX + intent for intent in INTENTS) + ROLES

#: Token labels: ``O``, every intent (whole clauses, no BIO), then ``B-`` and ``I-`` of every role.
TOKEN_LABELS: tuple[str, ...] = (
    ("O",) + tuple(INTENT_PREFIX + intent for intent in INTENTS)
    + tuple(f"{prefix}-{role}" for role in ROLES for prefix in ("B", "I"))
)

LABEL_IDS: dict[str, int] = {label: index for index, label in enumerate(TOKEN_LABELS)}


def is_intent(label: str) -> bool:
    return label.startswith(INTENT_PREFIX)


def intent_of(label: str) -> str:
    return label.removeprefix(INTENT_PREFIX)


def split_token_label(label: str) -> tuple[str, str]:
    """``("B", "place")`` from ``"B-place"``; ``("O", "")`` for ``"O"``; ``("C", "INTENT:x")`` for a clause label."""
    if label == "O":
        return "O", ""
    if is_intent(label):
        return "C", label
    prefix, _, span_label = label.partition("-")
    return prefix, span_label
