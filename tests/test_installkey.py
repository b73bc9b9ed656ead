"""The install key: random per installation, kept 0600, the root of every derived secret."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediamill import installkey
from mediamill.api import signing
from mediamill.config import load_settings
from mediamill.errors import ConfigError
from mediamill.store import auth_repo
from tests.helpers import BACKENDS, database_url, make_runtime

SHARED = "x" * 40


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    installkey.forget()
    yield
    installkey.forget()


def test_generated_once_with_mode_0600_and_stable(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", secret_key="")
    first = installkey.install_key(settings)
    path = tmp_path / "data" / installkey.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    installkey.forget()  # a restart reads the same file
    assert installkey.install_key(settings) == first and len(first) >= 32


def test_two_installs_sign_differently(tmp_path: Path) -> None:
    one = load_settings(data_dir=tmp_path / "one", secret_key="")
    two = load_settings(data_dir=tmp_path / "two", secret_key="")
    assert installkey.install_key(one) != installkey.install_key(two)
    for purpose in ("session", "upload-url", "job-webhooks:default"):
        assert installkey.derive(one, purpose) != installkey.derive(two, purpose)
    assert signing.sign(one, "k", 1) != signing.sign(two, "k", 1)
    assert auth_repo.session_secret(one) != auth_repo.session_secret(two)


def test_shared_secret_key_wins_over_the_file(tmp_path: Path) -> None:
    """Replicas on several machines share MEDIAMILL_SECRET_KEY: same sub-keys whatever their data dirs."""
    one = load_settings(data_dir=tmp_path / "one", secret_key=SHARED)
    two = load_settings(data_dir=tmp_path / "two", secret_key=SHARED)
    assert installkey.derive(one, "session") == installkey.derive(two, "session")
    assert not (tmp_path / "one" / installkey.KEY_FILE).exists()


def test_purposes_are_separated(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, secret_key=SHARED)
    keys = {installkey.derive(settings, p) for p in ("session", "upload-url", "channel-secrets",
                                                      "job-webhooks:a", "job-webhooks:b")}
    assert len(keys) == 5
    assert installkey.install_key(settings) not in keys


def test_short_secret_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"MEDIAMILL_SECRET_KEY: .*at least 32 characters"):
        load_settings(secret_key="short")


def test_loose_key_file_is_tightened_and_an_empty_one_refused(tmp_path: Path) -> None:
    path = tmp_path / installkey.KEY_FILE
    path.write_text("k" * 43)
    path.chmod(0o644)
    installkey.install_key(load_settings(data_dir=tmp_path, secret_key=""))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    installkey.forget()
    path.write_text("\n")
    with pytest.raises(ConfigError, match="holds no usable key"):
        installkey.install_key(load_settings(data_dir=tmp_path, secret_key=""))


def test_legacy_session_key_is_adopted(tmp_path: Path) -> None:
    (tmp_path / installkey.LEGACY_KEY_FILE).write_text("legacy-" + "l" * 40)
    key = installkey.install_key(load_settings(data_dir=tmp_path, secret_key=""))
    assert key == b"legacy-" + b"l" * 40
    assert not (tmp_path / installkey.LEGACY_KEY_FILE).exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_process_with_another_install_key_is_refused(backend: str, tmp_path: Path) -> None:
    """Replicas must share the key: one without it would fail every session, link and secret later."""
    with database_url(backend, tmp_path) as url:
        first = make_runtime(tmp_path / "one", url)  # records its key's fingerprint
        (tmp_path / "two").mkdir()
        (tmp_path / "two" / installkey.KEY_FILE).write_bytes(installkey.install_key(first.settings))
        same = make_runtime(tmp_path / "two", url, migrate=False)
        same.migrate()  # a copy of the key file is the same key
        stranger = make_runtime(tmp_path / "three", url, migrate=False)
        with pytest.raises(ConfigError, match="same MEDIAMILL_SECRET_KEY"):
            stranger.migrate()
        with pytest.raises(ConfigError, match="not the one this database was set up with"):
            stranger.check_install_key()
        for rt in (first, same, stranger):
            rt.close()


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("api.example.com", False), ("", False)])
def test_only_loopback_servers_may_keep_a_generated_key(host: str, loopback: bool, tmp_path: Path) -> None:
    without = load_settings(data_dir=tmp_path, secret_key="")
    assert installkey.is_loopback(host) is loopback
    if loopback:
        installkey.require_shared_key(without, host, "api")
    else:
        with pytest.raises(ConfigError, match="MEDIAMILL_SECRET_KEY is not set"):
            installkey.require_shared_key(without, host, "api")
    installkey.require_shared_key(load_settings(data_dir=tmp_path, secret_key="s" * 32), host, "api")
