"""The API when what it depends on fails: a database outage answers 503 with ``Retry-After`` on
the same keep-alive connection (never a bare 500 that closes it), a full disk answers 507, and
``/readyz`` says which dependency is not ready. Nothing that was accepted (202) is lost.

The database outage uses a PostgreSQL cluster the test creates on a spare port and stops; the
shared server is never touched. The full disk is a small tmpfs mounted for the test (root only;
skipped with the reason elsewhere).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from mediamill.engine import operations as ops
from mediamill.engine.worker import Worker
from mediamill.store.tables import workflow_jobs
from tests.pgcluster import SKIP_REASON, own_postgres_cluster
from tests.tmpfs import small_tmpfs

from .support import PG_URL, Keys, LiveServer, make_runtime, wait_until


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class KeepAlive:
    """HTTP/1.1 over ONE socket: a response that closes the connection makes the next request fail."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.host = host
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.buf = b""

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                body: bytes = b"") -> RawResponse:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = self._until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parsed = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines if h)}
        return RawResponse(int(status_line.split()[1]), parsed, self._exactly(int(parsed.get("content-length", 0))))

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(marker, 1)
        return head

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def close(self) -> None:
        self.sock.close()


def _multipart(content: bytes, workflow: str = "WF-TEST-NOOP") -> tuple[dict[str, str], bytes]:
    boundary = "mmtestboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"workflow\"\r\n\r\n{workflow}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"note.txt\"\r\n"
            "Content-Type: text/plain\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body


def _submit(conn: KeepAlive, key: str, content: bytes = b"hello outage\n" * 10) -> RawResponse:
    headers, body = _multipart(content)
    return conn.request("POST", "/v1/jobs", headers={**Keys.h(key), **headers}, body=body)


def _job_ids(rt: Any) -> set[int]:
    with rt.engine.connect() as conn:
        return set(conn.execute(sa.select(workflow_jobs.c.id)).scalars())


# ------------------------------------------------------------------------------ database outage
@pytest.mark.skipif(not PG_URL, reason=SKIP_REASON)
def test_database_outage_answers_503_with_retry_after_and_keeps_the_connection(tmp_path: Path) -> None:
    with own_postgres_cluster() as cluster:
        rt = make_runtime(tmp_path / "data", cluster.url)
        keys = Keys(rt)
        try:
            with LiveServer(rt) as live:
                conn = KeepAlive(live.url)
                accepted = []
                for _ in range(3):
                    res = _submit(conn, keys.submitter)
                    assert res.status == 202, res.body
                    accepted.append(res.json()["id"])

                cluster.ctl("stop")
                try:
                    for _ in range(4):  # the same socket throughout: nothing closed it
                        res = _submit(conn, keys.submitter)
                        assert res.status == 503, (res.status, res.body)
                        assert res.headers["retry-after"] == "5"
                        assert res.headers.get("connection", "").lower() != "close"
                        problem = res.json()
                        assert problem["status"] == 503 and "database" in problem["detail"]
                        assert "psycopg" not in res.body.decode() and "127.0.0.1" not in res.body.decode()
                    ready = conn.request("GET", "/readyz")
                    assert ready.status == 503 and ready.json()["checks"]["database"]["status"] == "unavailable"
                finally:
                    cluster.ctl("start")

                # back: the same connection submits again; what was accepted before is all there
                res = wait_until(lambda: (r := _submit(conn, keys.submitter)).status == 202 and r, timeout=30,
                                 message="submits accepted again")
                accepted.append(res.json()["id"])
                conn.close()
                assert set(accepted) <= _job_ids(rt)
                worker = Worker(rt, pools={"*": 2}).start()
                try:
                    wait_until(lambda: all(ops.get_job(rt.engine, j)["status"] == "completed" for j in accepted),
                               timeout=60, message="accepted jobs completed")
                finally:
                    worker.stop(grace=5)
        finally:
            rt.close()


