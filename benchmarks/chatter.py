"""Chatter of a worker on PostgreSQL: what the engine says to the database besides the work itself.

Counts in process, on the worker's own engine (the submitter has another one): every statement the worker
sends (``SELECT 1`` pings of the pool included), commits, rollbacks and new connections. Three figures:

- per completed one-step job on the normal path (a ``sleep`` step of 0 s in a step child), jobs back to back
  on a 1-slot worker: statements and commits (the worker's periodic lifeline and claims that found nothing are
  not part of a job);
- per running step-second: every transaction of the worker (lifeline included) while two long steps run on a
  2-slot worker, divided by 2 × the seconds measured;
- per idle second: every transaction of a worker with nothing to do.

Run: ``MEDIAMILL_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres python benchmarks/chatter.py``
(``--json`` for JSON). The counts do not depend on the machine's speed, only the seconds do.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repository root

LIFELINE_THREAD = "mm-lifeline"
IDLE_CLAIM = "idle claim"  # a claim that found nothing (waiting for work, not part of a job)


def _is_claim(statement: str) -> bool:
    """A claim of jobs, or of segments of chunked encodes (claimed in the same transaction)."""
    return (statement.startswith("UPDATE media_queue SET") and "picked_up_at" in statement) or \
        (statement.startswith("UPDATE step_segments SET") and "started_at" in statement)


def _is_next_due(statement: str) -> bool:
    """An idle claimer's look at when the next delayed job or segment is due."""
    return statement.startswith(("SELECT min(media_queue.scheduled_time)", "SELECT min(step_segments.scheduled_time)"))


def _key(conn: Any) -> tuple[int, int]:
    return id(conn), threading.get_ident()


