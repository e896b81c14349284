"""A named lease in the `job_leases` table: which process runs the autopilot's scheduled jobs
when several share one database.

* `acquire()` is one atomic upsert: insert the lease, or take it over when it is ours or has
  expired (`ON CONFLICT (name) DO UPDATE ... WHERE owner = me OR expires_at < now`), on SQLite
  and PostgreSQL alike; a second statement in the same transaction reads who holds it.
* The holder renews it (heartbeat) well within its time to live; a holder that dies loses it
  when it expires, and another process takes over on its next attempt.
* Expiry compares times written by each process's clock: hosts sharing a PostgreSQL database
  need synchronised clocks (NTP) to within a fraction of the time to live. As a second guard on
  PostgreSQL, `exclusive()` takes a session advisory lock (`pg_try_advisory_lock`) for the
  duration of a run, so two runs can never overlap even with skewed clocks; it is released when
  the run ends or its connection dies."""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.db import Database
from server.links.models import JobLease


def default_owner() -> str:
    """host:pid:random, unique per process start."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class LeaseInfo:
    name: str
    owner: str
    expires_at: datetime
    heartbeat_at: datetime

    def alive(self, now: datetime) -> bool:
        return self.expires_at > now


class Lease:
    def __init__(
        self,
        db: Database,
        name: str,
        owner: str,
        ttl: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.name = name
        self.owner = owner
        self.ttl = ttl
        self.clock = clock

    def acquire(self) -> bool:
        """Take or renew the lease; True when this owner holds it afterwards."""
        now = self.clock()
        values = {
            "name": self.name,
            "owner": self.owner,
            "expires_at": now + timedelta(seconds=self.ttl),
            "heartbeat_at": now,
        }
        engine = self.db.engine
        insert: Any = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        stmt = insert(JobLease).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={"owner": stmt.excluded.owner, "expires_at": stmt.excluded.expires_at, "heartbeat_at": now},
            where=or_(JobLease.owner == self.owner, JobLease.expires_at < now),
        )
        with engine.begin() as conn:
            conn.execute(stmt)
            holder = conn.execute(select(JobLease.owner).where(JobLease.name == self.name)).scalar()
        return holder == self.owner

    def release(self) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(delete(JobLease).where(JobLease.name == self.name, JobLease.owner == self.owner))

    @contextmanager
    def exclusive(self) -> Iterator[bool]:
        """On PostgreSQL, hold an advisory lock named after the lease while the block runs
        (yields False when another session holds it); elsewhere yields True."""
        engine = self.db.engine
        if engine.dialect.name != "postgresql":
            yield True
            return
        key = int.from_bytes(hashlib.sha256(f"smartlinks:{self.name}".encode()).digest()[:8], "big", signed=True)
        with engine.connect() as conn:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar())
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    conn.commit()


def leases(session: Session) -> list[LeaseInfo]:
    return [
        LeaseInfo(row.name, row.owner, row.expires_at, row.heartbeat_at)
        for row in session.scalars(select(JobLease).order_by(JobLease.name))
    ]