# ------------------------------------------------------------------------------ storage floor
def test_readyz_and_submits_when_free_space_is_below_the_floor(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path / "data", storage_min_free_mb=0)
    keys = Keys(rt)
    try:
        with LiveServer(rt) as live, httpx.Client(base_url=live.url, timeout=30) as http:
            ok = http.get("/readyz")
            assert ok.status_code == 200 and ok.json()["checks"]["storage"]["status"] == "ok"
            assert ok.json()["checks"]["storage"]["free_bytes"] > 0
            rt.storage.min_free_bytes = 1 << 60  # a floor no disk reaches
            ready = http.get("/readyz")
            assert ready.status_code == 503 and ready.headers["retry-after"]
            body = ready.json()
            assert "storage" in body["detail"] and "MEDIAMILL_STORAGE_MIN_FREE_MB" in body["detail"]
            assert body["checks"]["database"]["status"] == "ok"
            before = _job_ids(rt)
            res = http.post("/v1/jobs", files={"file": ("a.txt", b"x" * 100)}, data={"workflow": "WF-TEST-NOOP"},
                            headers=Keys.h(keys.submitter))
            assert res.status_code == 507 and res.headers["retry-after"], res.text
            assert res.json()["error_class"] == "resource" and str(tmp_path) not in res.text
            assert _job_ids(rt) == before  # nothing half-accepted
    finally:
        rt.close()


def test_the_floor_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDIAMILL_STORAGE_MIN_FREE_MB", "64")
    from mediamill.config import Settings
    from mediamill.runtime import Runtime

    rt = Runtime(Settings(data_dir=tmp_path / "data"))
    assert rt.settings.storage_min_free_mb == 64 and rt.storage.min_free_bytes == 64 * 1024 * 1024
    rt.close()


# ------------------------------------------------------------------------------ a full disk
def test_full_disk_answers_507_and_loses_nothing(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", 24) as disk:
        rt = make_runtime(disk / "data", storage_min_free_mb=0)
        keys = Keys(rt)
        try:
            with LiveServer(rt) as live:
                conn = KeepAlive(live.url)
                accepted = {}
                for i in range(3):
                    content = f"accepted {i}\n".encode() * 1000
                    res = _submit(conn, keys.submitter, content)
                    assert res.status == 202, res.body
                    accepted[res.json()["id"]] = content
                # an upload larger than the space left: the disk fills up while it is stored (on a
                # connection of its own: the server answers before reading the rest of that body)
                big = KeepAlive(live.url)
                res = _submit(big, keys.submitter, os.urandom(30 * 1024 * 1024))
                big.close()
                assert res.status == 507, (res.status, res.body[:300])
                assert res.headers["retry-after"] and res.json()["error_class"] == "resource"
                assert str(disk) not in res.body.decode()  # no server path in what the client sees
                # fill what is left: even a small file cannot be stored now
                filler = disk / "filler"
                with contextlib.suppress(OSError), filler.open("wb") as fh:
                    while True:
                        fh.write(b"\0" * 65536)
                for _ in range(2):  # the same connection, still open after each 507
                    res = _submit(conn, keys.submitter)
                    assert res.status == 507, (res.status, res.body[:300])
                filler.unlink()
                res = _submit(conn, keys.submitter)  # space is back: accepted again
                assert res.status == 202, res.body
                accepted[res.json()["id"]] = b"hello outage\n" * 10
                conn.close()
                assert set(accepted) == _job_ids(rt)  # every 202 is a job, no 507 left one behind
                for job_id, content in accepted.items():
                    job = ops.get_job(rt.engine, job_id)
                    stored = rt.storage.local_path(job["input_key"])
                    assert stored is not None and stored.read_bytes() == content
        finally:
            rt.close()


def test_a_database_on_a_full_disk_is_507_not_503() -> None:
    import sqlite3

    from mediamill.api.app import database_disk_full

    full = sa.exc.OperationalError("INSERT …", {}, sqlite3.OperationalError("database or disk is full"))
    down = sa.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("unable to open database file"))
    assert database_disk_full(full) and not database_disk_full(down)
