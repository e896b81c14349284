"""Strict validation of what the supervisor proposes, from the model or from the rules.

`parse_answer` turns the model's text into items, or says why the whole answer is unusable (not
JSON, not the expected object, too many items). `validate_item` checks one item against the output
contract and the action's own parameter schema and returns either a `Proposal` (which the policy
will judge) or a `Rejected` (recorded as a denied `ai.invalid` decision). Nothing here trusts the
model: unknown actions, extra fields, wrong types, strings for numbers, NaN, ids that are not ids
and targets of the wrong kind are all refused."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError

from server.ai.actions import ID, PROPOSAL_TYPES, TARGET_KINDS, params_schema
from server.ai.prompt import MAX_PROPOSALS, PARAM_KEYS, TARGET_KIND_NAMES
from server.governance.gateway import Target

MAX_RATIONALE = 1000
ITEM_KEYS = frozenset({"action", "target", "params", "rationale"})


@dataclass(frozen=True)
class Proposal:
    """A proposal with a registered type, a target of the right kind and valid params."""

    action_type: str
    target: Target | None
    params: dict[str, Any]
    rationale: str
    raw: Any = None


@dataclass(frozen=True)
class Rejected:
    """An item the validator refused, with every reason."""

    proposed_type: str
    errors: list[str]
    raw: Any = None
    target: Target | None = None
    rationale: str = ""


@dataclass
class ParsedAnswer:
    items: list[Any] = field(default_factory=list)
    error: str | None = None  # why the whole answer is unusable


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_answer(text: str | None) -> ParsedAnswer:
    """The proposal items of the model's answer, or why there are none to trust."""
    if text is None or not text.strip():
        return ParsedAnswer(error="the answer is empty")
    try:
        doc = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        return ParsedAnswer(error=f"the answer is not JSON: {str(exc)[:200]}")
    if not isinstance(doc, dict):
        return ParsedAnswer(error=f"the answer is a JSON {type(doc).__name__}, not an object")
    extra = sorted(set(doc) - {"proposals"})
    if extra:
        return ParsedAnswer(error=f"unexpected keys in the answer: {', '.join(extra)[:200]}")
    items = doc.get("proposals")
    if not isinstance(items, list):
        return ParsedAnswer(error="the answer has no list of proposals")
    if len(items) > MAX_PROPOSALS:
        return ParsedAnswer(error=f"{len(items)} proposals, more than the {MAX_PROPOSALS} allowed: none is trusted")
    return ParsedAnswer(items=items)


def _short(value: Any, limit: int = 64) -> str:
    return value[:limit] if isinstance(value, str) else json.dumps(value, default=str)[:limit]


def _target(raw: Any, errors: list[str]) -> Target | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"kind", "id"}:
        errors.append("target must be null or an object with exactly kind and id")
        return None
    kind, ident = raw["kind"], raw["id"]
    if kind not in TARGET_KIND_NAMES:
        errors.append(f"target.kind must be one of {', '.join(TARGET_KIND_NAMES)}")
        return None
    try:
        ID(ident)
    except ValidationError:
        errors.append("target.id is not an id")
        return None
    return Target(kind=kind, id=ident)


def _flatten(messages: Any, prefix: str = "") -> list[str]:
    if isinstance(messages, dict):
        out: list[str] = []
        for key, value in sorted(messages.items(), key=lambda kv: str(kv[0])):
            out += _flatten(value, f"{prefix}{key}.")
        return out
    if isinstance(messages, list):
        return [f"{prefix.rstrip('.')}: {m}" if isinstance(m, str) else str(m) for m in messages]
    return [f"{prefix.rstrip('.')}: {messages}"]


def validate_item(raw: Any) -> Proposal | Rejected:
    """One item of the answer checked against the contract and its action's schema."""
    if not isinstance(raw, dict):
        return Rejected(proposed_type="(not an object)", errors=["a proposal must be a JSON object"], raw=raw)
    errors: list[str] = []
    action = raw.get("action")
    proposed = _short(action) if action is not None else "(missing)"
    extra = sorted(str(k) for k in set(raw) - ITEM_KEYS)
    if extra:
        errors.append(f"unexpected fields: {', '.join(extra)[:200]}")
    missing = sorted(ITEM_KEYS - set(raw))
    if missing:
        errors.append(f"missing fields: {', '.join(missing)}")
    if action not in PROPOSAL_TYPES:
        errors.append(f"unknown action {proposed!r}; the supervisor may propose {', '.join(PROPOSAL_TYPES)}")
    target = _target(raw.get("target"), errors)
    rationale = raw.get("rationale", "")
    if not isinstance(rationale, str):
        errors.append("rationale must be a string")
        rationale = ""
    elif len(rationale) > MAX_RATIONALE:
        errors.append(f"rationale is longer than {MAX_RATIONALE} characters")
    params_raw = raw.get("params")
    params: dict[str, Any] = {}
    if not isinstance(params_raw, dict):
        errors.append("params must be an object")
    else:
        unknown = sorted(str(k) for k in set(params_raw) - set(PARAM_KEYS))
        if unknown:
            errors.append(f"unknown params: {', '.join(unknown)[:200]}")
        given = {k: v for k, v in params_raw.items() if v is not None and k in PARAM_KEYS}
        if action in PROPOSAL_TYPES:
            try:
                params = params_schema(action).load(given)
            except ValidationError as exc:
                errors += [f"params.{m}" for m in _flatten(exc.messages)]
    if action in PROPOSAL_TYPES:
        wanted = TARGET_KINDS[action]
        if wanted is not None and (target is None or target.kind != wanted):
            errors.append(f"{action} needs a target of kind {wanted}")
        if action == "ai.budget.shift" and target is not None and params.get("from_campaign") not in (None, target.id):
            errors.append("the target of a budget shift is its from_campaign")
    if errors:
        return Rejected(
            proposed_type=proposed, errors=errors, raw=raw, target=target, rationale=str(rationale)[:MAX_RATIONALE]
        )
    assert isinstance(action, str)
    return Proposal(
        action_type=action,
        target=target,
        params={k: v for k, v in params.items() if v is not None},
        rationale=rationale,
        raw=raw,
    )
