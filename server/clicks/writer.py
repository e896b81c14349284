"""The buffered click writer: a redirect appends one tuple to an in-memory queue and returns; a
flusher thread per process writes the queue every `CLICK_FLUSH_INTERVAL` (0.2 s) or as soon as
`CLICK_FLUSH_SIZE` (500) clicks wait, in one transaction: a bulk insert of the clicks and one
upsert per (link, offer, hour) of the `arm_stats` counters (human clicks in `clicks`, bot clicks
in `bot_clicks`; fallback clicks and clicks routed nowhere are not learning evidence).

Bounds: at most `CLICK_BUFFER_MAX` (100 000) clicks wait. While the database is away the writer
retries with back-off and keeps the clicks; beyond the bound new clicks are dropped (counted in
`dropped`, logged) rather than slowing the redirects down. `close()` (gunicorn's worker_exit hook,
and atexit) stops the thread and flushes what is left; a hard kill (SIGKILL, power loss) loses at
most the clicks of the last flush interval, or the whole buffer while the database is away.

Metrics: the redirect itself makes no metric call. The flusher thread adds what changed in its
counters (clicks answered, buffered, written, dropped, failed flushes, pending) to the process's
Prometheus counters after each flush (`report`): a few increments per 0.2 s, not per click."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import insert, text

from server.db import Database
from server.links.models import Click
from server.observability.metrics import metrics

log = logging.getLogger(__name__)

_ARM_CLICKS = text(
    """
    INSERT INTO arm_stats (link_id, offer_id, hour, clicks, bot_clicks, conversions, revenue)
    VALUES (:link_id, :offer_id, :hour, :clicks, :bot_clicks, 0, 0)
    ON CONFLICT (link_id, offer_id, hour) DO UPDATE
       SET clicks = arm_stats.clicks + excluded.clicks, bot_clicks = arm_stats.bot_clicks + excluded.bot_clicks
    """
)
_MAX_BACKOFF = 5.0


class ClickRecord(NamedTuple):
    """One click as the redirect saw it; `created` is epoch seconds (converted when written)."""

    id: str
    link_id: str
    offer_id: str | None
    allocation_id: int | None
    created: float
    probability: float
    is_fallback: bool
    is_bot: bool
    bot_reason: str | None
    country: str | None
    device: str | None
    ip_hash: str | None
    user_agent: str | None
    subs: dict[str, str]

    @property
    def learned(self) -> bool:
        """Counted as a human click in the learning counters (arm_stats.clicks)."""
        return self.offer_id is not None and not self.is_fallback and not self.is_bot


def hour_of(epoch: float) -> int:
    seconds = int(epoch)
    return seconds - seconds % 3600


_COLUMNS = (
    "id",
    "link_id",
    "offer_id",
    "allocation_id",
    "created_at",
    "probability",
    "is_fallback",
    "is_bot",
    "bot_reason",
    "country",
    "device",
    "ip_hash",
    "user_agent",
    "subs",
)
# The driver's own executemany, on rows converted once here: SQLAlchemy's per-row bind
# processing would hold the GIL (and delay the redirects of this worker) twice as long.
_INSERT = {
    "sqlite": (
        "INSERT INTO clicks (id, link_id, offer_id, allocation_id, created_at, probability, is_fallback, is_bot, "
        "bot_reason, country, device, ip_hash, user_agent, subs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    "postgresql": (
        "INSERT INTO clicks (id, link_id, offer_id, allocation_id, created_at, probability, is_fallback, is_bot, "
        "bot_reason, country, device, ip_hash, user_agent, subs) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json)"
    ),
}
# SQLAlchemy's storage format for DateTime on SQLite (what the ORM reads back).
_SQLITE_SECOND = "%Y-%m-%d %H:%M:%S"


@lru_cache(maxsize=8)
def _sqlite_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime(_SQLITE_SECOND)


def _row(c: ClickRecord, sqlite: bool) -> tuple[Any, ...]:
    created: Any
    if sqlite:  # "YYYY-MM-DD HH:MM:SS.ffffff", the second's part formatted once per second
        second = int(c.created)
        created = f"{_sqlite_second(second)}.{min(round((c.created - second) * 1e6), 999999):06d}"
    else:
        created = datetime.fromtimestamp(c.created, UTC)
    subs = json.dumps(c.subs, separators=(",", ":")) if c.subs else "{}"
    return (
        c.id,
        c.link_id,
        c.offer_id,
        c.allocation_id,
        created,
        c.probability,
        int(c.is_fallback) if sqlite else c.is_fallback,
        int(c.is_bot) if sqlite else c.is_bot,
        c.bot_reason,
        c.country,
        c.device,
        c.ip_hash,
        c.user_agent,
        subs,
    )


def write_clicks(db: Database, batch: list[ClickRecord]) -> None:
    """Insert `batch` and bump the hourly arm counters, in one transaction."""
    dialect = db.engine.dialect.name
    sqlite = dialect == "sqlite"
    rows = [_row(c, sqlite) for c in batch]
    counters: dict[tuple[str, str, int], list[int]] = {}
    for c in batch:
        if c.offer_id is None or c.is_fallback:
            continue
        counts = counters.setdefault((c.link_id, c.offer_id, hour_of(c.created)), [0, 0])
        counts[1 if c.is_bot else 0] += 1
    # Sorted so that two processes flushing at once take the counter rows' locks in one order.
    stats = [
        {"link_id": link, "offer_id": offer, "hour": hour, "clicks": n[0], "bot_clicks": n[1]}
        for (link, offer, hour), n in sorted(counters.items())
    ]
    with db.engine.begin() as conn:
        if dialect in _INSERT:
            conn.exec_driver_sql(_INSERT[dialect], rows)
        else:  # another backend: SQLAlchemy's portable bulk insert
            portable = [{**dict(zip(_COLUMNS, _row(c, False), strict=True)), "subs": c.subs} for c in batch]
            conn.execute(insert(Click), portable)
        if stats:
            conn.execute(_ARM_CLICKS, stats)


class _ClickCounts(NamedTuple):
    answered: int
    buffered: int
    written: int
    dropped: int
    failures: int
    pending: int


class ClickWriter:
    """Queue + flusher thread; `add` never blocks and never touches the database."""

    def __init__(
        self, db: Database, *, flush_interval: float = 0.2, flush_size: int = 500, max_buffered: int = 100_000
    ) -> None:
        self.db = db
        self.flush_interval = flush_interval
        self.flush_size = flush_size
        self.max_buffered = max_buffered
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self._queue: deque[ClickRecord] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_drop_log = 0.0
        self._reported = _ClickCounts(0, 0, 0, 0, 0, 0)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def add(self, click: ClickRecord) -> bool:
        """Queue one click (O(1), no I/O). False when the buffer is full and the click is dropped."""
        queue = self._queue
        if len(queue) >= self.max_buffered:
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log > 10:
                self._last_drop_log = now
                log.error("click buffer full (%d): %d clicks dropped so far", self.max_buffered, self.dropped)
            return False
        queue.append(click)
        if len(queue) >= self.flush_size and not self._wake.is_set():
            self._wake.set()
        return True

    def flush(self) -> int:
        """Write everything queued now; returns how many clicks were written (0 on failure,
        in which case they are back in the queue)."""
        with self._flush_lock:
            queue = self._queue
            n = len(queue)
            if n == 0:
                return 0
            batch = [queue.popleft() for _ in range(n)]
            try:
                write_clicks(self.db, batch)
            except Exception:
                self.failures += 1
                log.exception("writing %d clicks failed; they stay queued", len(batch))
                queue.extendleft(reversed(batch))
                return 0
            self.written += n
            return n

    def counts(self) -> _ClickCounts:
        """Cumulative counts of this writer. Buffered = written + pending: both change only under
        the flush lock, so the sum never goes back (a failed batch returns to the queue)."""
        with self._flush_lock:
            pending = len(self._queue)
            written = self.written
            failures = self.failures
        dropped = self.dropped
        buffered = written + pending
        return _ClickCounts(buffered + dropped, buffered, written, dropped, failures, pending)

    def report(self) -> None:
        """Add what changed since the last report to the process's click metrics."""
        now = self.counts()
        last, self._reported = self._reported, now
        if now != last:
            metrics().clicks_reported(**{k: getattr(now, k) - getattr(last, k) for k in _ClickCounts._fields})

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="smartlinks-click-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = self.flush_interval
        while not self._stop.is_set():
            self._wake.wait(backoff)
            self._wake.clear()
            if self._stop.is_set():
                break
            if self.flush() == 0 and self._queue:
                backoff = min(backoff * 2, _MAX_BACKOFF)  # the database is away: retry, less often
            else:
                backoff = self.flush_interval
            self.report()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is left (retrying until `timeout`)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout)
        deadline = time.monotonic() + timeout
        while self._queue:
            if self.flush() == 0 and self._queue:
                if time.monotonic() >= deadline:
                    log.error("shutting down with %d clicks not written", len(self._queue))
                    break
                time.sleep(0.2)
        self.report()
