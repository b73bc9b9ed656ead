"""The install key: the one root secret every other secret of an installation derives from.

It is ``MEDIAMILL_SECRET_KEY`` when set (a fleet of API processes and workers on several
machines must share it), otherwise 32 random bytes generated on first start and kept in
``data_dir/secret_key`` with mode 0600. Nothing is ever derived from a constant: two
installations always sign differently.

Each use gets its own sub-key, ``HMAC-SHA256(install key, "mediamill/" + purpose)``, so a
value signed for one purpose (an upload URL) can never pass for another (a session cookie),
and rotating the install key rotates everything at once:

* ``session`` — dashboard session cookies, one-time login links, CSRF tokens;
* ``upload-url`` — signed direct-upload URLs;
* ``job-webhooks:<tenant>`` — the per-tenant secret signing ``notify.webhook`` deliveries;
* ``channel-secrets`` — the Fernet key that encrypts webhook channel secrets at rest.

A server reachable from other machines (``mediamill api`` / ``serve`` bound to anything but a
loopback address) refuses to start without ``MEDIAMILL_SECRET_KEY`` (:func:`require_shared_key`):
such a server is usually one replica of several, and a key generated in its own data dir would
make every session, login link and signed URL of the other replicas invalid on it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from mediamill.errors import ConfigError
from mediamill.fsmode import private_dir

KEY_FILE = "secret_key"
LEGACY_KEY_FILE = "session.key"  # the dashboard's key file before there was one install key
_cache: dict[tuple[str, str], bytes] = {}
_lock = threading.Lock()


def install_key(settings: Any) -> bytes:
    """The root secret: ``MEDIAMILL_SECRET_KEY``, else the key file in ``data_dir`` (created once, 0600)."""
    cache_key = (settings.secret_key or "", str(settings.data_dir))
    with _lock:
        if cache_key not in _cache:
            _cache[cache_key] = (settings.secret_key.encode() if settings.secret_key
                                 else _key_file(Path(settings.data_dir)))
        return _cache[cache_key]


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, ``localhost``)."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name or a wildcard: other machines may reach it


def require_shared_key(settings: Any, host: str, command: str) -> None:
    """ConfigError when a server bound to ``host`` (not loopback) has no ``MEDIAMILL_SECRET_KEY``."""
    if settings.secret_key or is_loopback(host):
        return
    raise ConfigError(
        f"`mediamill {command}` listens on {host}, reachable from other machines, but MEDIAMILL_SECRET_KEY is not "
        "set. API replicas must share one install key (sessions, login links and signed upload URLs made by one "
        "must verify on the others): set MEDIAMILL_SECRET_KEY to the same value of at least 32 characters on every "
        "process (e.g. `openssl rand -hex 32`), or listen on 127.0.0.1 for a single local server.")


def derive(settings: Any, purpose: str) -> bytes:
    """The 32-byte sub-key of ``purpose`` (see the module docstring for the purposes in use)."""
    return hmac.new(install_key(settings), b"mediamill/" + purpose.encode(), hashlib.sha256).digest()


def key_check(settings: Any) -> str:
    """A fingerprint of the install key (safe to store: it reveals nothing about the key)."""
    return derive(settings, "key-check").hex()[:32]


def fernet_key(settings: Any, purpose: str) -> bytes:
    """A Fernet key (url-safe base64 of 32 bytes) derived for ``purpose``."""
    return base64.urlsafe_b64encode(derive(settings, purpose))


def forget() -> None:
    """Drop cached keys (tests that switch data directories or keys)."""
    with _lock:
        _cache.clear()


def _key_file(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    private_dir(data_dir)
    _adopt_legacy(data_dir, path)
    try:  # O_EXCL: when two processes start together, one writes and both read the same key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    if path.stat().st_mode & 0o077:  # a copied or restored file: only the owner may read it
        os.chmod(path, 0o600)
    value = path.read_text().strip()
    if len(value) < 16:
        raise ConfigError(f"{path} holds no usable key (delete it to generate a new one, "
                          "or set MEDIAMILL_SECRET_KEY)")
    return value.encode()


def _adopt_legacy(data_dir: Path, path: Path) -> None:
    """An older install kept the dashboard's random key in ``session.key``: keep using it."""
    legacy = data_dir / LEGACY_KEY_FILE
    if path.exists() or not legacy.exists():
        return
    try:
        os.link(legacy, path)
    except FileExistsError:
        return
    os.chmod(path, 0o600)
    legacy.unlink(missing_ok=True)


class SecretBox:
    """Small secrets encrypted at rest (Fernet: AES-128-CBC + HMAC-SHA256) under a sub-key of the install key.

    A sealed value reads ``enc:v1:<token>``. A value without the prefix is a plaintext stored
    before encryption existed: :meth:`open` passes it through, so nothing breaks while such
    rows wait for :func:`mediamill.notify.channels.seal_plaintext_secrets`.
    """

    PREFIX = "enc:v1:"

    def __init__(self, key: bytes) -> None:
        from cryptography.fernet import Fernet

        self._fernet = Fernet(key)

    @classmethod
    def for_settings(cls, settings: Any, purpose: str = "channel-secrets") -> SecretBox:
        """The box of ``purpose`` for this installation."""
        return cls(fernet_key(settings, purpose))

    @classmethod
    def is_sealed(cls, value: str) -> bool:
        return value.startswith(cls.PREFIX)

    def seal(self, plaintext: str) -> str:
        """Encrypt ``plaintext`` (sealing a sealed value returns it unchanged)."""
        if self.is_sealed(plaintext):
            return plaintext
        return self.PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, value: str) -> str:
        """The plaintext of a sealed value (a legacy plaintext as is); ConfigError under another install key."""
        from cryptography.fernet import InvalidToken

        if not self.is_sealed(value):
            return value
        try:
            return self._fernet.decrypt(value[len(self.PREFIX):].encode()).decode()
        except InvalidToken:
            raise ConfigError("a stored secret was encrypted under another install key: give every process the "
                              "same MEDIAMILL_SECRET_KEY (or data_dir/secret_key)") from None
