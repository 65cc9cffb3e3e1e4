"""The tool contract: what a ToolSpec refuses, and argument validation against its JSON schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.errors import AgentdError, InvalidArgument
from agentd.tools import ToolContext, ToolSpec, validate_arguments

PARAMETERS = {
    "type": "object",
    "properties": {
        "to": {"type": "string", "minLength": 1},
        "amount": {"type": "number", "exclusiveMinimum": 0},
        "date": {"type": "string", "format": "date"},
    },
    "required": ["to", "amount"],
    "additionalProperties": False,
}


def spec(**overrides) -> ToolSpec:
    fields = dict(name="transfer_money", description="Send money to a contact.", parameters=PARAMETERS,
                  result={"type": "object"}, call=lambda arguments, context: {"ok": True})
    fields.update(overrides)
    return ToolSpec(**fields)


def test_valid_arguments_pass_and_the_required_ones_are_listed() -> None:
    assert validate_arguments(spec(), {"to": "Maria", "amount": 45}) == {"to": "Maria", "amount": 45}
    assert spec().required == ("to", "amount")


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"to": "Maria"}, "transfer_money.arguments"),  # missing amount
        ({"to": "Maria", "amount": -5}, "transfer_money.amount"),
        ({"to": "Maria", "amount": "45"}, "transfer_money.amount"),
        ({"to": "Maria", "amount": 5, "date": "03/01/2027"}, "transfer_money.date"),
        ({"to": "Maria", "amount": 5, "note": "x"}, "transfer_money.arguments"),
    ],
)
def test_invalid_arguments_name_the_field(arguments, field) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_arguments(spec(), arguments)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"name": "Transfer Money"}, "must match"),
        ({"parameters": {"type": "array"}}, "type 'object'"),
        ({"read_only": True, "needs_approval": True}, "read-only tool does not need approval"),
    ],
)
def test_a_malformed_spec_is_refused(overrides, problem) -> None:
    with pytest.raises(AgentdError, match=problem):
        spec(**overrides)


def test_the_idempotency_key_is_the_same_for_every_attempt_of_a_step(tmp_path: Path) -> None:
    first, retry = ToolContext("run-1", 3, tmp_path), ToolContext("run-1", 3, tmp_path)
    assert first.idempotency_key == retry.idempotency_key == "run-1:3"
    assert ToolContext("run-1", 4, tmp_path).idempotency_key != first.idempotency_key
