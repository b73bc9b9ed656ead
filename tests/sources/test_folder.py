"""Folder sources in one process: settling, exactly-once intake (also without the election), unreadable
files, patterns, the after policy, and backpressure."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from mediamill import telemetry
from mediamill.engine import operations as ops
from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from mediamill.sources.intake import SourceRunner
from mediamill.sources.manager import SourceManager
from mediamill.store.tables import workflow_jobs, workflow_notifications
from tests.helpers import wait_until

from .support import add_source, files, jobs_by_path, source_row, write_slowly


def _job_sizes(rt: Runtime) -> dict[str, int]:
    with rt.engine.connect() as conn:
        rows = conn.execute(sa.select(workflow_jobs.c.job_metadata, workflow_jobs.c.input_size)
                            .where(workflow_jobs.c.submitted_by.like("source:%"))).all()
    return {meta["source"]["path"]: size for meta, size in rows}


def test_growing_files_are_taken_once_complete(rt: Runtime, inbox: Path, tmp_path: Path) -> None:
    src = add_source(rt, name="inbox", kind="folder", path=str(inbox), settle_seconds=1.0)
    manager = SourceManager(rt).start()
    try:
        writers = [write_slowly(inbox / f"slow-{i}.bin", chunks=8, pause=0.3) for i in range(4)]
        staged = tmp_path / "staged"
        staged.mkdir()
        for i in range(3):
            (staged / f"quick-{i}.bin").write_bytes(os.urandom(1000 + i))
        for f in staged.iterdir():
            shutil.copy(f, inbox / f.name)
        for w in writers:
            w.join()
        wait_until(lambda: len(jobs_by_path(rt)) == 7, timeout=30, message="7 jobs")
        time.sleep(1.5)  # a few more rounds: nothing is taken twice
    finally:
        manager.stop()
    taken = jobs_by_path(rt)
    assert sorted(taken) == sorted([f"slow-{i}.bin" for i in range(4)] + [f"quick-{i}.bin" for i in range(3)])
    assert all(len(ids) == 1 for ids in taken.values()), taken
    sizes = _job_sizes(rt)
    for name, size in sizes.items():  # never half a file: each job has the file's final size
        assert size == (inbox / name).stat().st_size, name
    assert source_row(rt, src["id"])["owner"] is None  # a stopping process hands its lease back


def test_two_runners_without_an_election_still_take_each_file_once(rt: Runtime, inbox: Path) -> None:
    src = add_source(rt, name="raced", kind="folder", path=str(inbox), settle_seconds=0.2)
    for i in range(30):
        (inbox / f"clip-{i:02}.txt").write_text(f"clip {i}\n")
    runners = [SourceRunner(rt, source_row(rt, src["id"]), owner) for owner in ("proc-a", "proc-b")]
    stop = threading.Event()

    def loop(runner: SourceRunner) -> None:
        while not stop.is_set():
            runner.run_once()
            time.sleep(0.05)

    threads = [threading.Thread(target=loop, args=(r,)) for r in runners]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(jobs_by_path(rt)) == 30, timeout=60, message="30 jobs")
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    taken = jobs_by_path(rt)
    assert len(taken) == 30 and all(len(v) == 1 for v in taken.values()), taken
    assert {f["status"] for f in files(rt, src["id"])} == {"submitted"}
    assert {f["claimed_by"] for f in files(rt, src["id"])} <= {"proc-a", "proc-b"}


def test_a_new_process_after_a_restart_takes_only_new_files(rt: Runtime, inbox: Path) -> None:
    src = add_source(rt, name="restarted", kind="folder", path=str(inbox), settle_seconds=0.2)
    for i in range(5):
        (inbox / f"a-{i}.txt").write_text(f"a {i}")
    first = SourceManager(rt).start()
    try:
        wait_until(lambda: len(jobs_by_path(rt)) == 5, timeout=30)
    finally:
        first.stop()
    for i in range(3):
        (inbox / f"b-{i}.txt").write_text(f"b {i}")
    second = SourceManager(rt).start()
    try:
        wait_until(lambda: len(jobs_by_path(rt)) == 8, timeout=30)
        time.sleep(1.0)
    finally:
        second.stop()
    assert all(len(v) == 1 for v in jobs_by_path(rt).values())
    assert len(files(rt, src["id"])) == 8


def test_an_unreadable_file_is_reported_once_and_never_retried(rt: Runtime, inbox: Path) -> None:
    seen: list[dict[str, str]] = []
    telemetry.on("source.file", lambda **f: seen.append(f))
    src = add_source(rt, name="broken", kind="folder", path=str(inbox), settle_seconds=0.2)
    (inbox / "gone.mov").symlink_to(inbox / "no-such-file.mov")  # a link whose target was removed
    (inbox / "fine.txt").write_text("ok")
    runner = SourceRunner(rt, source_row(rt, src["id"]), "me")
    for _ in range(15):
        runner.run_once()
        time.sleep(0.05)
    rows = {f["path"]: f for f in files(rt, src["id"])}
    assert rows["gone.mov"]["status"] == "skipped" and "unreadable" in rows["gone.mov"]["error"]
    assert rows["fine.txt"]["status"] == "submitted"
    assert list(jobs_by_path(rt)) == ["fine.txt"]
    with rt.engine.connect() as conn:
        events = conn.execute(sa.select(workflow_notifications.c.payload).where(
            workflow_notifications.c.event_type == "source.file_skipped")).scalars().all()
    assert len(events) == 1
    assert events[0]["data"] == {"source_id": src["id"], "source": "broken", "path": "gone.mov", "size": None,
                                 "reason": "unreadable", "error": events[0]["data"]["error"]}
    assert [f["outcome"] for f in seen if f["source"] == "broken"].count("unreadable") == 1


def test_patterns_hidden_files_and_recursion(rt: Runtime, inbox: Path) -> None:
    (inbox / "sub").mkdir()
    for name in ("a.MP4", "b.mov", "notes.txt", ".hidden.mp4", "c.mp4.part", "sub/d.mp4"):
        (inbox / name).write_text(name)
    flat = add_source(rt, name="flat", kind="folder", path=str(inbox), patterns=["*.mp4", "*.mov"],
                      recursive=False, settle_seconds=0)
    runner = SourceRunner(rt, source_row(rt, flat["id"]), "me")
    runner.run_once()
    assert sorted(f["path"] for f in files(rt, flat["id"])) == ["a.MP4", "b.mov"]
    deep = add_source(rt, name="deep", kind="folder", path=str(inbox), patterns=["*.mp4"], settle_seconds=0)
    SourceRunner(rt, source_row(rt, deep["id"]), "me").run_once()
    assert sorted(f["path"] for f in files(rt, deep["id"])) == ["a.MP4", "sub/d.mp4"]


def test_move_files_to_done_and_failed_folders(rt: Runtime, inbox: Path) -> None:
    (inbox / "nested").mkdir()
    for name in ("good-1.txt", "nested/good-2.txt", "bad-1.txt"):
        (inbox / name).write_text(name)
    src = add_source(rt, name="mover", kind="folder", path=str(inbox), after="move", settle_seconds=0.2)
    manager = SourceManager(rt).start()
    worker = Worker(rt, pools={"intake": 2}).start()
    try:
        wait_until(lambda: {f["status"] for f in files(rt, src["id"])} == {"done", "failed"}
                   and len(files(rt, src["id"])) == 3, timeout=30, message="all files finished")
    finally:
        worker.stop()
        manager.stop()
    assert sorted(p.relative_to(inbox).as_posix() for p in inbox.rglob("*") if p.is_file()) == [
        "done/good-1.txt", "done/nested/good-2.txt", "failed/bad-1.txt"]
    assert {f["path"]: f["after_done"] for f in files(rt, src["id"])} == {
        "good-1.txt": "moved", "nested/good-2.txt": "moved", "bad-1.txt": "moved"}
    assert len(jobs_by_path(rt)) == 3  # the moved files (now under done/ and failed/) are not taken again


def test_delete_after_success_keeps_failed_files(rt: Runtime, inbox: Path) -> None:
    for name in ("good.txt", "bad.txt"):
        (inbox / name).write_text(name)
    src = add_source(rt, name="deleter", kind="folder", path=str(inbox), after="delete", settle_seconds=0.2)
    manager = SourceManager(rt).start()
    worker = Worker(rt, pools={"intake": 2}).start()
    try:
        wait_until(lambda: len([f for f in files(rt, src["id"]) if f["status"] in ("done", "failed")]) == 2,
                   timeout=30)
    finally:
        worker.stop()
        manager.stop()
    assert sorted(p.name for p in inbox.iterdir()) == ["bad.txt"]


def test_backpressure_waits_while_the_queue_is_full_then_resumes(rt: Runtime, inbox: Path) -> None:
    ops.set_queue_paused(rt.engine, "intake", True)
    for i in range(10):
        (inbox / f"f-{i}.txt").write_text(str(i))
    src = add_source(rt, name="pressed", kind="folder", path=str(inbox), max_queue=3, settle_seconds=0.2)
    manager = SourceManager(rt).start()
    worker = Worker(rt, pools={"intake": 2}).start()
    try:
        wait_until(lambda: source_row(rt, src["id"])["waiting_reason"], timeout=30, message="backpressure")
        time.sleep(1.5)  # several rounds while the queue is full: nothing more is taken
        assert len(jobs_by_path(rt)) == 3
        assert [f["status"] for f in files(rt, src["id"])].count("pending") == 7
        assert "backpressure" in source_row(rt, src["id"])["waiting_reason"]
        ops.set_queue_paused(rt.engine, "intake", False)
        wait_until(lambda: len(jobs_by_path(rt)) == 10, timeout=60, message="all 10 taken after the queue drained")
        wait_until(lambda: source_row(rt, src["id"])["waiting_reason"] is None, timeout=10)
    finally:
        worker.stop()
        manager.stop()
    assert all(len(v) == 1 for v in jobs_by_path(rt).values())


def test_a_file_closed_after_writing_is_taken_without_waiting_to_settle(rt: Runtime, inbox: Path) -> None:
    src = add_source(rt, name="closer", kind="folder", path=str(inbox), settle_seconds=60)
    polled = add_source(rt, name="poller", kind="folder", path=str(inbox), settle_seconds=60, polling=True,
                        workflow="auto")
    manager = SourceManager(rt).start()
    try:
        wait_until(lambda: sorted(manager.leading) == sorted([src["id"], polled["id"]]), timeout=10)
        with (inbox / "recording.bin").open("wb") as fh:  # the writer keeps it open between chunks
            for _ in range(4):
                fh.write(os.urandom(50_000))
                fh.flush()
                time.sleep(0.4)
            time.sleep(1.0)
            assert jobs_by_path(rt) == {}  # still open: not taken, however quiet it is
        started = time.monotonic()
        wait_until(lambda: files(rt, src["id"]), timeout=10, message="taken once closed")
        assert time.monotonic() - started < 10  # far sooner than the 60 s settle time
        staged = inbox.parent / "staged.tmp"
        staged.write_bytes(b"renamed into place")
        os.replace(staged, inbox / "moved-in.bin")  # how rsync and atomic writers finish a file
        wait_until(lambda: len(files(rt, src["id"])) == 2, timeout=10, message="the moved-in file taken")
        assert files(rt, polled["id"]) == []  # polling only: these files wait for the 60 s rule
    finally:
        manager.stop()
    with rt.engine.connect() as conn:
        sizes = dict(conn.execute(sa.select(workflow_jobs.c.input_filename, workflow_jobs.c.input_size)).all())
    assert sizes == {"recording.bin": 200_000, "moved-in.bin": 18}
