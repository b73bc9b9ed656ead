"""Slow clients cannot hold the server: a request head has a deadline, a stalled body is cut with
408, one key's uploads are capped (429) and a full upload pool refuses (503) instead of hanging —
so another tenant's upload goes through (real uvicorn, raw sockets)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mediamill.api.limits import UploadSlots
from mediamill.runtime import Runtime
from mediamill.store import auth_repo

from .support import Keys, LiveServer, make_runtime, wait_until

TUS = {"Tus-Resumable": "1.0.0"}
BOUNDARY = "slowboundary"


@pytest.fixture
def slow_rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = make_runtime(tmp_path / "data", header_timeout_seconds=1.0, body_idle_timeout_seconds=1.5,
                           max_uploads_per_key=3)
    yield runtime
    runtime.close()


@pytest.fixture
def slow_live(slow_rt: Runtime) -> Iterator[LiveServer]:
    with LiveServer(slow_rt) as server:
        yield server


@pytest.fixture
def upload_rt(tmp_path: Path) -> Iterator[Runtime]:
    """Slow uploads that must stay open for the whole test (a body idle timeout well above its length)."""
    runtime = make_runtime(tmp_path / "data", body_idle_timeout_seconds=60, max_uploads_per_key=3)
    yield runtime
    runtime.close()


@pytest.fixture
def upload_live(upload_rt: Runtime) -> Iterator[LiveServer]:
    with LiveServer(upload_rt) as server:
        yield server


def _connect(live: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    sock.settimeout(0.2)
    return sock


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_slowloris_header_senders_are_disconnected(slow_live: LiveServer) -> None:
    socks = [_connect(slow_live) for _ in range(5)]
    for s in socks:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    started, open_socks = time.monotonic(), list(socks)
    while open_socks and time.monotonic() - started < 6:
        for s in list(open_socks):
            try:
                s.sendall(b"X")  # one header byte now and then: never a complete head
            except OSError:
                open_socks.remove(s)
                continue
            if _closed(s):
                open_socks.remove(s)
    elapsed = time.monotonic() - started
    for s in socks:
        s.close()
    assert not open_socks, "slow header senders still connected after 6 s"
    assert elapsed < 4
    assert httpx.get(f"{slow_live.url}/healthz").status_code == 200  # a normal client is served
    with httpx.Client() as client:  # keep-alive between requests is not cut by the head deadline
        assert client.get(f"{slow_live.url}/healthz").status_code == 200
        time.sleep(0.5)
        assert client.get(f"{slow_live.url}/healthz").status_code == 200


def _response(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    return data


def test_a_stalled_body_is_answered_408(slow_live: LiveServer, slow_rt: Runtime) -> None:
    key = Keys(slow_rt).submitter
    upload = httpx.post(f"{slow_live.url}/v1/uploads", headers=Keys.h(key, **TUS, **{"Upload-Length": "100"}))
    path = "/v1/uploads/" + upload.headers["location"].rsplit("/", 1)[1]
    sock = _connect(slow_live)
    sock.sendall(f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nTus-Resumable: 1.0.0\r\n"
                 f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: 100\r\n\r\n"
                 .encode() + b"0123456789")
    started = time.monotonic()
    head = _response(sock, 6)
    sock.close()
    assert head.startswith(b"HTTP/1.1 408"), head[:200]
    assert time.monotonic() - started < 5
    head_res = httpx.head(f"{slow_live.url}{path}", headers=Keys.h(key, **TUS))
    # the claim is released and the upload is resumable from what was kept
    assert head_res.status_code == 200 and int(head_res.headers["upload-offset"]) in (0, 10)
    res = httpx.patch(f"{slow_live.url}{path}", headers=Keys.h(key, **TUS, **{
        "Content-Type": "application/offset+octet-stream", "Upload-Offset": head_res.headers["upload-offset"]}),
        content=b"x" * (100 - int(head_res.headers["upload-offset"])))
    assert res.status_code == 204


def _slow_multipart(live: LiveServer, key: str) -> socket.socket:
    """A multipart submit whose file part trickles in (it never finishes while the test runs)."""
    sock = _connect(live)
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 1000000\r\n\r\n")
    part = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"workflow\"\r\n\r\nWF-TEST-NOOP\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.bin\"\r\n\r\n")
    sock.sendall(head.encode() + part.encode() + b"x" * 100)
    return sock


def _status_now(sock: socket.socket) -> int | None:
    head = _response(sock, 0.5)
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1") else None


def test_slow_uploads_of_one_key_do_not_block_another_tenant(upload_live: LiveServer, upload_rt: Runtime) -> None:
    slow_live, slow_rt = upload_live, upload_rt
    noisy = auth_repo.create_key(slow_rt.engine, role="submitter", tenant_id="noisy").plaintext
    quiet = auth_repo.create_key(slow_rt.engine, role="submitter", tenant_id="quiet").plaintext
    socks = [_slow_multipart(slow_live, noisy) for _ in range(5)]
    try:
        statuses = [_status_now(s) for s in socks]
        assert statuses.count(429) == 2 and statuses.count(None) == 3, statuses  # 3 held, 2 refused at once
        for s in socks:  # keep the held ones alive (under the body idle timeout)
            try:
                s.sendall(b"y" * 10)
            except OSError:
                pass
        started = time.monotonic()
        created = httpx.post(f"{slow_live.url}/v1/uploads", headers=Keys.h(quiet, **TUS, **{
            "Upload-Length": "5", "Content-Type": "application/offset+octet-stream"}), content=b"hello", timeout=10)
        assert created.status_code == 201 and created.headers["upload-offset"] == "5"
        job = httpx.post(f"{slow_live.url}/v1/jobs", headers=Keys.h(quiet), data={"workflow": "WF-TEST-NOOP"},
                         files={"file": ("q.txt", b"quiet tenant")}, timeout=10)
        assert job.status_code == 202 and time.monotonic() - started < 5
    finally:
        for s in socks:
            s.close()


def test_a_full_upload_pool_refuses_with_503(upload_live: LiveServer, upload_rt: Runtime) -> None:
    slow_live, slow_rt = upload_live, upload_rt
    slow_live.app.state.upload_slots = UploadSlots(per_key=8, total=2)  # a small pool, the same rule as 64
    keys = [auth_repo.create_key(slow_rt.engine, role="submitter", tenant_id=f"t{i}").plaintext for i in range(3)]
    socks = [_slow_multipart(slow_live, k) for k in keys[:2]]
    try:
        assert [_status_now(s) for s in socks] == [None, None]
        started = time.monotonic()
        res = httpx.post(f"{slow_live.url}/v1/jobs", headers=Keys.h(keys[2]), data={"workflow": "WF-TEST-NOOP"},
                         files={"file": ("a.txt", b"refused, not queued")}, timeout=10)
        assert res.status_code == 503 and res.headers["retry-after"] == "2"
        assert time.monotonic() - started < 2
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: slow_live.app.state.upload_slots._count == 0, timeout=10, message="slots released")
    res = httpx.post(f"{slow_live.url}/v1/jobs", headers=Keys.h(keys[2]), data={"workflow": "WF-TEST-NOOP"},
                     files={"file": ("a.txt", b"accepted now")}, timeout=10)
    assert res.status_code == 202
