"""Logged-out sessions and used login links stay refused across API processes and restarts.

Two real ``api`` processes (uvicorn subprocesses, as on two machines: separate data
directories, one shared ``MEDIAMILL_SECRET_KEY``) on one database, SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mediamill.api.auth import SESSION_COOKIE
from mediamill.store import auth_repo
from tests.helpers import BACKENDS, database_url, free_port, make_runtime, wait_until

SHARED_KEY = "k" * 48


class ApiProcess:
    """``mediamill api``'s app under uvicorn in a subprocess; ``restart()`` is a real process restart."""

    def __init__(self, data_dir: Path, database: str) -> None:
        self.env = {**os.environ, "MEDIAMILL_DATA_DIR": str(data_dir), "MEDIAMILL_DATABASE_URL": database,
                    "MEDIAMILL_SECRET_KEY": SHARED_KEY, "MEDIAMILL_METRICS_DIR": "off"}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ApiProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "mediamill.cli.api:app_factory", "--factory",
                                      "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
                                     env=self.env)
        wait_until(self._ready, timeout=60, message=f"api on {self.port}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, "api process exited"
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(params=BACKENDS)
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ApiProcess, ApiProcess, str]]:
    with database_url(request.param, tmp_path) as url:
        rt = make_runtime(tmp_path / "setup", url, secret_key=SHARED_KEY)
        key = auth_repo.create_key(rt.engine, role="operator", name="fleet").plaintext
        rt.close()
        a, b = ApiProcess(tmp_path / "a", url), ApiProcess(tmp_path / "b", url)
        try:
            yield a.start(), b.start(), key
        finally:
            a.stop()
            b.stop()


def _login(base: str, key: str) -> str:
    """Log in through the form; returns the session cookie's value."""
    with httpx.Client(base_url=base) as client:
        form = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        res = client.post("/login", data={"key": key, "csrf_token": token, "next": "/"})
        assert res.status_code == 303, res.text
        return str(client.cookies[SESSION_COOKIE])


def _logout(base: str, cookie: str) -> None:
    with httpx.Client(base_url=base, cookies={SESSION_COOKIE: cookie}) as client:
        page = client.get("/")
        csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303


def _signed_in(base: str, cookie: str) -> bool:
    res = httpx.get(f"{base}/v1/me", cookies={SESSION_COOKIE: cookie})
    assert res.status_code in (200, 401), res.text
    return res.status_code == 200


def test_logout_holds_across_processes_and_restarts(fleet: tuple[ApiProcess, ApiProcess, str]) -> None:
    a, b, key = fleet
    cookie = _login(a.url, key)
    assert _signed_in(a.url, cookie) and _signed_in(b.url, cookie)  # one shared install key
    _logout(a.url, cookie)
    assert not _signed_in(b.url, cookie)  # the other process knows at once
    a.restart()
    assert not _signed_in(a.url, cookie)  # and a restart does not forget
    other = _login(b.url, key)
    assert _signed_in(a.url, other)  # logging out ended that session only


def test_login_link_is_single_use_across_processes_and_restarts(tmp_path: Path,
                                                                 fleet: tuple[ApiProcess, ApiProcess, str]) -> None:
    a, b, key = fleet
    rt = make_runtime(tmp_path / "cli", a.env["MEDIAMILL_DATABASE_URL"], secret_key=SHARED_KEY, migrate=False)
    path = auth_repo.login_url(rt, "", key)
    rt.close()
    first = httpx.get(f"{b.url}{path}")
    assert first.status_code == 303 and SESSION_COOKIE in first.cookies
    assert httpx.get(f"{a.url}{path}").status_code == 401  # spent on b
    b.restart()
    assert httpx.get(f"{b.url}{path}").status_code == 401


@pytest.mark.parametrize("backend", BACKENDS)
def test_spent_tokens_are_pruned_after_expiry(backend: str, tmp_path: Path) -> None:
    with database_url(backend, tmp_path) as url:
        rt = make_runtime(tmp_path / "data", url)
        try:
            now = time.time()
            assert auth_repo.spend_token(rt.engine, "session:old", now - 1)
            assert auth_repo.spend_token(rt.engine, "session:live", now + 3600)
            assert not auth_repo.spend_token(rt.engine, "session:live", now + 3600)  # one winner
            assert not auth_repo.is_spent(rt.engine, "session:old") and auth_repo.is_spent(rt.engine, "session:live")
            assert auth_repo.prune_spent_tokens(rt.engine) == 1
            assert auth_repo.spend_token(rt.engine, "session:old", now + 60)  # an expired row never blocks
            assert auth_repo.is_spent(rt.engine, "session:live")
        finally:
            rt.close()
