"""HMAC-signed, expiring URLs (direct uploads to local storage)."""

from __future__ import annotations

import hashlib
import hmac
import time

from mediamill import installkey
from mediamill.config import Settings
from mediamill.errors import Forbidden


def secret(settings: Settings) -> bytes:
    """The key signing upload URLs, derived from the install key."""
    return installkey.derive(settings, "upload-url")


def sign(settings: Settings, message: str, expires_at: int) -> str:
    """The signature of ``message`` valid until ``expires_at`` (epoch seconds)."""
    return hmac.new(secret(settings), f"{message}\n{expires_at}".encode(), hashlib.sha256).hexdigest()


def check(settings: Settings, message: str, expires_at: int, signature: str) -> None:
    """Raise Forbidden unless ``signature`` is valid and not expired."""
    if expires_at < int(time.time()):
        raise Forbidden("this upload URL has expired")
    if not hmac.compare_digest(sign(settings, message, expires_at).encode(), signature.encode("utf-8", "replace")):
        raise Forbidden("invalid upload URL signature")
