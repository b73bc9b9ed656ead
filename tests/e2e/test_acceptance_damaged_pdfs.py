"""Acceptance, through a real ``mediamill serve`` process: seven PDFs with damaged page objects,
then a good one. The seven end ``failed`` / ``invalid_input`` with ``finished_at`` set, no breaker
opens, the good PDF completes at once; the analytics summary counts the failures and the
dead-letter counter on ``/metrics`` reads 7."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from mediamill.store import auth_repo
from tests.helpers import free_port, make_runtime, wait_until
from tests.media import damage as D
from tests.media.conftest import write_pdf

FINAL = ("completed", "partial", "failed", "cancelled")


def _serve(data: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "MEDIAMILL_DATA_DIR": str(data), "MEDIAMILL_PORT": str(port), "MEDIAMILL_DATABASE_URL": "",
           "MEDIAMILL_STORAGE_URL": "", "MEDIAMILL_METRICS_DIR": "off", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "mediamill.cli.main", "serve"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _stop(proc: subprocess.Popen[str]) -> str:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _submit(http: httpx.Client, path: Path) -> int:
    res = http.post("/v1/jobs", files={"file": (path.name, path.read_bytes(), "application/pdf")},
                    data={"workflow": "WF-DOC-PROCESS"})
    assert res.status_code == 202, res.text
    return int(res.json()["id"])


def _wait(http: httpx.Client, job_id: int, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = http.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in FINAL else None
    return wait_until(done, timeout=timeout, interval=0.1, message=f"job {job_id} finished")  # type: ignore[no-any-return]


def _dead_lettered(metrics: str) -> float:
    samples = re.findall(r"^mediamill_jobs_dead_lettered_total(?:\{[^}]*\})? ([0-9.e+]+)$", metrics, re.M)
    return sum(float(v) for v in samples)


def test_seven_damaged_pdfs_then_a_good_one_through_serve(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    rt = make_runtime(data, migrate=False)
    rt.prepare()
    key = auth_repo.create_key(rt.engine, role="admin", name="acceptance").plaintext
    rt.close()
    good = write_pdf(tmp_path / "good.pdf", ["Hello page one", "Second page here", "Third and last"])
    damaged = [D.damaged_copy(good, d, tmp_path / "damaged") for d in D.PDF_PAGES]
    assert len(damaged) == 7

    proc = _serve(data, port)
    try:
        wait_until(lambda: _healthy(port) or proc.poll() is not None, timeout=60, message="serve ready")
        assert proc.poll() is None, "serve exited"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          headers={"Authorization": f"Bearer {key}"}) as http:
            bad = [_wait(http, _submit(http, path)) for path in damaged]
            for job in bad:
                assert job["status"] == "failed", (job["status"], job["error_message"])
                assert job["error_class"] == "invalid_input", job["error_message"]
                assert job["error_message"].startswith("Validate Document: ") and "Pdfium" not in job["error_message"]
                assert job["finished_at"] is not None
                assert job["retry_count"] == 0
            breakers = http.get("/v1/breakers").json()["items"]
            assert all(b["state"] == "closed" for b in breakers), breakers

            started = time.monotonic()
            ok = _wait(http, _submit(http, good), timeout=30)
            assert ok["status"] == "completed", ok["error_message"]
            assert time.monotonic() - started < 15  # at once: nothing waits on a breaker
            assert not any(e["event_type"] == "wait" for e in ok.get("events", []))

            summary = http.get("/v1/analytics/summary", params={"window": "24h"})
            assert summary.status_code == 200, summary.text
            figures = summary.json()
            assert figures["failed"] >= 7 and figures["error_rate"] > 0, figures
            metrics = http.get("/metrics").text
            assert _dead_lettered(metrics) == 7, [ln for ln in metrics.splitlines() if "dead_letter" in ln]
            assert 'mediamill_dead_letters_open{error_class="invalid_input"} 7.0' in metrics
    finally:
        out = _stop(proc)
    assert "Traceback" not in out, out[-3000:]
