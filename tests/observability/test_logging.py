"""Structured logs: JSON lines carrying job_id / step / worker / request_id, across processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import logging, sys
    from mediamill.config import load_settings
    from mediamill.observability import logging as mlog
    s = load_settings(data_dir=sys.argv[1], metrics_dir="off", log_format="json")
    mlog.configure(s, "worker")
    log = mlog.get_logger("test")
    log.info("before")
    with mlog.bind_job(job_id=42, step="Resize", worker="w-1", request_id="req-xyz"):
        log.info("inside", extra_field=1)
        logging.getLogger("stdlib").warning("from stdlib")
        ctx = mlog.current_context()
    mlog.bind_job(**ctx)
    log.info("rebound in another place")
    mlog.clear_job()
    log.info("after")
""")


def _run(tmp_path: Path) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, timeout=60,
                          check=True)
    return [json.loads(line) for line in done.stderr.decode().splitlines() if line.startswith("{")]


def test_json_lines_carry_the_correlation_fields(tmp_path: Path) -> None:
    lines = {line["event"]: line for line in _run(tmp_path)}
    assert set(lines) == {"before", "inside", "from stdlib", "rebound in another place", "after"}
    for event in ("inside", "from stdlib", "rebound in another place"):
        line = lines[event]
        assert (line["job_id"], line["step"], line["worker"], line["request_id"]) == (42, "Resize", "w-1", "req-xyz")
        assert line["process"] == "worker" and line["level"] in ("info", "warning") and "timestamp" in line
    assert "job_id" not in lines["before"] and "job_id" not in lines["after"]


def test_import_is_side_effect_free() -> None:
    code = ("import sys, os; import mediamill.observability.metrics, mediamill.observability.logging; "
            "assert 'prometheus_client' not in sys.modules, 'prometheus imported'; "
            "assert 'PROMETHEUS_MULTIPROC_DIR' not in os.environ")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)


def test_request_id_is_accepted_or_generated() -> None:
    from mediamill.observability.logging import accept_request_id

    assert accept_request_id("abc-123_X.y:z") == "abc-123_X.y:z"
    assert accept_request_id("has space").startswith("req_")
    assert accept_request_id("x" * 65).startswith("req_")
    assert accept_request_id(None).startswith("req_")


def test_request_ids_need_no_system_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request gets an id on the event loop's thread: reading the system's random source there lets go of
    the GIL, and under load the loop then waits behind worker threads for it. Ids come from a seeded generator."""
    from mediamill.observability import logging as mm_logging

    def no_urandom(_n: int) -> bytes:
        raise AssertionError("os.urandom called for a request id")

    monkeypatch.setattr(os, "urandom", no_urandom)
    ids = {mm_logging.new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", i) for i in ids)
