"""The governance gateway: every action that changes what the system does passes here.

It builds the action envelope, asks OPA, applies clamp obligations (and asks again on the clamped
action), records the decision and, only when allowed, runs the action, all inside the caller's
transaction so that the record and the effect commit together or not at all."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, insert, text
from sqlalchemy.orm import Session

from server.db import json_safe, new_id
from server.governance.clamp import ClampError, apply_clamp
from server.governance.models import Decision
from server.observability.metrics import metrics
from server.policy.opa_client import OPA_MALFORMED, OPA_UNDEFINED, OpaClient, OpaError

log = logging.getLogger(__name__)

DECISION_PATH = "smartlinks/decision"
GATE_PATH = "smartlinks/gate"
BATCH_PATH = "smartlinks/batch/decisions"  # data.smartlinks.decision for many inputs (decide_many)
RATE_WINDOWS = (60, 3600, 86400)

# Hot-path SQL, built once. Minute buckets count the 60 s and 1 h windows, hour buckets the day;
# a window includes its partly elapsed oldest bucket, so counts err on the safe (higher) side.
_CONTROLS_AND_COUNTS = text(
    """
    SELECT key AS name, CASE WHEN enabled THEN 1 ELSE 0 END AS value
      FROM controls WHERE key IN (:global_key, :target_key)
    UNION ALL
    SELECT 'count:60', COALESCE(SUM(count), 0) FROM action_counts
     WHERE actor_id = :actor AND granularity = 'm' AND bucket_start >= :m60
    UNION ALL
    SELECT 'count:3600', COALESCE(SUM(count), 0) FROM action_counts
     WHERE actor_id = :actor AND granularity = 'm' AND bucket_start >= :m3600
    UNION ALL
    SELECT 'count:86400', COALESCE(SUM(count), 0) FROM action_counts
     WHERE actor_id = :actor AND granularity = 'h' AND bucket_start >= :h86400
    """
)
_COUNT_ACTION = text(
    """
    INSERT INTO action_counts (actor_id, granularity, bucket_start, count)
    VALUES (:actor, 'm', :minute, 1), (:actor, 'h', :hour, 1)
    ON CONFLICT (actor_id, granularity, bucket_start) DO UPDATE SET count = action_counts.count + 1
    """
)
_COUNT_ACTIONS = text(
    """
    INSERT INTO action_counts (actor_id, granularity, bucket_start, count)
    VALUES (:actor, 'm', :minute, :n), (:actor, 'h', :hour, :n)
    ON CONFLICT (actor_id, granularity, bucket_start) DO UPDATE SET count = action_counts.count + excluded.count
    """
)
_TARGET_KILL_SWITCHES = text(
    "SELECT key, CASE WHEN enabled THEN 1 ELSE 0 END AS value FROM controls WHERE key IN :keys"
).bindparams(bindparam("keys", expanding=True))


@dataclass(frozen=True)
class Actor:
    id: str
    kind: str
    roles: tuple[str, ...] = ()

    def as_input(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "roles": list(self.roles)}


@dataclass(frozen=True)
class Target:
    kind: str
    id: str


@dataclass(frozen=True)
class Action:
    type: str
    actor: Actor
    params: Mapping[str, Any]
    target: Target | None = None


@dataclass(frozen=True)
class AuthzRequest:
    """The HTTP request being authorised in the same OPA query as the action."""

    method: str
    endpoint: str
    path: str
    subject: dict[str, Any]


class AuthzDenied(Exception):
    """The caller may not make this request; `status` is 401 or 403."""

    def __init__(self, status: int, reasons: list[dict[str, Any]]) -> None:
        super().__init__(reasons[0].get("message", "denied") if reasons else "denied")
        self.status = status
        self.reasons = reasons


@dataclass(frozen=True)
class Resolution:
    """What OPA finally decided for one input document (`Gateway.resolve`)."""

    allow: bool
    reasons: list[dict[str, Any]]
    obligations: dict[str, Any]
    params: dict[str, Any]  # the action's params, clamped when a clamp was applied
    revision: str | None
    result: Any = None  # OPA's last raw decision
    clamped: bool = False
    error_code: str | None = None  # an OPA_* code when OPA gave no usable answer


@dataclass
class Outcome:
    record: Decision
    allow: bool
    reasons: list[dict[str, Any]]
    obligations: dict[str, Any]
    params: dict[str, Any]
    revision: str | None
    executed: bool = False
    result: Any = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def decision_id(self) -> str:
        return self.record.id


Executor = Callable[[Session, dict[str, Any]], Any]
# decide_many's states: given whether each action of the batch is executed (assumed, for the ones
# not decided yet), the state document of every action. The treasury's cash and daily total, say,
# depend on which earlier payouts of the batch were approved.
BatchStates = Callable[[Sequence[bool]], Sequence[Mapping[str, Any] | None]]


@dataclass(frozen=True)
class _Answer:
    """OPA's answer to one input of a batch query, or why there is none."""

    error: OpaError | None
    answered: bool  # the query itself got a reply (opa_decision_id is the reply's)
    allow: bool = False
    reasons: list[dict[str, Any]] = field(default_factory=list)
    obligations: dict[str, Any] = field(default_factory=dict)
    revision: str | None = None
    result: Any = None
    opa_decision_id: str | None = None


