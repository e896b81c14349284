"""One supervisor cycle, end to end (`run_supervisor_cycle`):

1. read the switches, the circuit and the token spend, and build the snapshot (short read);
2. choose the mode: the model, or degraded (forced, no key, token budget spent, circuit open);
3. ask the model, outside any database transaction (a slow model holds no lock);
4. record the cycle (model, prompt by hash with a stored copy, response, tokens, latency, cost),
   update the circuit and the mode (entering or leaving degraded mode raises one alert); when the
   call failed and opened the circuit, the rules take over in this same cycle;
5. validate every proposal strictly and send each through the governance gateway, one
   transaction per proposal: refused ones are recorded as denied `ai.invalid` decisions, allowed
   ones execute, those that need a person wait for approval;
6. check the error rate, the denial rate and the token budget; deliver alerts after commit.

A failure anywhere is recorded and logged; it never stops the autopilot, which runs in its own
jobs, and nothing that was not validated and allowed executes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.ai import rules
from server.ai.anomalies import Thresholds
from server.ai.client import AIClientFactory, ModelCallError, ModelClient, ModelReply
from server.ai.models import AiCycle, AiPrompt, AiProposal
from server.ai.monitor import Limits, check, tokens_today
from server.ai.prompt import MAX_PROPOSALS, Prompt, build_prompt
from server.ai.services import Origin, decide_proposal
from server.ai.snapshot import Snapshot, build_snapshot
from server.ai.state import breaker_of, enter_mode, load_state, store_breaker
from server.ai.validation import Proposal, Rejected, parse_answer, validate_item
from server.config import Settings
from server.db import UnitOfWork
from server.governance.gateway import Gateway
from server.links.models import Campaign, Offer, SmartLink

log = logging.getLogger(__name__)

RECENTLY_DONE = timedelta(hours=6)
TARGET_MODELS: dict[str, type[SmartLink] | type[Offer] | type[Campaign]] = {
    "link": SmartLink,
    "offer": Offer,
    "campaign": Campaign,
}


@dataclass(frozen=True)
class SupervisorConfig:
    circuit_failures: int = 3
    circuit_reset_seconds: float = 300.0
    price_per_1k_input: float = 0.00015
    price_per_1k_output: float = 0.0006
    limits: Limits = field(default_factory=Limits)
    thresholds: Thresholds = field(default_factory=Thresholds)

    @classmethod
    def from_settings(cls, settings: Settings) -> SupervisorConfig:
        return cls(
            circuit_failures=settings.ai_circuit_failures,
            circuit_reset_seconds=settings.ai_circuit_reset_seconds,
            price_per_1k_input=settings.ai_price_per_1k_input,
            price_per_1k_output=settings.ai_price_per_1k_output,
            limits=Limits(
                error_rate=settings.ai_error_rate_alert,
                denial_rate=settings.ai_denial_rate_alert,
                daily_token_budget=settings.ai_daily_token_budget,
            ),
        )

    def cost(self, reply: ModelReply) -> float:
        return (
            reply.input_tokens / 1000 * self.price_per_1k_input + reply.output_tokens / 1000 * self.price_per_1k_output
        )


class ClientFactory(Protocol):
    """What the cycle needs from the client factory (AIClientFactory, or a test's)."""

    @property
    def model(self) -> str: ...

    def __call__(self) -> ModelClient | None: ...


@dataclass
class CycleReport:
    cycle_id: int | None
    mode: str  # model | degraded | disabled
    degraded_reason: str | None
    status: str  # ok | malformed | error | skipped
    proposals: list[AiProposal] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class _Plan:
    """What the read step found."""

    snapshot: Snapshot
    degraded_reason: str | None
    client: ModelClient | None
    prompt: Prompt | None
    pending: set[tuple[str, str | None]]
    recent: set[tuple[str, str | None]]


def _keys(session: Session, now: datetime) -> tuple[set[tuple[str, str | None]], set[tuple[str, str | None]]]:
    """(action, target id) of proposals waiting for a person, and of those executed recently."""
    pending = {
        (str(a), t)
        for a, t in session.execute(
            select(AiProposal.action_type, AiProposal.target_id).where(AiProposal.status == "pending_approval")
        )
    }
    recent = {
        (str(a), t)
        for a, t in session.execute(
            select(AiProposal.action_type, AiProposal.target_id).where(
                AiProposal.executed_at >= now - RECENTLY_DONE, AiProposal.executed.is_(True)
            )
        )
    }
    return pending, recent


def _plan(session: Session, client_factory: ClientFactory, config: SupervisorConfig, now: datetime) -> _Plan | None:
    state = load_state(session)
    if not state.enabled:
        enter_mode(session, "disabled", "disabled", now)
        return None
    snapshot = build_snapshot(session, now, config.thresholds)
    pending, recent = _keys(session, now)
    client = client_factory()
    reason: str | None = None
    if state.forced_degraded:
        reason = "forced"
    elif client is None:
        reason = "no_api_key"
    elif tokens_today(session, now) >= config.limits.daily_token_budget:
        reason = "token_budget"
    elif not breaker_of(state).may_call(now, config.circuit_reset_seconds):
        reason = "circuit_open"
    prompt = build_prompt(snapshot.data) if reason is None else None
    return _Plan(snapshot, reason, client, prompt, pending, recent)


def _store_prompt(session: Session, prompt: Prompt, now: datetime) -> None:
    """Store the prompt once; another process storing the same one at the same time is fine."""
    if session.get(AiPrompt, prompt.sha256) is not None:
        return
    try:
        with session.begin_nested():
            session.add(AiPrompt(sha256=prompt.sha256, text=prompt.text, created_at=now))
    except IntegrityError:
        pass


def _record(
    session: Session,
    plan: _Plan,
    reply: ModelReply | None,
    failure: ModelCallError | None,
    config: SupervisorConfig,
    now: datetime,
    trigger: str,
    owner: str | None,
    model: str,
) -> tuple[AiCycle, list[object], str, str | None]:
    """Record the cycle and update the circuit and the mode; returns the items to judge, their
    source and the mode's degraded reason."""
    state = load_state(session, for_update=True)
    breaker = breaker_of(state)
    reason = plan.degraded_reason
    cycle = AiCycle(started_at=now, trigger=trigger, owner=owner, status="ok", model=None, attempts=0)
    items: list[object] = []
    if plan.prompt is not None:
        _store_prompt(session, plan.prompt, now)
        cycle.prompt_sha256, cycle.model = plan.prompt.sha256, model
        if failure is not None:
            breaker = breaker.probing(now, config.circuit_reset_seconds).failed(now, config.circuit_failures)
            store_breaker(state, breaker, error=f"{failure.kind}: {failure.message}")
            cycle.status, cycle.error_kind, cycle.error = "error", failure.kind, failure.message[:2000]
            cycle.attempts, cycle.latency_ms = failure.attempts, failure.latency_ms
            if breaker.is_open:
                reason = "circuit_open"
        elif reply is not None:
            store_breaker(state, breaker.succeeded())
            cycle.model, cycle.response = reply.model, reply.content
            cycle.attempts, cycle.latency_ms = reply.attempts, reply.latency_ms
            cycle.input_tokens, cycle.output_tokens, cycle.cost = (
                reply.input_tokens,
                reply.output_tokens,
                config.cost(reply),
            )
            parsed = parse_answer(reply.content)
            error = parsed.error
            if reply.refusal:
                error = f"the model refused: {reply.refusal[:300]}"
            elif reply.finish_reason == "length":
                error = "the answer was cut off at the token limit"
            if error is not None:
                cycle.status, cycle.error_kind, cycle.error = "malformed", "malformed", error
            else:
                items = parsed.items
    cycle.mode = "degraded" if reason else "model"
    cycle.degraded_reason = reason
    source = "model"
    if reason is not None:
        items = list(rules.propose(plan.snapshot, skip=plan.pending | plan.recent, limit=MAX_PROPOSALS))
        source = "rules"
    enter_mode(session, cycle.mode, reason or "model", now)
    cycle.proposals = len(items)
    cycle.finished_at = now
    state.last_cycle_at = now
    session.add(cycle)
    session.flush()
    return cycle, items, source, reason


def _checked(session: Session, raw: object, pending: set[tuple[str, str | None]]) -> Proposal | Rejected:
    """The validator's verdict, then what only the database can tell: does the target exist, and
    does the same action on it already wait for a person."""
    item = validate_item(raw)
    if isinstance(item, Rejected):
        return item
    errors: list[str] = []
    if item.target is not None and session.get(TARGET_MODELS[item.target.kind], item.target.id) is None:
        errors.append(f"no {item.target.kind} with id {item.target.id}")
    if (item.action_type, item.target.id if item.target else None) in pending:
        errors.append("the same action on the same target already waits for approval")
    if errors:
        return Rejected(item.action_type, errors, raw=item.raw, target=item.target, rationale=item.rationale)
    return item


def run_supervisor_cycle(
    session_factory: Callable[[], Session],
    gateway: Gateway,
    client_factory: ClientFactory,
    now: datetime,
    *,
    config: SupervisorConfig | None = None,
    trigger: str = "schedule",
    owner: str | None = None,
    deliver: Callable[[], object] | None = None,
) -> CycleReport:
    """Run one supervisor cycle at `now`; see the module docstring. Never raises for a model or
    policy failure (they are recorded); returns what happened."""
    config = config or (
        SupervisorConfig.from_settings(client_factory.settings)
        if isinstance(client_factory, AIClientFactory)
        else SupervisorConfig()
    )
    with UnitOfWork(session_factory()) as uow:
        plan = _plan(uow.session, client_factory, config, now)
        uow.commit()
    if plan is None:
        return CycleReport(None, "disabled", None, "skipped")

    reply: ModelReply | None = None
    failure: ModelCallError | None = None
    if plan.prompt is not None and plan.client is not None:
        try:
            reply = plan.client.complete(plan.prompt.messages)
        except ModelCallError as exc:
            failure = exc
            log.warning("AI supervisor: the model call failed (%s): %s", exc.kind, exc.message)

    with UnitOfWork(session_factory()) as uow:
        cycle, items, source, reason = _record(
            uow.session, plan, reply, failure, config, now, trigger, owner, client_factory.model
        )
        uow.commit()
    report = CycleReport(cycle.id, cycle.mode, reason, cycle.status, error=cycle.error)

    origin_mode = "degraded" if reason else "model"
    for seq, raw in enumerate(items):
        with UnitOfWork(session_factory()) as uow:
            try:
                item = _checked(uow.session, raw, plan.pending)
                evidence = (
                    plan.snapshot.anomalies_for(item.target.kind, item.target.id)
                    if isinstance(item, Proposal) and item.target is not None
                    else []
                )
                row = decide_proposal(
                    uow.session, gateway, item, Origin(cycle.id, seq, source, origin_mode), now, evidence=evidence
                )
                uow.commit()
                report.proposals.append(row)
                if row.status == "pending_approval" and row.target_id is not None:
                    plan.pending.add((row.action_type, row.target_id))
            except Exception:  # a bug must not stop the other proposals nor the autopilot
                log.exception("AI supervisor: proposal %d of cycle %d could not be decided", seq, cycle.id)

    with UnitOfWork(session_factory()) as uow:
        try:
            report.alerts = check(uow.session, now, config.limits)
            uow.commit()
        except Exception:
            log.exception("AI supervisor: monitoring checks failed")
    if deliver is not None:
        try:
            deliver()
        except Exception:
            log.exception("AI supervisor: alerts could not be delivered now; they are retried later")
    return report