class Meter:
    """Counts what an engine sends: statements (pings and COPY included), commits, rollbacks, connections
    opened. Each transaction is booked when it ends, under the name of the thread that ran it (so the periodic
    lifeline can be told apart from a job's own writes), or as an ``idle claim`` when it was a claim that found
    nothing."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.statements: list[tuple[str, str]] = []
        self._tx: dict[tuple[int, int], list[list[Any]]] = {}  # connection → [statement, rows] of its open transaction
        self.max_open = 0
        self._open = 0
        pings = bool(getattr(engine.pool, "_pre_ping", False))
        sa.event.listen(engine, "before_cursor_execute", self._on_execute)
        sa.event.listen(engine, "after_cursor_execute", self._on_executed)
        sa.event.listen(engine, "commit", lambda c: self._end(c, "commit"))
        sa.event.listen(engine, "rollback", lambda c: self._end(c, "rollback"))
        sa.event.listen(engine, "connect", self._on_connect)
        sa.event.listen(engine, "close", self._on_close)
        if pings:  # pool_pre_ping sends a SELECT 1 on each checkout
            sa.event.listen(engine, "checkout", lambda *_a: self._book("SELECT 1 -- pool_pre_ping"))
        else:  # idle connections are pinged before use
            sa.event.listen(engine, "checkout", self._on_checkout)
        self._count_copies()

    def _on_checkout(self, _dbapi: Any, record: Any, _proxy: Any) -> None:
        from mediamill.store import db

        last = record.info.get("mm_checked_in")
        if last is None or time.monotonic() - last >= db.PING_AFTER_IDLE_SECONDS:
            self._book("SELECT 1 -- ping of an idle pooled connection")

    def _count_copies(self) -> None:
        """Many-row inserts go to PostgreSQL as COPY on the raw cursor, unseen by the engine's events."""
        from mediamill.store import bulk

        original = bulk._pg_copy
        meter = self

        def counted(conn: Any, table: Any, rows: Any) -> None:
            if conn.engine is meter.engine:
                with meter._lock:
                    meter._tx.setdefault(_key(conn), []).append([f"COPY {table.name} FROM STDIN", len(rows)])
            original(conn, table, rows)

        bulk._pg_copy = counted
        self._restore = lambda: setattr(bulk, "_pg_copy", original)

    def close(self) -> None:
        self._restore()

    def _book(self, statement: str) -> None:
        name = threading.current_thread().name
        with self._lock:
            self.counts[(name, "statement")] += 1
            self.statements.append((name, statement))

    def _on_execute(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        with self._lock:
            self._tx.setdefault(_key(conn), []).append([statement, None])

    def _on_executed(self, conn: Any, cursor: Any, *_: Any) -> None:
        with self._lock:
            items = self._tx.get(_key(conn))
            if items:
                items[-1][1] = cursor.rowcount

    def _end(self, conn: Any, kind: str) -> None:
        with self._lock:
            items = self._tx.pop(_key(conn), [])
            idle = bool(items) and all(_is_claim(t) or _is_next_due(t) for t, _r in items) and \
                all(r == 0 for t, r in items if _is_claim(t))
            name = IDLE_CLAIM if idle else threading.current_thread().name
            self.counts[(name, "statement")] += len(items)
            self.counts[(name, kind)] += 1
            self.statements.extend((name, t) for t, _r in items)

    def _on_connect(self, *_: Any) -> None:
        with self._lock:
            self._open += 1
            self.max_open = max(self.max_open, self._open)

    def _on_close(self, *_: Any) -> None:
        with self._lock:
            self._open -= 1

    def snapshot(self, *, background: bool = True) -> dict[str, int]:
        """Totals so far: statements, commits, rollbacks, transactions (commits + rollbacks); without
        ``background`` only the jobs' own (no lifeline, no idle claims)."""
        with self._lock:
            got: Counter[str] = Counter()
            for (name, kind), n in self.counts.items():
                if background or name not in (LIFELINE_THREAD, IDLE_CLAIM):
                    got[kind] += n
        return {"statements": got["statement"], "commits": got["commit"], "rollbacks": got["rollback"],
                "transactions": got["commit"] + got["rollback"]}


def _listeners(engine: Engine) -> int:
    """The worker's LISTEN connection, outside the pool."""
    try:
        from mediamill.store.db import listen_available
    except ImportError:  # older code: LISTEN whenever on PostgreSQL
        return 1 if engine.dialect.name == "postgresql" else 0
    return 1 if listen_available(engine) else 0


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def _wait(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def measure(database_url: str, data_dir: Path, *, jobs: int = 20, step_seconds: float = 15.0,
            idle_seconds: float = 10.0, **settings: Any) -> dict[str, Any]:
    """The three figures for one worker on ``database_url`` (an empty, dedicated database)."""
    from mediamill.config import Settings
    from mediamill.engine import operations as ops
    from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
    from mediamill.engine.worker import Worker
    from mediamill.runtime import Runtime
    from mediamill.store import workflow_repo
    from mediamill.workflows.loader import validate_document

    submitter = Runtime(Settings(data_dir=data_dir, database_url=database_url, **settings))
    submitter.prepare()
    with submitter.engine.begin() as conn:
        for code, seconds in (("WF-CHATTER-ONE", 0), ("WF-CHATTER-LONG", step_seconds + 5)):
            workflow_repo.save_version(conn, validate_document(
                {"code": code, "name": code, "type": "generic", "queue": "q",
                 "steps": [{"name": "nap", "action": "sleep", "params": {"seconds": seconds}}]}), author="bench")
    src = data_dir / "in.txt"
    src.write_text("chatter\n")

    def submit(code: str) -> int:
        inp = store_input_file(submitter.storage, src)
        return submit_job(submitter.engine, SubmitRequest(job_input=inp, workflow_code=code)).id

    def status(job_id: int) -> str:
        return str(ops.get_job(submitter.engine, job_id)["status"])

    out: dict[str, Any] = {}
    rt = Runtime(Settings(data_dir=data_dir, database_url=database_url, **settings))
    meter = Meter(rt.engine)
    worker = Worker(rt, pools={"*": 1}).start()
    try:
        warm = submit("WF-CHATTER-ONE")  # the step child imports the actions; the workflow is cached
        _wait(lambda: status(warm) == "completed", 60)
        time.sleep(0.5)
        before, mark, by_thread = meter.snapshot(background=False), len(meter.statements), Counter(meter.counts)
        ids = [submit("WF-CHATTER-ONE") for _ in range(jobs)]
        _wait(lambda: all(status(i) == "completed" for i in ids), 30 + 5 * jobs)
        time.sleep(0.3)
        spent = delta(meter.snapshot(background=False), before)
        out["per_job"] = {k: round(v / jobs, 2) for k, v in spent.items()}
        out["per_job"]["jobs"] = jobs
        out["per_job_threads"] = {f"{name} {kind}": n - by_thread[(name, kind)]
                                  for (name, kind), n in meter.counts.items() if n - by_thread[(name, kind)]}
        kinds = Counter(" ".join(sql.split())[:70] for name, sql in meter.statements[mark:]
                        if name not in (LIFELINE_THREAD, IDLE_CLAIM))
        out["per_job_statements"] = {k: round(n / jobs, 2) for k, n in kinds.most_common()}
        before, began, mark = meter.snapshot(), time.monotonic(), len(meter.statements)
        time.sleep(idle_seconds)
        spent = delta(meter.snapshot(), before)
        took = time.monotonic() - began
        out["idle_per_second"] = {k: round(v / took, 3) for k, v in spent.items()}
        kinds = Counter(" ".join(sql.split())[:70] for _name, sql in meter.statements[mark:])
        out["idle_statements"] = {k: round(n / took, 3) for k, n in kinds.most_common()}
    finally:
        worker.stop(grace=5)
    out["connections_1_slot"] = meter.max_open + _listeners(rt.engine)
    meter.close()
    rt.close()

    rt = Runtime(Settings(data_dir=data_dir, database_url=database_url, **settings))
    meter = Meter(rt.engine)
    worker = Worker(rt, pools={"*": 2}).start()
    try:
        ids = [submit("WF-CHATTER-LONG") for _ in range(2)]
        _wait(lambda: all(i in worker.running for i in ids), 60)
        time.sleep(1.5)  # past the steps' start
        before, began, mark = meter.snapshot(), time.monotonic(), len(meter.statements)
        time.sleep(step_seconds)
        spent = delta(meter.snapshot(), before)
        took = time.monotonic() - began
        out["per_step_second"] = {k: round(v / (2 * took), 3) for k, v in spent.items()}
        out["per_step_second"]["seconds"] = round(took, 1)
        kinds = Counter(" ".join(sql.split())[:70] for _name, sql in meter.statements[mark:])
        out["step_statements"] = {k: round(n / (2 * took), 3) for k, n in kinds.most_common()}
        for i in ids:
            ops.cancel_job(submitter.engine, i, by="bench")
        _wait(lambda: all(status(i) == "cancelled" for i in ids), 30)
    finally:
        worker.stop(grace=5)
    out["connections_2_slots"] = meter.max_open + _listeners(rt.engine)
    meter.close()
    rt.close()
    submitter.close()
    return out


def main() -> None:
    import os

    from tests.helpers import postgres_database

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="also list the statements behind each figure")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--step-seconds", type=float, default=15.0)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--database-url", default="", help="an empty database (default: a fresh one on "
                                                           "MEDIAMILL_TEST_POSTGRES_URL's server)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.database_url:
            figures = measure(args.database_url, Path(tmp), jobs=args.jobs, step_seconds=args.step_seconds,
                              idle_seconds=args.idle_seconds)
        else:
            if not os.environ.get("MEDIAMILL_TEST_POSTGRES_URL"):
                sys.exit("set MEDIAMILL_TEST_POSTGRES_URL or --database-url")
            with postgres_database("mm_chatter") as url:
                figures = measure(url, Path(tmp), jobs=args.jobs, step_seconds=args.step_seconds,
                                  idle_seconds=args.idle_seconds)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for name, values in figures.items():
        if name.endswith("_statements"):
            if args.verbose:
                print(f"{name}:")
                for sql, n in values.items():
                    print(f"    {n:>7}  {sql}")
            continue
        print(f"{name:>20}: {values}")


if __name__ == "__main__":
    main()
