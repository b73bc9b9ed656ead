"""Dashboard sessions: an API key login becomes a signed, HttpOnly, SameSite=Lax cookie.

The cookie holds ``{k: key id, n: session nonce, exp}`` signed with the server secret
(:func:`mediamill.store.auth_repo.session_secret`); every request re-checks that the key is
still live, so revoking a key ends its sessions within :data:`KEY_CACHE_SECONDS`. Logging out
and redeeming a one-time login link spend the token's nonce in the database
(:func:`mediamill.store.auth_repo.spend_token`): every API process refuses it from then on,
across restarts, until it would have expired anyway.

CSRF: the synchronizer token is ``HMAC(secret, "csrf." + nonce)`` — bound to the session,
stored nowhere. Pages carry it in a ``<meta>`` tag and in every form; scripts send it as
``X-CSRF-Token``. A cookie-authenticated request with an unsafe method and no valid token is
refused with 403, for the dashboard's own forms and for every ``/v1`` route alike (the check
runs inside the session resolver that :mod:`mediamill.api.auth` calls). Bearer-key requests are
unaffected: browsers never attach those on their own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from mediamill.api.auth import SESSION_COOKIE, Caller
from mediamill.errors import Forbidden
from mediamill.store import auth_repo

SESSION_SECONDS = 12 * 3600
KEY_CACHE_SECONDS = 5.0
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
LOGIN_CSRF_COOKIE = "mm_login_csrf"  # double-submit token of the login form (no session yet)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Session:
    key_id: int
    nonce: str
    expires: float


_keys: dict[int, tuple[float, auth_repo.KeyRecord | None]] = {}


def _secret(request: Request) -> bytes:
    return auth_repo.session_secret(request.app.state.runtime.settings)


def issue(request: Request, key_id: int) -> tuple[str, Session]:
    """A new session for ``key_id``: the cookie value and what it says."""
    session = Session(key_id, secrets.token_urlsafe(16), time.time() + SESSION_SECONDS)
    value = auth_repo.sign_token(_secret(request), "session",
                                 {"k": key_id, "n": session.nonce, "exp": int(session.expires)})
    return value, session


def read(request: Request, value: str) -> Session | None:
    payload = auth_repo.read_token(_secret(request), "session", value)
    if payload is None or not isinstance(payload.get("k"), int):
        return None
    if auth_repo.is_spent(request.app.state.runtime.engine, "session:" + str(payload.get("n"))):
        return None
    return Session(payload["k"], str(payload["n"]), float(payload["exp"]))


def end(request: Request, session: Session) -> None:
    """Log out: the cookie is cleared, and its nonce refused by every process until it would have expired."""
    auth_repo.spend_token(request.app.state.runtime.engine, "session:" + session.nonce, session.expires)


def csrf_token(request: Request, session: Session) -> str:
    mac = hmac.new(_secret(request), b"csrf." + session.nonce.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode()


def check_csrf(request: Request, session: Session, submitted: str | None) -> None:
    """403 unless ``submitted`` is this session's token and the request comes from this origin."""
    if not submitted or not hmac.compare_digest(submitted, csrf_token(request, session)):
        raise Forbidden("missing or invalid CSRF token (send X-CSRF-Token or the csrf_token form field)")
    check_origin(request)


def check_origin(request: Request) -> None:
    """A cross-site ``Origin`` is refused even with a token (defence in depth).

    Same site means the request's ``Host``, or the host of ``MEDIAMILL_PUBLIC_URL`` behind a proxy.
    """
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return
    public = request.app.state.runtime.settings.public_url or ""
    allowed = {request.headers.get("host"), urlsplit(public).netloc if public else None}
    if urlsplit(origin).netloc not in allowed:
        raise Forbidden("cross-origin request refused")


def key_for(request: Request, key_id: int) -> auth_repo.KeyRecord | None:
    """The live key behind a session (cached a few seconds; a revoked key ends its sessions)."""
    now = time.monotonic()
    hit = _keys.get(key_id)
    if hit is not None and now - hit[0] < KEY_CACHE_SECONDS:
        return hit[1]
    record = auth_repo.key_record(request.app.state.runtime.engine, key_id)
    if len(_keys) > 10_000:
        _keys.clear()
    _keys[key_id] = (now, record)
    return record


def caller_of(request: Request, value: str | None) -> tuple[Caller, Session] | None:
    """The caller and session of a cookie value, or None (no, forged, expired or revoked session)."""
    session = read(request, value) if value else None
    record = key_for(request, session.key_id) if session else None
    if session is None or record is None:
        return None
    return Caller(record.tenant_id, record.role, record.id, record.name), session


def resolve(request: Request, value: str) -> Caller | None:
    """The resolver :mod:`mediamill.api.auth` calls for a session cookie (no Bearer header).

    Unsafe methods must carry the CSRF token in ``X-CSRF-Token``.
    """
    found = caller_of(request, value)
    if found is None:
        return None
    caller, session = found
    if request.method not in SAFE_METHODS:
        check_csrf(request, session, request.headers.get(CSRF_HEADER))
    request.state.session = session
    return caller


def redeem_login_token(request: Request, token: str) -> int | None:
    """The key id of a genuine, unexpired, unused one-time login token (spending it)."""
    payload = auth_repo.read_token(_secret(request), "login", token)
    if payload is None or not isinstance(payload.get("k"), int):
        return None
    engine = request.app.state.runtime.engine
    if not auth_repo.spend_token(engine, "login:" + str(payload.get("n")), float(payload["exp"])):
        return None
    return int(payload["k"])


def cookie_options(request: Request) -> dict[str, Any]:
    """HttpOnly, SameSite=Lax, Secure when the dashboard is served over HTTPS."""
    public = request.app.state.runtime.settings.public_url or ""
    secure = request.url.scheme == "https" or public.startswith("https://")
    return {"httponly": True, "samesite": "lax", "secure": secure, "path": "/"}


__all__ = ["SESSION_COOKIE", "Session", "caller_of", "check_csrf", "csrf_token", "end", "issue",
           "redeem_login_token", "resolve"]
