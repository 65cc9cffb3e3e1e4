"""The plan evaluation harness: executed calls and final world state decide, by failure kind."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agentd.agent.evaluation import (
    FAILURE_KINDS, argument_differences, execute, markdown_report, sandbox_tools, score, structure, summarise,
    with_defaults,
)
from agentd.agent.plan import Plan

# The design doc's example, with the plan as the corpus writes it.
TRANSFER = {
    "id": "t017-00042", "template": "t017", "split": "test",
    "request": "hey can u send Maria forty-five bucks for the concert tix",
    "plan": {"steps": [{"id": 1, "tool": "transfer_money",
                        "arguments": {"to": "Maria", "amount": 45, "memo": "the concert tix"}}]},
    "irreversible": True,
}

FLIGHT_AND_TEXT = {
    "id": "t170-00001", "template": "t170", "split": "test",
    "request": "book a flight to Denver on March 3 and text Sam the confirmation",
    "plan": {"steps": [
        {"id": 1, "tool": "search_flights", "arguments": {"destination": "Denver", "date": "2027-03-03"}},
        {"id": 2, "tool": "book_flight", "arguments": {"flight_id": {"$ref": {"step": 1, "path": ["flights", 0, "flight_id"]}}}},
        {"id": 3, "tool": "send_message", "arguments": {"to": "Sam", "text": {"$ref": {"step": 2, "path": ["confirmation"]}}}},
    ]},
    "irreversible": True,
}

CALENDAR = {
    "id": "t110-00003", "template": "t110", "split": "test", "request": "what's on tomorrow",
    "plan": {"steps": [{"id": 1, "tool": "list_events", "arguments": {"date": "2027-03-02"}}]},
    "irreversible": False,
}


@pytest.fixture(scope="module")
def tools():
    return sandbox_tools()


def plan_of(example: dict[str, Any], edit=None) -> Plan:
    raw = copy.deepcopy(example["plan"])
    if edit is not None:
        edit(raw["steps"])
    return Plan.from_json(raw)


def kinds(result) -> list[str]:
    return [f.kind for f in result.failures]


def test_the_expected_plan_scores_full_marks_against_itself(tools) -> None:
    for example in (TRANSFER, FLIGHT_AND_TEXT, CALENDAR):
        result = score(example, plan_of(example), tools=tools)
        assert result.valid and result.structure_ok and result.exact_ok and result.state_ok and result.success, result
        assert result.failures == [] and not result.irreversible_violation
        assert [c.tool for c in result.predicted_calls] == [s["tool"] for s in example["plan"]["steps"]]


def test_executed_calls_carry_resolved_arguments(tools) -> None:
    run = execute(plan_of(FLIGHT_AND_TEXT), tools)
    assert run.status == "done"
    booking, message = run.calls[1], run.calls[2]
    assert booking.arguments["flight_id"].endswith("-20270303")  # the reference, resolved
    assert len(message.arguments["text"]) == 6  # the booking's confirmation code
    assert len(run.state["flight_bookings"]) == 1 and len(run.state["messages"]) == 4  # 3 seeded + 1 sent


def test_a_wrong_amount_is_a_wrong_argument_and_changes_the_world(tools) -> None:
    def edit(steps):
        steps[0]["arguments"]["amount"] = 54

    result = score(TRANSFER, plan_of(TRANSFER, edit), tools=tools)
    assert kinds(result) == ["wrong_argument"] and result.failures[0].argument == "amount"
    assert result.structure_ok and not result.exact_ok and not result.state_ok and not result.success


def test_case_and_spacing_do_not_matter_and_a_default_may_be_spelled_out(tools) -> None:
    flight = copy.deepcopy(FLIGHT_AND_TEXT)
    flight["plan"]["steps"][0]["arguments"]["destination"] = "DENVER"
    # passengers=1 is the schema default: spelling it out is no extra argument.
    result = score(flight, plan_of(FLIGHT_AND_TEXT, lambda steps: steps[1]["arguments"].update(passengers=1)), tools=tools)
    assert result.success, result.failures
    transfer = score(TRANSFER, plan_of(TRANSFER, lambda steps: steps[0]["arguments"].update(to="  maria ")), tools=tools)
    assert transfer.exact_ok and transfer.state_ok


def test_an_extra_argument_that_is_not_the_default_is_wrong(tools) -> None:
    result = score(FLIGHT_AND_TEXT, plan_of(FLIGHT_AND_TEXT, lambda s: s[1]["arguments"].update(pay_from="savings")), tools=tools)
    assert kinds(result) == ["wrong_argument"] and result.failures[0].argument == "pay_from"
    assert not result.state_ok  # savings paid, not checking


def test_a_missing_step(tools) -> None:
    result = score(FLIGHT_AND_TEXT, plan_of(FLIGHT_AND_TEXT, lambda steps: steps.pop()), tools=tools)
    assert kinds(result) == ["missing_step"] and result.failures[0].step == 3
    assert not result.structure_ok and not result.state_ok


def test_an_extra_step(tools) -> None:
    def edit(steps):
        steps.append({"id": 2, "tool": "web_search", "arguments": {"query": "concert tickets"}})

    result = score(TRANSFER, plan_of(TRANSFER, edit), tools=tools)
    assert kinds(result) == ["extra_step"]
    assert not result.structure_ok and not result.exact_ok
    assert result.state_ok  # a search changes nothing


def test_a_wrong_tool(tools) -> None:
    def edit(steps):
        steps[0] = {"id": 1, "tool": "find_contact", "arguments": {"name": "Maria"}}

    result = score(TRANSFER, plan_of(TRANSFER, edit), tools=tools)
    assert kinds(result) == ["wrong_tool"]
    assert not result.structure_ok and not result.state_ok


def test_irreversible_tools_on_a_request_that_asked_for_none_are_flagged(tools) -> None:
    def edit(steps):
        steps.append({"id": 2, "tool": "send_message", "arguments": {"to": "Sam", "text": "hi"}})

    flagged = score(CALENDAR, plan_of(CALENDAR, edit), tools=tools)
    assert flagged.irreversible_violation and "extra_step" in kinds(flagged)
    # The same call where the request asked for it is no violation.
    assert not score(TRANSFER, plan_of(TRANSFER), tools=tools).irreversible_violation
    assert not score(CALENDAR, plan_of(CALENDAR), tools=tools).irreversible_violation


def test_an_invalid_plan_and_a_planner_error(tools) -> None:
    invalid = score(TRANSFER, plan_of(TRANSFER, lambda s: s[0]["arguments"].update(amount="lots")), tools=tools)
    assert not invalid.valid and kinds(invalid) == ["invalid_plan"] and invalid.predicted_calls == []
    unknown = score(TRANSFER, plan_of(TRANSFER, lambda s: s[0].update(tool="teleport")), tools=tools)
    assert kinds(unknown) == ["invalid_plan"]
    failed = score(TRANSFER, None, "could not tell what to do", tools=tools)
    assert kinds(failed) == ["planner_error"] and "could not tell" in failed.failures[0].detail


def test_a_step_that_fails_in_the_world_is_a_wrong_argument(tools) -> None:
    result = score(TRANSFER, plan_of(TRANSFER, lambda s: s[0]["arguments"].update(to="Marla")), tools=tools)
    assert kinds(result) == ["wrong_argument"] and result.failures[0].argument == "to"
    assert result.predicted_calls[0].status == "failed" and not result.state_ok


def test_an_expected_plan_that_fails_is_unscorable_not_a_planner_failure(tools) -> None:
    broken = copy.deepcopy(TRANSFER)
    broken["plan"]["steps"][0]["arguments"]["to"] = "Nobody Atall"
    result = score(broken, plan_of(broken), tools=tools)
    assert result.expected_error
    assert summarise([result])["examples"] == 0 and summarise([result])["unscorable"] == 1


def test_defaults_fill_nested_items_and_numbers_compare_by_value() -> None:
    schema = sandbox_tools()["order_food"].parameters
    assert with_defaults({"items": [{"name": "Pad Thai"}]}, schema)["items"] == [{"name": "Pad Thai", "quantity": 1}]
    assert argument_differences({"restaurant_id": "x", "items": [{"name": "pad thai"}]},
                                {"restaurant_id": "x", "items": [{"name": "Pad  Thai", "quantity": 1.0}]}, schema) == []
    assert argument_differences({"restaurant_id": "x", "items": [{"name": "pad thai", "quantity": 2}]},
                                {"restaurant_id": "x", "items": [{"name": "pad thai"}]}, schema) == ["items"]


def test_structure_is_tool_names_and_dag_shape_only() -> None:
    same_shape = plan_of(FLIGHT_AND_TEXT, lambda s: s[0]["arguments"].update(destination="Boston"))
    assert structure(same_shape) == structure(plan_of(FLIGHT_AND_TEXT))
    # The message no longer waits for the booking: a different DAG with the same tools.
    flat = plan_of(FLIGHT_AND_TEXT, lambda s: s[2]["arguments"].update(text="booked"))
    assert structure(flat) != structure(plan_of(FLIGHT_AND_TEXT))


def test_summary_and_report(tools) -> None:
    results = [
        score(TRANSFER, plan_of(TRANSFER), tools=tools),
        score(TRANSFER, plan_of(TRANSFER, lambda s: s[0]["arguments"].update(amount=54)), tools=tools),
        score(CALENDAR, None, "no action recognised", tools=tools),
    ]
    summary = summarise(results)
    assert summary["examples"] == 3 and summary["success"] == 1 and summary["valid"] == 2
    assert summary["rates"]["success"] == pytest.approx(1 / 3, abs=1e-4)
    assert summary["failures"] == {**{k: 0 for k in FAILURE_KINDS}, "wrong_argument": 1, "planner_error": 1}
    assert summary["wrong_arguments"] == {"transfer_money.amount": 1}
    report = markdown_report(summary, results)
    assert "| argument exact success | 1 | 33.3% |" in report and "t017-00042" in report


def test_remembered_facts_are_part_of_the_final_state(tools) -> None:
    pytest.importorskip("agentd.agent.memory")
    if "remember_fact" not in tools:
        pytest.skip("no memory tool pack on this install")
    example = {"id": "t150-00001", "template": "t150", "request": "I live in Denver now", "irreversible": False,
               "plan": {"steps": [{"id": 1, "tool": "remember_fact", "arguments": {"key": "home_city", "value": "Denver"}}]}}
    assert score(example, plan_of(example), tools=tools).success
    wrong = score(example, plan_of(example, lambda s: s[0]["arguments"].update(value="Austin")), tools=tools)
    assert kinds(wrong) == ["wrong_argument"] and not wrong.state_ok
