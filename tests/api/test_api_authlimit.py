"""Failed authentication is braked per client address and per key prefix: 429 + Retry-After, logged and counted,
while correct keys of other clients keep working. Real HTTP from distinct loopback addresses."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from mediamill.api import authlimit
from mediamill.api.authlimit import AuthFailureLimiter, client_address
from mediamill.errors import TooManyAuthFailures
from mediamill.observability import metrics
from mediamill.runtime import Runtime
from mediamill.store import auth_repo

from .support import LiveServer, make_runtime

PER_ADDRESS, PER_KEY = 5, 3


@pytest.fixture
def braked(tmp_path: Path) -> Iterator[tuple[Runtime, LiveServer]]:
    rt = make_runtime(tmp_path / "data", auth_failures_per_address=PER_ADDRESS, auth_failures_per_key=PER_KEY,
                      metrics_dir=str(tmp_path / "metrics"))
    metrics.reset_for_tests(tmp_path / "metrics")
    metrics.configure_metrics(rt.settings)
    try:
        with LiveServer(rt) as server:
            yield rt, server
    finally:
        metrics.reset_for_tests(None, wipe=False)
        rt.close()


def _from(address: str, base: str) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.x address is loopback on Linux)."""
    return httpx.Client(base_url=base, transport=httpx.HTTPTransport(local_address=address))


def _me(client: httpx.Client, key: str) -> httpx.Response:
    return client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})


def _wrong_key(prefix: str | None = None) -> str:
    return f"mm_{prefix or secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"


def _failures(rt: Runtime) -> dict[tuple[str, str], float]:
    text = metrics.render(rt.engine)[0].decode()
    return {(s.labels["surface"], s.labels["reason"]): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "mediamill_auth_failures_total"}


def test_wrong_bearer_keys_are_braked_per_address(braked: tuple[Runtime, LiveServer]) -> None:
    rt, server = braked
    good = auth_repo.create_key(rt.engine, role="viewer").plaintext
    dormant = auth_repo.create_key(rt.engine, role="viewer").plaintext
    with _from("127.0.0.2", server.url) as attacker, _from("127.0.0.3", server.url) as other, capture_logs() as logs:
        assert _me(other, good).status_code == 200
        assert [_me(attacker, _wrong_key()).status_code for _ in range(PER_ADDRESS)] == [401] * PER_ADDRESS
        refused = _me(attacker, _wrong_key())
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert 1 <= int(refused.headers["retry-after"]) <= 60 // PER_ADDRESS + 1
        assert "too many failed authentication attempts" in refused.json()["detail"]
        assert _me(attacker, "not-even-a-key").status_code == 429
        assert _me(other, dormant).status_code == 200  # other clients are not braked
        assert _me(attacker, good).status_code == 200  # a key verified recently passes the brake
        auth_repo.clear_cache()
        assert _me(attacker, dormant).status_code == 200  # … and `dormant` was just verified from `other`
    warnings = [e for e in logs if e["event"] == "authentication refused: too many failures"]
    assert len(warnings) == 2 and warnings[0]["client"] == "127.0.0.2" and warnings[0]["surface"] == "api"
    assert sum(e["event"] == "authentication failed" for e in logs) == PER_ADDRESS
    assert _failures(rt) == {("api", "invalid"): PER_ADDRESS, ("api", "rate_limited"): 2}


def test_guessing_one_key_from_many_addresses_is_braked_per_prefix(braked: tuple[Runtime, LiveServer]) -> None:
    rt, server = braked
    target = auth_repo.create_key(rt.engine, role="admin")
    codes = []
    for i in range(PER_KEY + 1):
        with _from(f"127.0.1.{i + 1}", server.url) as guesser:
            codes.append(_me(guesser, _wrong_key(target.prefix)).status_code)
    assert codes == [401] * PER_KEY + [429]
    with _from("127.0.2.1", server.url) as fresh:
        assert _me(fresh, _wrong_key(target.prefix)).status_code == 429  # refused before the key is checked
        assert _me(fresh, _wrong_key()).status_code == 401  # other prefixes are not affected


def test_dashboard_login_is_braked(braked: tuple[Runtime, LiveServer]) -> None:
    rt, server = braked
    good = auth_repo.create_key(rt.engine, role="viewer").plaintext

    def attempt(client: httpx.Client, key: str) -> httpx.Response:
        form = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        return client.post("/login", data={"key": key, "csrf_token": token, "next": "/"})

    with _from("127.0.0.4", server.url) as attacker, _from("127.0.0.5", server.url) as other:
        assert [attempt(attacker, _wrong_key()).status_code for _ in range(PER_ADDRESS)] == [401] * PER_ADDRESS
        refused = attempt(attacker, _wrong_key())
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "Too many failed attempts" in refused.text
        assert attempt(other, good).status_code == 303
    assert _failures(rt) == {("dashboard", "invalid"): PER_ADDRESS, ("dashboard", "rate_limited"): 1}


def test_bucket_refills_at_the_limit_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(authlimit.time, "monotonic", lambda: now[0])
    limiter = AuthFailureLimiter(per_address=6, per_key=100)
    for _ in range(6):
        limiter.check("10.0.0.1", None, "k")
        limiter.failed("10.0.0.1", None)
    with pytest.raises(TooManyAuthFailures) as exc:
        limiter.check("10.0.0.1", None, "k")
    assert exc.value.retry_after == 10  # one failure back every 60 / 6 s
    now[0] += 10.0
    limiter.check("10.0.0.1", None, "k")  # one attempt allowed again
    limiter.failed("10.0.0.1", None)
    with pytest.raises(TooManyAuthFailures):
        limiter.check("10.0.0.1", None, "k")


def test_client_address_groups_ipv6_by_64() -> None:
    assert client_address("2001:db8:1:2:aaaa::1") == client_address("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_address("2001:db8:1:3::1") != client_address("2001:db8:1:2::1")
    assert client_address("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_address("192.0.2.7") == "192.0.2.7"
    assert client_address(None) == "unknown"


def test_memory_stays_bounded_under_a_flood_of_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authlimit, "MAX_TRACKED", 100)
    limiter = AuthFailureLimiter(per_address=5, per_key=5)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 250}.{i % 250}", f"{i:08x}")
    assert len(limiter._buckets) <= 100
    for _ in range(5):
        limiter.failed("192.0.2.1", None)
    with pytest.raises(TooManyAuthFailures):  # the newest, emptiest buckets are the ones kept
        limiter.check("192.0.2.1", None, "k")
