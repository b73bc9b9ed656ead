"""The step child: imported once by the forkserver (warm), then runs tasks sent over a pipe.

Imported modules here are the actions (and through them the media libraries); nothing of
the store or the API is imported, so a child cannot touch the database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from mediamill.actions.base import (
    PriorStep,
    StepContext,
    StepResult,
    StoredOutput,
    get_action,
    get_fuser,
    load_actions,
)
from mediamill.config import MediaLimits
from mediamill.errors import InternalError, classify_exception

load_actions()  # warm: the forkserver imports every action module once
log = logging.getLogger("mediamill.child")


def _bind_log(fields: dict[str, Any]) -> None:
    """Carry the job's correlation ids (job_id, step, worker, request_id) into this process's log lines."""
    from structlog.contextvars import bind_contextvars, clear_contextvars

    clear_contextvars()
    bind_contextvars(**fields)


def _configure_logging() -> None:
    try:
        from mediamill.config import load_settings
        from mediamill.observability.logging import configure
    except ImportError:
        return
    with contextlib.suppress(Exception):  # logging must never stop a child from running steps
        configure(load_settings(), "child")


def _set_limits(limits: MediaLimits) -> None:
    mb = 1024 * 1024
    for res, value in ((resource.RLIMIT_AS, limits.child_memory_mb * mb),
                       (resource.RLIMIT_FSIZE, limits.child_file_size_mb * mb)):
        _soft, hard = resource.getrlimit(res)
        cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(res, (cap, hard))


def _cpu_budget(seconds: int) -> None:
    """CPU time is cumulative per process, so each task gets 'used so far + budget'."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = int(used.ru_utime + used.ru_stime) + 1
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    want = spent + seconds
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CPU, (want, hard))


def _prior(raw: dict[str, Any]) -> PriorStep:
    return PriorStep(name=raw["name"], action=raw["action"], status=raw["status"], data=raw.get("data") or {},
                     outputs=[StoredOutput(o["name"], Path(o["path"]), o["mime_type"], o.get("metadata") or {},
                                           o.get("bytes"), o.get("checksum")) for o in raw.get("outputs", [])])


def _context(task: dict[str, Any], step: dict[str, Any], index: int, conn: Connection,
             limits: MediaLimits) -> StepContext:
    spec = get_action(step["action"])
    if spec is None:
        raise InternalError(f"unknown action {step['action']!r}")
    work_dir = Path(step["work_dir"])
    work_dir.mkdir(parents=True, exist_ok=True)

    def progress(pct: float, _i: int = index) -> None:
        with contextlib.suppress(OSError, ValueError):
            conn.send({"kind": "progress", "index": _i, "percent": max(0.0, min(100.0, float(pct)))})

    return StepContext(
        input_path=Path(task["input_path"]), input_mime=task["input_mime"], work_dir=work_dir,
        params=spec.validate_params(step.get("params")), step_name=step["step_name"], job=task.get("job") or {},
        previous=[_prior(p) for p in task.get("previous", [])], limits=limits, progress=progress,
        timeout_seconds=step.get("timeout"), attempt=step.get("attempt", 0), action=step["action"])


def _encode(result: StepResult) -> dict[str, Any]:
    return {"outputs": [{"name": o.name, "path": str(o.path), "mime_type": o.mime_type, "metadata": o.metadata}
                        for o in result.outputs], "data": result.data}


def run_task(task: dict[str, Any], conn: Connection, limits: MediaLimits) -> dict[str, Any]:
    """Run a task's step(s) (a fused group when ``fuse`` is set) and encode the outcome."""
    if task.get("probe"):
        from mediamill.media.probe import probe_input

        return {"kind": "result", "ok": True, "probe": probe_input(Path(task["input_path"]), task["input_mime"])}
    if task.get("chunk"):
        return _run_chunk(task, conn)
    steps = task["steps"]
    _bind_log(task.get("log") or {})
    log.info("child running %s", ", ".join(s["action"] for s in steps))
    ctxs = [_context(task, s, i, conn, limits) for i, s in enumerate(steps)]
    if task.get("fuse"):
        fuser = get_fuser(task["fuse"])
        if fuser is None:
            raise InternalError(f"no fuser for {task['fuse']!r}")
        results = fuser(ctxs)
    else:
        spec = get_action(steps[0]["action"])
        assert spec is not None
        results = [spec.fn(ctxs[0])]
    return {"kind": "result", "ok": True, "results": [_encode(r) for r in results]}


def _run_chunk(task: dict[str, Any], conn: Connection) -> dict[str, Any]:
    """One operation of a chunked transcode (plan, segment, audio, join: see ``actions.chunked``)."""
    from mediamill.actions.chunked import run_chunk_task

    _bind_log(task.get("log") or {})

    def progress(pct: float) -> None:
        with contextlib.suppress(OSError, ValueError):
            conn.send({"kind": "progress", "index": 0, "percent": max(0.0, min(100.0, float(pct)))})

    return {"kind": "result", "ok": True, **run_chunk_task(task["chunk"], progress)}


def error_payload(exc: BaseException) -> dict[str, Any]:
    """A step's exception as the classified result the worker records (see ``classify_exception``)."""
    err = classify_exception(exc)
    return {"kind": "result", "ok": False, "error_class": err.error_class, "message": err.message,
            "retryable": err.retryable, "stderr_tail": err.stderr_tail}


def child_main(conn: Connection, limits_raw: dict[str, Any]) -> None:
    """Loop: receive a task, run it, send the result; ``None`` ends the child."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # own process group: killing it also kills ffmpeg & co.
    limits = MediaLimits.model_validate(limits_raw)
    _set_limits(limits)
    _configure_logging()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if task is None:
            return
        _cpu_budget(int(task.get("cpu_seconds") or limits.child_cpu_seconds))
        try:
            reply = run_task(task, conn, limits)
        except BaseException as exc:  # every failure becomes a classified result
            reply = error_payload(exc)
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return
