"""Benchmark: balanced ledger entries a second on SQLite and on PostgreSQL with several concurrent
writers, then every invariant verified (`billing.ledger.verify`) on what they wrote.

Each entry books a conversion (4 postings: advertiser receivable / revenue, commission expense /
affiliate payable), the platform's revenue and expense accounts being written by every entry (the
hot rows a real ledger has). Writers are processes, each with its own connection pool, each
committing either one entry per transaction or batches (`record_entries`: one balance update per
account per batch). PostgreSQL is a throwaway local cluster (tests/support/postgres.py) with
fsync and synchronous_commit back ON (the test helper turns fsync off), or TEST_DATABASE_URL.
Prints entries/s, postings/s, the verification time and the machine's load."""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from billing import accounts  # noqa: E402
from billing.ledger import ensure_account, record_entries, record_entry, verify  # noqa: E402
from billing.rules import EntryRequest, Line  # noqa: E402
from server.db import Database  # noqa: E402
from server.migrate import upgrade  # noqa: E402

CUR = "EUR"


def conversion(writer: int, n: int, affiliates: int, advertisers: int) -> EntryRequest:
    amount = 500 + (n * 37) % 9_500
    commission = amount * 7 // 10
    aff, adv = (writer * 7919 + n) % affiliates, (writer + n) % advertisers
    return EntryRequest(
        f"bench:{writer}:{n}",
        (
            Line.debit(accounts.advertiser_receivable(f"adv_{adv}", CUR).code, amount, CUR),
            Line.credit(accounts.revenue(CUR).code, amount, CUR),
            Line.debit(accounts.commission_expense(CUR).code, commission, CUR),
            Line.credit(accounts.affiliate_payable(f"aff_{aff}", CUR).code, commission, CUR),
        ),
        description="bench conversion",
    )


def setup(url: str, affiliates: int, advertisers: int) -> None:
    upgrade(url)
    db = Database()
    db.configure(url)
    with db.unit_of_work() as uow:
        for spec in [accounts.revenue(CUR), accounts.commission_expense(CUR)]:
            ensure_account(uow.session, spec)
        for i in range(affiliates):
            ensure_account(uow.session, accounts.affiliate_payable(f"aff_{i}", CUR))
        for i in range(advertisers):
            ensure_account(uow.session, accounts.advertiser_receivable(f"adv_{i}", CUR))
        uow.commit()
    db.dispose()


def writer(
    url: str, index: int, count: int, batch: int, affiliates: int, advertisers: int, start: Any, out: Any
) -> None:
    db = Database()
    db.configure(url)
    requests = [conversion(index, n, affiliates, advertisers) for n in range(count)]
    start.wait()
    began = time.perf_counter()
    for offset in range(0, count, batch):
        chunk = requests[offset : offset + batch]
        for attempt in range(20):
            try:
                with db.unit_of_work() as uow:
                    if batch == 1:
                        record_entry(uow.session, chunk[0])
                    else:
                        record_entries(uow.session, chunk)
                    uow.commit()
                break
            except Exception as exc:  # a deadlock or serialisation failure is retried, like a client would
                if attempt == 19 or "deadlock" not in str(exc).lower() and "could not serialize" not in str(exc):
                    raise
    out.put((index, time.perf_counter() - began))
    db.dispose()


def run(url: str, *, writers: int, entries: int, batch: int, affiliates: int, advertisers: int) -> dict[str, Any]:
    per_writer = entries // writers
    ctx = mp.get_context("fork")
    start, out = ctx.Barrier(writers + 1), ctx.Queue()
    procs = [
        ctx.Process(target=writer, args=(url, i, per_writer, batch, affiliates, advertisers, start, out))
        for i in range(writers)
    ]
    for p in procs:
        p.start()
    start.wait()
    began = time.perf_counter()
    for p in procs:
        p.join()
    wall = time.perf_counter() - began
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        raise RuntimeError(f"writers failed: {failed}")
    db = Database()
    db.configure(url)
    t0 = time.perf_counter()
    with db.unit_of_work() as uow:
        report = verify(uow.session)
    verify_s = time.perf_counter() - t0
    db.dispose()
    written = per_writer * writers
    return {
        "writers": writers,
        "batch": batch,
        "entries": written,
        "seconds": round(wall, 3),
        "entries_per_s": round(written / wall),
        "postings_per_s": round(4 * written / wall),
        "verified_entries": report.entries,
        "verify_ok": report.ok,
        "violations": len(report.violations),
        "verify_s": round(verify_s, 2),
    }


@contextlib.contextmanager
def backend(name: str) -> Iterator[tuple[str, str]]:
    if name == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db", "SQLite WAL, synchronous=NORMAL"
        return
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given, "TEST_DATABASE_URL"
        return
    import sqlalchemy as sa

    from tests.support.postgres import create_database

    with durable_cluster() as server:
        engine = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            fsync = conn.execute(sa.text("SHOW fsync")).scalar()
            commit = conn.execute(sa.text("SHOW synchronous_commit")).scalar()
            version = str(conn.execute(sa.text("SHOW server_version")).scalar()).split(" ")[0]
        engine.dispose()
        yield (
            create_database(server, "bench_ledger"),
            (f"PostgreSQL {version}, local cluster, fsync={fsync}, synchronous_commit={commit}"),
        )


@contextlib.contextmanager
def durable_cluster() -> Iterator[str]:
    """A throwaway local cluster with PostgreSQL's durable defaults (fsync and synchronous_commit
    on), unlike the test helper's, which turns fsync off for speed."""
    import shutil
    import subprocess

    from tests.support.postgres import _free_port, _pg_bindir

    bindir = _pg_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries not found: apt-get install postgresql (make test does it)")
    root = Path(tempfile.mkdtemp(prefix="smartlinks-bench-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=100 -c shared_buffers=256MB"
    subprocess.run(
        [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "pg.log"), "-o", options, "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--entries", type=int, default=20_000, help="per configuration")
    parser.add_argument("--batches", default="1,100", help="entries per transaction, comma separated")
    parser.add_argument("--affiliates", type=int, default=1_000)
    parser.add_argument("--advertisers", type=int, default=50)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}")
    rows = []
    for name in args.backends.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            with backend(name) as (url, detail):
                setup(url, args.affiliates, args.advertisers)
                result = run(
                    url,
                    writers=args.writers,
                    entries=args.entries,
                    batch=batch,
                    affiliates=args.affiliates,
                    advertisers=args.advertisers,
                )
                result.update(backend=name, detail=detail, load=[round(x, 2) for x in os.getloadavg()])
                print(json.dumps(result))
                rows.append(result)
    print()
    print(
        f"{'backend':<11}{'writers':>8}{'batch':>7}{'entries':>9}{'entries/s':>11}{'postings/s':>12}"
        f"{'verify':>8}{'verify s':>10}"
    )
    for r in rows:
        print(
            f"{r['backend']:<11}{r['writers']:>8}{r['batch']:>7}{r['entries']:>9}{r['entries_per_s']:>11}"
            f"{r['postings_per_s']:>12}{'ok' if r['verify_ok'] else 'FAIL':>8}{r['verify_s']:>10}"
        )
    print(f"load average after: {os.getloadavg()}")
    return 0 if all(r["verify_ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