@dataclass(frozen=True)
class _Effect:
    """What deciding an action changes for the decisions after it: the actor's rate-limit count
    (allowed, not a dry run) and, when it runs, whatever the caller's state reflects."""

    counted: bool
    executed: bool


def _reason(code: str, message: str, policy: str = "gateway") -> dict[str, Any]:
    return {"code": code, "policy": policy, "message": message}


def validate_decision(result: Any) -> tuple[bool, list[dict[str, Any]], dict[str, Any]]:
    """Check the shape of a decision; anything unexpected is a deny (fail closed)."""
    if not isinstance(result, dict) or not isinstance(result.get("allow"), bool):
        raise OpaError(OPA_MALFORMED, "the decision is not an object with a boolean allow")
    reasons = result.get("reasons", [])
    obligations = result.get("obligations", {})
    if not isinstance(reasons, list) or not isinstance(obligations, dict):
        raise OpaError(OPA_MALFORMED, "the decision's reasons must be a list and obligations an object")
    clean = [r if isinstance(r, dict) else _reason(str(r), str(r), "unknown") for r in reasons]
    allow = result["allow"] and not clean
    return allow, clean, obligations


def build_input(
    action: Action,
    *,
    state: Mapping[str, Any] | None,
    caller: Actor | None,
    controls: Mapping[str, bool],
    counts: Mapping[str, int],
    mode: str,
    now: datetime,
) -> dict[str, Any]:
    """The input document OPA judges `action` on (`Gateway.envelope` without the database reads:
    the kill switches and the actor's action counts are given)."""
    return {
        "action": {
            "type": action.type,
            "actor": action.actor.as_input(),
            "target": {"kind": action.target.kind, "id": action.target.id} if action.target else None,
            "params": json_safe(dict(action.params)),
        },
        "state": json_safe(dict(state or {})),
        "controls": dict(controls),
        "context": {"actor_action_counts": dict(counts)},
        "caller": caller.as_input() if caller else None,
        "mode": mode,
        "now": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


_DECISION_COLUMNS = tuple(c.key for c in Decision.__table__.columns)
_INSERT_DECISION = insert(Decision)


def controls_and_counts_params(target: Target | None, actor_id: str, now: datetime) -> dict[str, Any]:
    """The parameters of `_CONTROLS_AND_COUNTS` for one action at `now`."""
    epoch = int(now.timestamp())
    minute, hour = epoch - epoch % 60, epoch - epoch % 3600
    return {
        "global_key": "kill_switch:global",
        "target_key": f"kill_switch:{target.kind}:{target.id}" if target is not None else "kill_switch:-",
        "actor": actor_id,
        "day": hour - 86400,
        "m60": minute - 60,
        "m3600": minute - 3540,
        "h86400": hour - 82800,
    }


def controls_and_counts_from(
    rows: Sequence[Sequence[Any]], target: Target | None
) -> tuple[dict[str, bool], dict[str, int]]:
    """The envelope's `controls` and `counts` from the rows of `_CONTROLS_AND_COUNTS`."""
    values = {str(name): int(value or 0) for name, value in rows}
    target_key = f"kill_switch:{target.kind}:{target.id}" if target is not None else "kill_switch:-"
    controls = {
        "kill_switch": bool(values.get("kill_switch:global")),
        "target_kill_switch": bool(target is not None and values.get(target_key)),
    }
    return controls, {str(w): values.get(f"count:{w}", 0) for w in RATE_WINDOWS}


def count_action_params(actor_id: str, now: datetime) -> dict[str, Any]:
    """The parameters of `_COUNT_ACTION`: one more allowed action of `actor_id` at `now`."""
    epoch = int(now.timestamp())
    return {"actor": actor_id, "minute": epoch - epoch % 60, "hour": epoch - epoch % 3600}


class Gateway:
    """Decides actions through OPA. One instance per app; safe to share between threads."""

    # decide_many: inputs per OPA query, and the read timeout of such a query (a hundred payout
    # decisions take about 60 ms to evaluate; one decision keeps the client's own timeout).
    batch_size = 100
    batch_timeout = 2.0

    def __init__(self, opa: OpaClient, *, mode: str = "test", clock: Callable[[], datetime] | None = None) -> None:
        self.opa = opa
        self.mode = mode
        self.clock = clock or (lambda: datetime.now(UTC))
        # The sidecar's decision_id of this thread's last answer (recorded as opa_decision_id).
        self._last_opa_decision_id = threading.local()
        # Called with each recorded decision that OPA answered (server/policies/shadow.py sets it
        # to evaluate the decision again with the shadow version, off the request's path).
        self.shadow: Callable[[Decision], None] | None = None

    def forget_opa_decision_id(self) -> None:
        """Start a decision in this thread: no sidecar decision_id yet."""
        self._last_opa_decision_id.value = None

    def last_opa_decision_id(self) -> str | None:
        """The sidecar's decision_id of this thread's last answer (None before any)."""
        value = getattr(self._last_opa_decision_id, "value", None)
        return value if isinstance(value, str) else None

    # -- envelope -----------------------------------------------------------------------------
    def controls_and_counts(
        self, session: Session, target: Target | None, actor_id: str, now: datetime
    ) -> tuple[dict[str, bool], dict[str, int]]:
        """Kill switches and the actor's allowed-action counts in one round trip."""
        # Core execution on the session's connection (the ORM layer adds nothing to these), after
        # the flush that session.execute would have done (a no-op when nothing is pending).
        session.flush()
        rows = session.connection().execute(_CONTROLS_AND_COUNTS, controls_and_counts_params(target, actor_id, now))
        return controls_and_counts_from(rows.all(), target)

    def count_action(self, session: Session, actor_id: str, now: datetime) -> None:
        session.connection().execute(_COUNT_ACTION, count_action_params(actor_id, now))

    def envelope(
        self,
        session: Session,
        action: Action,
        *,
        state: Mapping[str, Any] | None,
        caller: Actor | None,
        now: datetime,
    ) -> dict[str, Any]:
        controls, counts = self.controls_and_counts(session, action.target, action.actor.id, now)
        return build_input(
            action, state=state, caller=caller, controls=controls, counts=counts, mode=self.mode, now=now
        )

    # -- decision -----------------------------------------------------------------------------
    def _ask(
        self, input_doc: dict[str, Any], request: AuthzRequest | None
    ) -> tuple[bool, list[dict[str, Any]], dict[str, Any], str | None, Any]:
        if request is None:
            answer = self.opa.query(DECISION_PATH, input_doc)
            self._last_opa_decision_id.value = answer.decision_id
            allow, reasons, obligations = validate_decision(answer.result)
            return allow, reasons, obligations, answer.revision, answer.result
        gate_input = dict(input_doc)
        gate_input["subject"] = request.subject
        gate_input["request"] = {"method": request.method, "endpoint": request.endpoint, "path": request.path}
        answer = self.opa.query(GATE_PATH, gate_input)
        self._last_opa_decision_id.value = answer.decision_id
        result = answer.result
        authz = result.get("authz") if isinstance(result, dict) else None
        if not isinstance(authz, dict) or authz.get("allow") is not True:
            reasons = authz.get("reasons", []) if isinstance(authz, dict) else []
            reasons = [r for r in reasons if isinstance(r, dict)] if isinstance(reasons, list) else []
            codes = {r.get("code") for r in reasons}
            raise AuthzDenied(401 if "authentication_required" in codes else 403, reasons)
        allow, reasons, obligations = validate_decision(result.get("decision"))
        return allow, reasons, obligations, answer.revision, result.get("decision")

    def resolve(self, input_doc: dict[str, Any], request: AuthzRequest | None = None) -> Resolution:
        """Ask OPA about `input_doc`; on an allowed answer with a clamp obligation, apply the clamp
        and ask again on the clamped action (a second clamp is a deny). No database.

        This is the whole decision procedure of `decide`, usable on its own (bench/regret.py runs
        it). `input_doc["action"]["params"]` is replaced by the clamped params when a clamp was
        applied, so the document records what OPA judged last. OPA failures fail closed (deny,
        `error_code` set); raises AuthzDenied only when `request` is given and authz refuses."""
        params = dict(input_doc["action"]["params"])
        revision: str | None = self.opa.fallback_revision
        error_code: str | None = None
        result: Any = None
        clamped = False
        try:
            allow, reasons, obligations, revision, result = self._ask(input_doc, request)
            if allow and "clamp" in obligations:
                try:
                    params = apply_clamp(params, obligations["clamp"])
                except ClampError as exc:
                    allow, reasons = False, [_reason("clamp_failed", str(exc))]
                else:
                    clamped = True
                    input_doc["action"]["params"] = params
                    allow, reasons, second, revision, result = self._ask(input_doc, None)
                    if allow and "clamp" in second:
                        allow = False
                        reasons = [_reason("clamp_not_accepted", "the policy still asks for a clamp after clamping")]
                    obligations = {**second, "clamp": obligations["clamp"]}
        except OpaError as exc:
            allow, obligations, error_code = False, {}, exc.code
            reasons = [_reason(exc.code, exc.message, "opa")]
            log.warning("decision for %s failed closed: %s", input_doc["action"].get("type"), exc.code)
        return Resolution(allow, reasons, obligations, params, revision, result, clamped, error_code)

    def decide(
        self,
        session: Session,
        action: Action,
        *,
        state: Mapping[str, Any] | None = None,
        caller: Actor | None = None,
        dry_run: bool = False,
        execute: Executor | None = None,
        request: AuthzRequest | None = None,
        note: str | None = None,
    ) -> Outcome:
        """Decide `action`; when allowed and not a dry run, run `execute` in the same transaction.

        The decision is recorded in `session` whatever happens (allowed, denied, OPA failure);
        the caller commits. Raises AuthzDenied only when `request` is given and authz refuses."""
        started = time.perf_counter()
        now = self.clock()
        self._last_opa_decision_id.value = None
        input_doc = self.envelope(session, action, state=state, caller=caller, now=now)
        resolution = self.resolve(input_doc, request)
        if resolution.allow and not dry_run:
            self.count_action(session, action.actor.id, now)
        outcome = self._recorded_outcome(
            session,
            action,
            input_doc,
            resolution,
            self._last_opa_decision_id.value,
            caller,
            dry_run,
            execute,
            note,
            now,
        )
        record = outcome.record
        record.latency_ms = (time.perf_counter() - started) * 1000.0
        # A Core insert on the session's connection: an ORM flush (or the ORM's bulk path) costs
        # more than the rest of the bookkeeping together.
        session.flush()
        session.connection().execute(_INSERT_DECISION, {c: getattr(record, c) for c in _DECISION_COLUMNS})
        if self.shadow is not None and resolution.error_code is None:
            self.shadow(record)
        metrics().decided(record.action_type, record.outcome, time.perf_counter() - started)
        return outcome

    def _execute(self, session: Session, outcome: Outcome, execute: Executor) -> None:
        savepoint = session.begin_nested()
        try:
            outcome.result = execute(session, outcome.params)
            savepoint.commit()
        except Exception as exc:  # the action failed: its writes go, the decision record stays
            savepoint.rollback()
            log.exception("allowed action %s failed while executing", outcome.record.action_type)
            outcome.error = f"{type(exc).__name__}: {exc}"
            outcome.record.outcome = "failed"
            outcome.record.note = outcome.error[:1000]
            return
        outcome.executed = True
        outcome.record.executed = True

    # -- many decisions at once ---------------------------------------------------------------
    def controls_and_counts_many(
        self, session: Session, actions: Sequence[Action], now: datetime
    ) -> tuple[list[dict[str, bool]], dict[str, dict[str, int]]]:
        """`controls_and_counts` for a batch: the kill switches of every action (global and its
        target's) and each actor's allowed-action counts, in one query per actor plus one for
        the targets."""
        counts: dict[str, dict[str, int]] = {}
        global_switch = False
        for actor_id in dict.fromkeys(a.actor.id for a in actions):
            controls, counts[actor_id] = self.controls_and_counts(session, None, actor_id, now)
            global_switch = controls["kill_switch"]
        keys = sorted({f"kill_switch:{a.target.kind}:{a.target.id}" for a in actions if a.target is not None})
        switched_on: set[str] = set()
        for start in range(0, len(keys), 500):
            rows = session.execute(_TARGET_KILL_SWITCHES, {"keys": keys[start : start + 500]})
            switched_on |= {str(key) for key, value in rows if value}
        per_action = [
            {
                "kill_switch": global_switch,
                "target_kill_switch": a.target is not None
                and f"kill_switch:{a.target.kind}:{a.target.id}" in switched_on,
            }
            for a in actions
        ]
        return per_action, counts

    def _ask_many(self, docs: Sequence[dict[str, Any]]) -> list[_Answer]:
        """OPA's decision on each of `docs`, `batch_size` inputs per query (BATCH_PATH). A query
        that fails fails each of its inputs with the same code; a decision missing from the
        answer is `opa_undefined`, a decision of the wrong shape `opa_malformed`."""
        answers: list[_Answer] = []
        for start in range(0, len(docs), max(1, self.batch_size)):
            part = docs[start : start + max(1, self.batch_size)]
            try:
                reply = self.opa.query(BATCH_PATH, {"inputs": list(part)}, timeout=self.batch_timeout)
            except OpaError as exc:
                log.warning("batch of %d decisions failed closed: %s", len(part), exc.code)
                answers += [_Answer(exc, answered=False)] * len(part)
                continue
            by_position = reply.result
            if not isinstance(by_position, dict):
                error = OpaError(OPA_MALFORMED, "the batch answer is not an object of decisions by position")
                log.warning("batch of %d decisions failed closed: %s", len(part), error.code)
                answers += [_Answer(error, True, opa_decision_id=reply.decision_id)] * len(part)
                continue
            for position in range(len(part)):
                if str(position) not in by_position:
                    error = OpaError(OPA_UNDEFINED, f"the policy at {DECISION_PATH} is undefined for this input")
                    answers.append(_Answer(error, True, opa_decision_id=reply.decision_id))
                    continue
                result = by_position[str(position)]
                try:
                    allow, reasons, obligations = validate_decision(result)
                except OpaError as exc:
                    answers.append(_Answer(exc, True, opa_decision_id=reply.decision_id))
                    continue
                answers.append(
                    _Answer(None, True, allow, reasons, obligations, reply.revision, result, reply.decision_id)
                )
        return answers

    def _closed(
        self, exc: OpaError, params: dict[str, Any], revision: str | None, result: Any, clamped: bool
    ) -> Resolution:
        return Resolution(
            False, [_reason(exc.code, exc.message, "opa")], {}, params, revision, result, clamped, exc.code
        )

    def _resolve_many(self, docs: Sequence[dict[str, Any]]) -> list[tuple[Resolution, str | None]]:
        """`resolve` for many input documents, with the sidecar's decision_id of each answer: one
        batch query for all of them, one more for those that were clamped."""
        resolved: list[tuple[Resolution, str | None] | None] = [None] * len(docs)
        clamped: list[tuple[int, _Answer, dict[str, Any]]] = []
        for index, (doc, first) in enumerate(zip(docs, self._ask_many(docs), strict=True)):
            params = dict(doc["action"]["params"])
            if first.error is not None:
                resolution = self._closed(first.error, params, self.opa.fallback_revision, None, False)
            elif first.allow and "clamp" in first.obligations:
                try:
                    params = apply_clamp(params, first.obligations["clamp"])
                except ClampError as exc:
                    resolution = Resolution(
                        False,
                        [_reason("clamp_failed", str(exc))],
                        first.obligations,
                        params,
                        first.revision,
                        first.result,
                    )
                else:
                    doc["action"]["params"] = params
                    clamped.append((index, first, params))
                    continue
            else:
                resolution = Resolution(
                    first.allow, first.reasons, first.obligations, params, first.revision, first.result
                )
            resolved[index] = (resolution, first.opa_decision_id)
        if clamped:
            again = self._ask_many([docs[index] for index, _, _ in clamped])
            for (index, first, params), second in zip(clamped, again, strict=True):
                opa_id = second.opa_decision_id if second.answered else first.opa_decision_id
                if second.error is not None:
                    resolution = self._closed(second.error, params, first.revision, first.result, True)
                else:
                    allow, reasons = second.allow, second.reasons
                    if allow and "clamp" in second.obligations:
                        allow = False
                        reasons = [_reason("clamp_not_accepted", "the policy still asks for a clamp after clamping")]
                    obligations = {**second.obligations, "clamp": first.obligations["clamp"]}
                    resolution = Resolution(allow, reasons, obligations, params, second.revision, second.result, True)
                resolved[index] = (resolution, opa_id)
        return [item for item in resolved if item is not None]

    def resolve_many(self, docs: Sequence[dict[str, Any]]) -> list[Resolution]:
        """`resolve` for many input documents at once (no database, no authz request): each gets
        the answer `resolve` would give it, clamp and re-ask included, in a query per
        `batch_size` inputs (plus one for the clamped ones). OPA failures fail each input closed
        with the code `resolve` uses."""
        return [resolution for resolution, _ in self._resolve_many(docs)]

    def decide_many(
        self,
        session: Session,
        actions: Sequence[Action],
        *,
        states: BatchStates | Sequence[Mapping[str, Any] | None] | None = None,
        caller: Actor | None = None,
        dry_run: bool = False,
        execute: Executor | None = None,
        note: str | None = None,
    ) -> list[Outcome]:
        """Decide `actions` as `decide` would decide them one after the other, in one OPA query
        per `batch_size` actions: each is recorded exactly as `decide` records it and, allowed,
        executed (`execute`, in its own savepoint) in `session`; the caller commits.

        Each action is judged on what the ones before it changed, as in sequence: its actor's
        rate-limit counts include the earlier allowed actions of the batch, and `states` (a
        BatchStates callable) gives its state knowing which earlier actions were executed. The
        inputs are built on a guess (every action allowed and executed); when an answer differs
        from the guess, the decisions after it are asked again on the corrected facts, so no
        decision stands on a wrong input. Kill switches and counts are read once for the batch
        (at one `now`): an action that changes them (`controls.kill_switch`) is decided alone."""
        started = time.perf_counter()
        now = self.clock()
        total = len(actions)
        if total == 0:
            return []
        state_of: BatchStates
        if callable(states):
            state_of = states
        else:
            fixed = list(states) if states is not None else [None] * total
            if len(fixed) != total:
                raise ValueError(f"{len(fixed)} states for {total} actions")

            def fixed_states(_executed: Sequence[bool]) -> Sequence[Mapping[str, Any] | None]:
                return fixed

            state_of = fixed_states
        controls, base_counts = self.controls_and_counts_many(session, actions, now)
        guess = _Effect(counted=not dry_run, executed=not dry_run and execute is not None)
        assumed = [guess] * total
        counted: dict[str, int] = dict.fromkeys(base_counts, 0)  # allowed so far in the batch, by actor
        outcomes: list[Outcome] = []
        position = 0
        while position < total:
            stop = min(total, position + max(1, self.batch_size))
            current = list(state_of([effect.executed for effect in assumed]))
            if len(current) != total:
                raise ValueError(f"states gave {len(current)} states for {total} actions")
            docs: list[dict[str, Any]] = []
            running = dict(counted)
            for index in range(position, stop):
                action = actions[index]
                seen = base_counts[action.actor.id]
                before = running[action.actor.id]
                docs.append(
                    build_input(
                        action,
                        state=current[index],
                        caller=caller,
                        controls=controls[index],
                        counts={w: n + before for w, n in seen.items()},
                        mode=self.mode,
                        now=now,
                    )
                )
                running[action.actor.id] += assumed[index].counted
            answers = self._resolve_many(docs)
            next_position = stop
            for offset, (resolution, opa_id) in enumerate(answers):
                index = position + offset
                action = actions[index]
                outcome = self._recorded_outcome(
                    session, action, docs[offset], resolution, opa_id, caller, dry_run, execute, note, now
                )
                outcome.record.latency_ms = (time.perf_counter() - started) * 1000.0
                outcomes.append(outcome)
                actual = _Effect(counted=outcome.allow and not dry_run, executed=outcome.executed)
                counted[action.actor.id] += actual.counted
                if actual != assumed[index]:
                    # The inputs after this one were built on the wrong guess: ask again from the
                    # next one, guessing what this round answered (and, past it, its last answer).
                    later = [self._guess(r, dry_run, execute) for r, _ in answers[offset + 1 :]]
                    assumed[index] = actual
                    assumed[index + 1 : stop] = later
                    assumed[stop:] = [later[-1] if later else actual] * (total - stop)
                    next_position = index + 1
                    break
            position = next_position
        session.execute(insert(Decision), [{c: getattr(o.record, c) for c in _DECISION_COLUMNS} for o in outcomes])
        for actor_id, allowed in counted.items():
            if allowed:
                session.execute(_COUNT_ACTIONS, count_action_params(actor_id, now) | {"n": allowed})
        if self.shadow is not None:
            for outcome in outcomes:
                if outcome.record.error_code is None:
                    self.shadow(outcome.record)
        metrics().decided_many(
            ((o.record.action_type, o.record.outcome) for o in outcomes), time.perf_counter() - started
        )
        return outcomes

    @staticmethod
    def _guess(resolution: Resolution, dry_run: bool, execute: Executor | None) -> _Effect:
        counted = resolution.allow and not dry_run
        parked = "require_approval" in resolution.obligations or resolution.obligations.get("shadow") is True
        return _Effect(counted, counted and execute is not None and not parked)

    def record_fields(
        self,
        action: Action,
        input_doc: dict[str, Any],
        resolution: Resolution,
        opa_decision_id: str | None,
        caller: Actor | None,
        dry_run: bool,
        note: str | None,
        now: datetime,
    ) -> dict[str, Any]:
        """The column values of the decision record of one resolved action, before it runs:
        shared by `decide`, `decide_many` and the decision API's direct path
        (server/governance/direct.py), so that every path records a decision the same way."""
        allow, obligations, clamped, error_code = (
            resolution.allow,
            resolution.obligations,
            resolution.clamped,
            resolution.error_code,
        )
        outcome = "error" if error_code else ("denied" if not allow else ("clamped" if clamped else "allowed"))
        if allow and not dry_run:
            if obligations.get("shadow") is True:
                outcome = "shadow"
            elif "require_approval" in obligations:
                outcome = "pending_approval"
        return {
            "id": new_id("dec"),
            "created_at": now,
            "action_type": action.type,
            "actor_id": action.actor.id,
            "actor_kind": action.actor.kind,
            "caller_id": caller.id if caller else None,
            "target_kind": action.target.kind if action.target else None,
            "target_id": action.target.id if action.target else None,
            "allow": allow,
            "outcome": outcome,
            "dry_run": dry_run,
            "mode": self.mode,
            "reasons": resolution.reasons,
            "obligations": json_safe(obligations),
            "input": input_doc,
            "result": json_safe(resolution.result) if isinstance(resolution.result, dict) else None,
            "policy_revision": resolution.revision,
            "error_code": error_code,
            "latency_ms": 0.0,
            "executed": False,
            "note": note,
            "opa_decision_id": opa_decision_id,
        }

    def _recorded_outcome(
        self,
        session: Session,
        action: Action,
        input_doc: dict[str, Any],
        resolution: Resolution,
        opa_decision_id: str | None,
        caller: Actor | None,
        dry_run: bool,
        execute: Executor | None,
        note: str | None,
        now: datetime,
    ) -> Outcome:
        """The Outcome and Decision record of one resolved action, executed when allowed: the part
        shared by `decide` and `decide_many` (the count and the insert are theirs: decide_many
        batches them)."""
        record = Decision(
            **self.record_fields(action, input_doc, resolution, opa_decision_id, caller, dry_run, note, now)
        )
        outcome = Outcome(
            record=record,
            allow=resolution.allow,
            reasons=resolution.reasons,
            obligations=resolution.obligations,
            params=resolution.params,
            revision=resolution.revision,
        )
        if record.outcome in ("allowed", "clamped") and not dry_run and execute is not None:
            self._execute(session, outcome, execute)
        return outcome
