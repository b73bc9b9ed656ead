"""URL inputs go through the SSRF guard on the address actually dialled, and ignore proxy variables."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mediamill import netguard
from mediamill.engine.fetch import fetch_to_storage
from mediamill.netguard import UrlRefused
from tests.helpers import make_runtime

PUBLIC = "93.184.216.34"  # what the hostile resolver answers first


class _Recorder(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.paths: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.paths.append(self.path)
                body = b"internal secret"
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def internal() -> Iterator[_Recorder]:
    server = _Recorder()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``rebind.test`` answers a public address on the first lookup and 127.0.0.1 on every later one."""
    real = socket.getaddrinfo
    answers: list[str] = []

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        address = PUBLIC if not answers else "127.0.0.1"
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return answers


def test_dns_rebinding_cannot_reach_loopback(tmp_path: Path, internal: _Recorder, rebinding_dns: list[str]) -> None:
    rt = make_runtime(tmp_path, migrate=False)
    with pytest.raises(UrlRefused, match="non-public"):
        fetch_to_storage(rt, f"http://rebind.test:{internal.port}/secret", "default", tmp_path / "scratch")
    assert rebinding_dns[:2] == [PUBLIC, "127.0.0.1"]  # checked, then the dial's own lookup was refused
    assert internal.paths == []
    assert not (tmp_path / "scratch" / "fetched").exists()


def test_guarded_client_refuses_a_rebound_dial(internal: _Recorder, rebinding_dns: list[str]) -> None:
    """The same client delivers webhooks and Slack messages: a rebound name is refused at connect time."""
    netguard.check_url(f"http://rebind.test:{internal.port}/", None)
    with netguard.guarded_client(None) as client, pytest.raises(UrlRefused):
        client.get(f"http://rebind.test:{internal.port}/hook")
    assert internal.paths == []


def test_proxy_variables_are_ignored(tmp_path: Path, internal: _Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment would dial the target for us, past the guard: fetches go direct."""
    proxy = _Recorder()
    try:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        rt = make_runtime(tmp_path, migrate=False, url_allowlist="127.0.0.1")
        key, _mime, size = fetch_to_storage(rt, f"http://127.0.0.1:{internal.port}/file", "default",
                                            tmp_path / "scratch")
        assert size == len(b"internal secret") and internal.paths == ["/file"] and proxy.paths == []
        with rt.storage.open(key) as stored:
            assert stored.read() == b"internal secret"
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_a_configured_proxy_is_used(tmp_path: Path) -> None:
    """MEDIAMILL_OUTBOUND_PROXY is the opt-in: the proxy (private itself) gets the request for a public URL."""
    proxy = _Recorder()
    try:
        rt = make_runtime(tmp_path, migrate=False, outbound_proxy=f"http://127.0.0.1:{proxy.port}")
        _key, _mime, size = fetch_to_storage(rt, f"http://{PUBLIC}/file.bin", "default", tmp_path / "scratch")
        assert size == len(b"internal secret") and proxy.paths == [f"http://{PUBLIC}/file.bin"]
        with pytest.raises(UrlRefused, match="non-public"):  # targets are still checked before the proxy
            fetch_to_storage(rt, "http://10.1.2.3/x", "default", tmp_path / "scratch")
        assert len(proxy.paths) == 1
    finally:
        proxy.shutdown()
        proxy.server_close()
