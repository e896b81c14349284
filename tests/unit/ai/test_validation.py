"""The validator: what a model answer must look like before anything reaches the policy."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.ai.prompt import MAX_PROPOSALS, PARAM_KEYS
from server.ai.validation import Proposal, Rejected, parse_answer, validate_item
from server.governance.gateway import Target


def item(action: Any, target: Any = None, rationale: Any = "because", **params: Any) -> dict[str, Any]:
    return {
        "action": action,
        "target": target,
        "params": {k: params.get(k) for k in PARAM_KEYS},
        "rationale": rationale,
    }


def errors(raw: Any) -> list[str]:
    checked = validate_item(raw)
    assert isinstance(checked, Rejected), checked
    return checked.errors


def test_a_valid_item_becomes_a_proposal_with_only_its_params() -> None:
    checked = validate_item(item("ai.algorithm.set_param", {"kind": "link", "id": "lnk_1"}, param="gamma", value=0.95))
    assert checked == Proposal(
        "ai.algorithm.set_param",
        Target("link", "lnk_1"),
        {"param": "gamma", "value": 0.95},
        "because",
        raw=item("ai.algorithm.set_param", {"kind": "link", "id": "lnk_1"}, param="gamma", value=0.95),
    )
    shift = validate_item(
        item("ai.budget.shift", {"kind": "campaign", "id": "c1"}, from_campaign="c1", to_campaign="c2", amount=10)
    )
    assert isinstance(shift, Proposal) and shift.params == {"from_campaign": "c1", "to_campaign": "c2", "amount": 10.0}


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (item("payout.approve"), "unknown action 'payout.approve'"),
        (item("ai.undo", {"kind": "link", "id": "l"}), "unknown action 'ai.undo'"),
        (item(["ai.alert"]), "unknown action"),
        ({**item("ai.alert", severity="info", title="t"), "execute": True}, "unexpected fields: execute"),
        ({"action": "ai.alert", "params": {}}, "missing fields: rationale, target"),
        (item("ai.alert", severity="info", title="t", rationale=None), "rationale must be a string"),
        (item("ai.alert", rationale="x" * 1001, severity="info", title="t"), "longer than 1000"),
        ({**item("ai.alert"), "params": {"severity": "info", "title": "t", "sql": 1}}, "unknown params: sql"),
        ({**item("ai.alert"), "params": "pause all"}, "params must be an object"),
        (item("ai.alert", severity="info"), "params.title: Missing data"),
        (item("ai.alert", severity="page-everyone", title="t"), "params.severity"),
        (item("ai.algorithm.set_param", {"kind": "link", "id": "l"}, param="gamma", value="0.9"), "must be a number"),
        (item("ai.algorithm.set_param", {"kind": "link", "id": "l"}, param="gamma", value=True), "must be a number"),
        (item("ai.algorithm.set_param", {"kind": "link", "id": "l"}, param="Gamma; drop", value=1), "params.param"),
        (
            item("ai.budget.shift", {"kind": "campaign", "id": "c"}, from_campaign="c", to_campaign="d", amount=-1),
            "amount",
        ),
        (
            item("ai.budget.shift", {"kind": "campaign", "id": "x"}, from_campaign="c", to_campaign="d", amount=1),
            "from_campaign",
        ),
        (item("ai.link.pause", {"kind": "offer", "id": "o"}), "needs a target of kind link"),
        (item("ai.offer.pause"), "needs a target of kind offer"),
        (item("ai.link.pause", {"kind": "payout", "id": "p"}), "target.kind must be one of"),
        (item("ai.link.pause", {"kind": "link", "id": "l; DROP TABLE"}), "target.id is not an id"),
        (item("ai.link.pause", {"kind": "link", "id": "l", "extra": 1}), "exactly kind and id"),
        ("pause everything", "must be a JSON object"),
    ],
)
def test_invalid_items_are_refused_with_a_reason(raw: Any, needle: str) -> None:
    assert any(needle in e for e in errors(raw)), errors(raw)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (None, "empty"),
        ("   ", "empty"),
        ("not json", "not JSON"),
        ('{"proposals": [', "not JSON"),
        ('{"proposals": [{"value": NaN}]}', "not JSON"),
        ('{"proposals": [{"value": Infinity}]}', "not JSON"),
        ("[]", "JSON list, not an object"),
        ("null", "JSON NoneType"),
        ('{"actions": []}', "unexpected keys"),
        ('{"proposals": {}}', "no list of proposals"),
        (json.dumps({"proposals": [{}] * (MAX_PROPOSALS + 1)}), "none is trusted"),
        ("[" * 100_000, "not JSON"),
    ],
)
def test_unusable_answers_yield_no_items(text: str | None, needle: str) -> None:
    parsed = parse_answer(text)
    assert parsed.items == [] and parsed.error is not None and needle in parsed.error


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(max_size=20),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=10), c),
        max_leaves=20,
    )
)
def test_the_validator_never_raises_and_never_accepts_garbage(raw: Any) -> None:
    checked = validate_item(raw)
    assert isinstance(checked, Rejected | Proposal)
    if isinstance(checked, Proposal):  # only possible for a well-formed item
        assert set(raw) == {"action", "target", "params", "rationale"}
