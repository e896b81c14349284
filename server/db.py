"""Database plumbing: the declarative base, one engine per app, and the unit of work that is the
single commit point of every request and every scheduled job."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, MetaData, create_engine, event, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class WalCheckpointer:
    """Checkpoints a SQLite WAL database from a background thread, so that no request pays for it.

    With SQLite's default `wal_autocheckpoint` (1,000 pages) the transaction that crosses the
    threshold copies the whole WAL into the database file before it returns: one request in a few
    hundred waits several milliseconds (measured: the decision path's p99 went from 0.6 ms to
    4.4 ms). Connections of an engine with a checkpointer turn autocheckpoint off; this thread
    runs `PRAGMA wal_checkpoint(PASSIVE)` every `interval` seconds on its own connection instead.
    PASSIVE never waits for readers or writers and does not hold the write lock, so writers go on
    while it copies. One thread per process (gunicorn forks workers: the thread starts with the
    process's first connection); several processes checkpointing the same file are safe, SQLite
    lets one at a time do it. A process that stops leaves at most `interval` seconds of WAL for
    the next checkpoint (or for SQLite's own checkpoint when the last connection closes)."""

    def __init__(self, path: str, interval: float = 0.5) -> None:
        self.path = path
        self.interval = interval
        self._pid: int | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def ensure_started(self) -> None:
        """Start the thread in this process unless it runs already (called on every connect)."""
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._lock:
            if self._pid == pid:
                return
            self._stop = threading.Event()  # a forked child must not share the parent's event
            self._thread = threading.Thread(target=self._run, name="sqlite-wal-checkpoint", daemon=True)
            self._pid = pid
            self._thread.start()

    def checkpoint(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (busy, frames in the WAL, frames checkpointed)."""
        busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.runs += 1
        return int(busy), int(frames), int(done)

    def _run(self) -> None:
        stop = self._stop
        conn: sqlite3.Connection | None = None
        warned = False
        try:
            while not stop.wait(self.interval):
                try:
                    if conn is None:
                        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
                    _, frames, done = self.checkpoint(conn)
                except sqlite3.Error as exc:  # locked, being reset or not there yet: next round
                    log.debug("WAL checkpoint of %s skipped: %s", self.path, exc)
                    continue
                # A long reader keeps frames from being copied; say so once while it lasts.
                lagging = frames - done > 50_000
                if lagging and not warned:
                    log.warning("WAL of %s holds %d frames a reader keeps from the database file", self.path, frames)
                warned = lagging
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            thread.join(timeout=5)
        self._pid = None


def sqlite_file(url: str) -> str | None:
    """The database file of a file-backed SQLite URL, else None."""
    if not url.startswith("sqlite") or url in ("sqlite://", "sqlite:///:memory:"):
        return None
    return make_url(url).database or None


def make_engine(url: str, *, checkpointer: WalCheckpointer | None = None) -> Engine:
    """An engine tuned per backend: SQLite in WAL mode with a busy timeout, PostgreSQL pooled.

    With a `checkpointer` (file-backed SQLite), the engine's connections leave WAL checkpoints to
    it instead of running them inside the transaction that crosses SQLite's threshold."""
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=StaticPool if memory else None,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Autocommit off in the driver; SQLAlchemy emits BEGIN itself so that
            # BEGIN IMMEDIATE below takes the write lock up front (no upgrade deadlocks).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            if checkpointer is not None and not memory:
                cur.execute("PRAGMA wal_autocheckpoint=0")
                checkpointer.ensure_started()
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write", True) else "BEGIN")

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


class Database:
    """The app's engine and session factory, bound with `init_app`-style `configure`."""

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self.checkpointer: WalCheckpointer | None = None

    def configure(self, url: str) -> None:
        self.dispose()
        path = sqlite_file(url)
        self.checkpointer = WalCheckpointer(path) if path else None
        self._engine = make_engine(url, checkpointer=self.checkpointer)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("database is not configured")
        return self._engine

    def session(self) -> Session:
        if self._sessions is None:
            raise RuntimeError("database is not configured")
        return self._sessions()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only session, rolled back at the end: on SQLite a plain BEGIN, so that a reader
        polling every fraction of a second never takes the write lock (BEGIN IMMEDIATE) that the
        click writers and every other writer need."""
        with self.engine.connect() as conn:
            conn.info["write"] = False
            try:
                with Session(bind=conn) as session:
                    yield session
                    session.rollback()
            finally:
                conn.info["write"] = True

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        with UnitOfWork(self.session()) as uow:
            yield uow

    def dispose(self) -> None:
        if self._engine is not None:
            if self.checkpointer is not None:
                self.checkpointer.stop()
            self._engine.dispose()


class UnitOfWork:
    """One transaction: everything inside is rolled back unless `commit()` is called."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.committed = False

    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if not self.committed:
                self.session.rollback()
        finally:
            self.session.close()

    def commit(self) -> None:
        self.session.commit()
        self.committed = True

    def rollback(self) -> None:
        self.session.rollback()


_SCALARS = (str, int, float, bool, type(None))


def json_safe(value: Any) -> Any:
    """Return `value` as something JSON columns accept (tuples to lists, datetimes to ISO)."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
