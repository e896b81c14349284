"""Shadow evaluation: every live decision is asked again of the shadow sidecar (which runs the
shadow version, fed by the bundle server) and the answer recorded in policy_shadow_results,
never enforced.

The gateway hands each recorded decision to `ShadowEvaluator.__call__` after its own answer: a
non-blocking put on a bounded queue (a few microseconds; see docs/benchmarks.md). One daemon
thread per process drains it: it asks the shadow sidecar, compares with the primary answer and
writes results in batches in its own transactions. When the queue is full (the shadow sidecar
is slow or down) decisions are skipped and counted, never delayed. The thread starts with the
first decision, not in the app factory, and re-reads which version is in shadow every second;
while none is, decisions are not queued at all."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from server.db import Database, utcnow
from server.governance.gateway import DECISION_PATH
from server.governance.models import Decision
from server.policies.impact import verdict
from server.policies.models import SHADOW, PolicyVersion, ShadowResult
from server.policy.opa_client import OpaClient, OpaError

log = logging.getLogger(__name__)

BATCH = 200
FLUSH_SECONDS = 0.5
REFRESH_SECONDS = 1.0


@dataclass(frozen=True)
class Pending:
    decision_id: str
    action_type: str
    input: Any
    result: Any
    revision: str | None
    queued_at: float


class ShadowEvaluator:
    """The gateway's shadow hook for one process (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        opa_url: str,
        *,
        timeout: float = 1.0,
        queue_size: int = 10_000,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self.db = db
        self.opa = OpaClient(opa_url, connect_timeout=0.25, timeout=timeout)
        self.refresh_seconds = refresh_seconds
        self.revision: str | None = None
        self.skipped = 0  # queue full
        self.stale = 0  # the shadow sidecar did not run the shadow version yet
        self.evaluated = 0
        self._queue: queue.Queue[Pending] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()

    # -- the hook (request thread) ------------------------------------------------------------
    def __call__(self, record: Decision) -> None:
        if self._thread is None:
            self.start()
        if self.revision is None or not isinstance(record.result, dict):
            return
        try:
            self._queue.put_nowait(
                Pending(
                    record.id,
                    record.action_type,
                    record.input,
                    record.result,
                    record.policy_revision,
                    time.monotonic(),
                )
            )
            self._idle.clear()
        except queue.Full:
            self.skipped += 1

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            # No database access here: the hook runs inside the caller's transaction (on SQLite
            # a second transaction in the same thread would wait for the first one's lock).
            thread = threading.Thread(target=self._run, name="policy-shadow", daemon=True)
            self._thread = thread
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._thread = None
        self.opa.close()

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queued decision is evaluated and written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.wait(0.05) and self._queue.empty():
                return True
        return False

    # -- the worker thread ----------------------------------------------------------------------
    def _refresh(self) -> None:
        try:
            with self.db.unit_of_work() as uow:
                self.revision = uow.session.scalar(
                    select(PolicyVersion.revision).where(PolicyVersion.status == SHADOW).limit(1)
                )
        except Exception:  # the database is down: keep the last answer, try again later
            log.exception("cannot read the shadow version")

    def _run(self) -> None:
        next_refresh = time.monotonic()
        batch: list[ShadowResult] = []
        last_flush = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_refresh:
                self._refresh()
                next_refresh = now + self.refresh_seconds
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                item = None
            if item is not None:
                result = self._evaluate(item)
                if result is not None:
                    batch.append(result)
            if batch and (len(batch) >= BATCH or time.monotonic() - last_flush >= FLUSH_SECONDS or item is None):
                self._flush(batch)
                batch = []
                last_flush = time.monotonic()
            if item is None and not batch and self._queue.empty():
                self._idle.set()
        if batch:
            self._flush(batch)

    def _evaluate(self, item: Pending) -> ShadowResult | None:
        expected = self.revision
        if expected is None:
            return None
        started = time.perf_counter()
        error: str | None = None
        try:
            answer = self.opa.query(DECISION_PATH, item.input)
            shadow_result: Any = answer.result
            if answer.revision != expected:
                self.stale += 1
                return None
        except OpaError as exc:
            shadow_result, error = exc, exc.code
        latency = (time.perf_counter() - started) * 1000.0
        primary, shadow = verdict(item.result), verdict(shadow_result)
        self.evaluated += 1
        return ShadowResult(
            decision_id=item.decision_id,
            created_at=utcnow(),
            action_type=item.action_type,
            active_revision=item.revision,
            shadow_revision=expected,
            active_allow=primary.allow,
            shadow_allow=None if error else shadow.allow,
            agree=error is None and primary.allow == shadow.allow and primary.reasons == shadow.reasons,
            active_reasons=sorted(primary.reasons),
            shadow_reasons=sorted(shadow.reasons),
            shadow_result=shadow_result if isinstance(shadow_result, dict) else None,
            error=error,
            latency_ms=latency,
        )

    def _flush(self, batch: list[ShadowResult]) -> None:
        try:
            with self.db.unit_of_work() as uow:
                uow.session.add_all(batch)
                uow.commit()
        except Exception:
            log.exception("could not record %d shadow results", len(batch))


