"""HMAC-signed, expiring URLs (direct uploads to local storage)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from mediamill.config import Settings
from mediamill.errors import Forbidden

_cache: dict[str, bytes] = {}


def secret(settings: Settings) -> bytes:
    """``MEDIAMILL_SECRET_KEY``, else a random key kept in ``data_dir/secret_key`` (created once, 0600)."""
    if settings.secret_key:
        return settings.secret_key.encode()
    path = Path(settings.data_dir) / "secret_key"
    cached = _cache.get(str(path))
    if cached is not None:
        return cached
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_bytes().strip()
    else:
        value = secrets.token_hex(32).encode()
        with os.fdopen(fd, "wb") as fh:
            fh.write(value)
    _cache[str(path)] = value
    return value


def sign(settings: Settings, message: str, expires_at: int) -> str:
    return hmac.new(secret(settings), f"{message}\n{expires_at}".encode(), hashlib.sha256).hexdigest()


def check(settings: Settings, message: str, expires_at: int, signature: str) -> None:
    """Raise Forbidden unless ``signature`` is valid and not expired."""
    if expires_at < int(time.time()):
        raise Forbidden("this upload URL has expired")
    if not hmac.compare_digest(sign(settings, message, expires_at).encode(), signature.encode("utf-8", "replace")):
        raise Forbidden("invalid upload URL signature")
