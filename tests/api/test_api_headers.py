"""Request heads are capped (64 KiB, 100 fields by default): 431 while the head arrives, under the real
`mediamill api` server, and from the app itself under any server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from mediamill.api.app import create_app
from tests.helpers import free_port, wait_until

from .support import make_runtime


@pytest.fixture(scope="module")
def api_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """`mediamill api` in a subprocess, with the default caps."""
    port = free_port()
    env = {**os.environ, "MEDIAMILL_DATA_DIR": str(tmp_path_factory.mktemp("headers") / "data"),
           "MEDIAMILL_DATABASE_URL": "", "MEDIAMILL_METRICS_DIR": "off", "NO_COLOR": "1"}
    for name in ("MEDIAMILL_MAX_HEADER_BYTES", "MEDIAMILL_MAX_HEADER_COUNT"):
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, "-m", "mediamill.cli.main", "api", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, start_new_session=True)

    def ready() -> bool:
        assert proc.poll() is None, "mediamill api exited"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=60, message="mediamill api")
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def _exchange(port: int, head: bytes, *, chunk: int = 16 * 1024) -> bytes:
    """Send ``head`` in chunks (stopping when the server hangs up) and return what it answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            for start in range(0, len(head), chunk):
                sock.sendall(head[start:start + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except ConnectionResetError:
            pass
        return answer


def _request(fields: list[bytes], *, end: bool = True) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + b"".join(f + b"\r\n" for f in fields) + (b"\r\n" if end else b"")


def test_100_small_headers_pass(api_port: int) -> None:
    answer = _exchange(api_port, _request([b"X-F%d: v" % i for i in range(98)] + [b"Connection: close"]))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_101st_header_is_refused(api_port: int) -> None:
    answer = _exchange(api_port, _request([b"X-F%d: v" % i for i in range(101)]))
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"more than 100 header fields" in answer


def test_5000_headers_are_refused(api_port: int) -> None:
    answer = _exchange(api_port, _request([b"X-F%d: v" % i for i in range(5000)]))
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_a_1_mib_header_is_refused_before_it_ends(api_port: int) -> None:
    """The head never ends (no blank line): the server answers after 64 KiB instead of buffering it all."""
    answer = _exchange(api_port, _request([b"X-Big: " + b"a" * 1024 * 1024], end=False))
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"larger than 65536 bytes" in answer


def test_heads_just_under_the_cap_pass(api_port: int) -> None:
    answer = _exchange(api_port, _request([b"X-Big: " + b"a" * 60_000, b"Connection: close"]))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_the_app_refuses_oversized_heads_under_any_server(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path / "data", max_header_bytes=4096, max_header_count=20)
    with TestClient(create_app(rt)) as client:
        assert client.get("/healthz", headers={f"x-f{i}": "v" for i in range(10)}).status_code == 200
        many = client.get("/healthz", headers={f"x-f{i}": "v" for i in range(30)})
        assert many.status_code == 431 and many.json()["status"] == 431
        big = client.get("/healthz", headers={"x-big": "a" * 5000})
        assert big.status_code == 431 and "larger than 4096 bytes" in big.json()["detail"]
    rt.close()


def test_caps_count_per_request_on_a_kept_alive_connection(api_port: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{api_port}") as client:
        headers = {f"x-f{i}": "v" * 500 for i in range(60)}  # 60 fields, ~30 KiB: three of them exceed both caps
        assert [client.get("/healthz", headers=headers).status_code for _ in range(3)] == [200, 200, 200]
        assert client.get("/healthz", headers={f"x-f{i}": "v" for i in range(120)}).status_code == 431