def report(session: Any, revision: str | None, *, limit: int = 50) -> dict[str, Any]:
    """Agreement of the shadow `revision` with the enforced answers, and the latest disagreements."""
    from sqlalchemy import and_, func, or_

    if revision is None:
        return {
            "revision": None,
            "total": 0,
            "agree": 0,
            "allow_to_deny": 0,
            "deny_to_allow": 0,
            "reasons_differ": 0,
            "errors": 0,
            "by_action": {},
            "disagreements": [],
        }
    rows = session.execute(
        select(
            ShadowResult.action_type,
            ShadowResult.agree,
            ShadowResult.active_allow,
            ShadowResult.shadow_allow,
            ShadowResult.error,
            func.count(),
        )
        .where(ShadowResult.shadow_revision == revision)
        .group_by(
            ShadowResult.action_type,
            ShadowResult.agree,
            ShadowResult.active_allow,
            ShadowResult.shadow_allow,
            ShadowResult.error,
        )
    ).all()
    out: dict[str, Any] = {
        "revision": revision,
        "total": 0,
        "agree": 0,
        "allow_to_deny": 0,
        "deny_to_allow": 0,
        "reasons_differ": 0,
        "errors": 0,
        "by_action": {},
    }
    for action_type, agree, active_allow, shadow_allow, error, n in rows:
        per = out["by_action"].setdefault(
            action_type,
            {"total": 0, "agree": 0, "allow_to_deny": 0, "deny_to_allow": 0, "reasons_differ": 0, "errors": 0},
        )
        if error:
            key = "errors"
        elif agree:
            key = "agree"
        elif active_allow and shadow_allow is False:
            key = "allow_to_deny"
        elif not active_allow and shadow_allow:
            key = "deny_to_allow"
        else:
            key = "reasons_differ"
        for target in (out, per):
            target["total"] += n
            target[key] += n
    out["disagreements"] = [
        r.to_dict()
        for r in session.scalars(
            select(ShadowResult)
            .where(
                ShadowResult.shadow_revision == revision,
                or_(ShadowResult.agree.is_(False), and_(ShadowResult.error.is_not(None))),
            )
            .order_by(ShadowResult.id.desc())
            .limit(limit)
        )
    ]
    return out


EXTENSION_KEY = "smartlinks.policies.shadow"


def attach(app: Any) -> ShadowEvaluator | None:
    """Give the app's gateway a shadow evaluator when a shadow sidecar is configured
    (OPA_SHADOW_URL; `smartlinks serve` starts one). No thread starts here."""
    from server.extensions import services

    svc = services(app)
    if not svc.settings.opa_shadow_url:
        return None
    evaluator = ShadowEvaluator(svc.db, svc.settings.opa_shadow_url, timeout=max(svc.settings.opa_timeout, 1.0))
    svc.gateway.shadow = evaluator
    app.extensions[EXTENSION_KEY] = evaluator
    return evaluator


def evaluator_of(app: Any) -> ShadowEvaluator | None:
    found = app.extensions.get(EXTENSION_KEY)
    return found if isinstance(found, ShadowEvaluator) else None
