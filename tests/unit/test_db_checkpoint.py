"""SQLite WAL checkpoints run in a background thread, never inside a request's transaction."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa

from server.db import Database, make_engine, sqlite_file


def test_sqlite_file_recognises_file_urls_only(tmp_path: Path) -> None:
    assert sqlite_file(f"sqlite:///{tmp_path / 'a.db'}") == str(tmp_path / "a.db")
    assert sqlite_file("sqlite://") is None
    assert sqlite_file("sqlite:///:memory:") is None
    assert sqlite_file("postgresql+psycopg://u@h/db") is None


def test_writes_are_checkpointed_by_the_background_thread(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    db = Database()
    db.configure(f"sqlite:///{path}")
    try:
        assert db.checkpointer is not None
        with db.engine.begin() as conn:
            # The connections leave checkpoints to the thread.
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
            conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        # 3,000 pages' worth of commits: SQLite's own threshold (1,000 pages) would have
        # checkpointed inside three of these transactions.
        for i in range(1500):
            with db.engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO t (body) VALUES (:b)"), {"b": "x" * 6000 + str(i)})
        deadline = time.monotonic() + 10
        while db.checkpointer.runs < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert db.checkpointer.runs >= 2
        # Everything committed reached the database file itself: a reader that ignores the WAL
        # (immutable) sees every row.
        deadline = time.monotonic() + 10
        while True:
            reader = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
            try:
                rows = reader.execute("SELECT count(*) FROM t").fetchone()[0]
            finally:
                reader.close()
            if rows == 1500 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert rows == 1500
    finally:
        db.dispose()
    assert db.checkpointer is not None
    thread = db.checkpointer._thread
    assert thread is not None and not thread.is_alive()


def test_engines_without_a_checkpointer_keep_sqlite_autocheckpoint(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()
