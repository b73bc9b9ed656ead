"""Who is calling: API keys (``Authorization: Bearer mm_…``) or a dashboard session cookie.

Every route but ``/healthz``, ``/readyz`` and ``/metrics`` depends on :func:`current_caller`
(or on ``require(role)``). Roles nest: admin > operator > submitter > viewer.

Sessions: the dashboard sets a cookie named :data:`SESSION_COOKIE` after a key login and
registers the resolver with :func:`set_session_resolver`. Until it does, a cookie resolves
to "no session" and only bearer keys authenticate.

Failed key checks are braked per client address and per key prefix
(:mod:`mediamill.api.authlimit`): past the limit an attempt is answered 429 with ``Retry-After``,
logged, and counted in ``mediamill_auth_failures_total``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from mediamill.api.authlimit import AuthFailureLimiter, client_address
from mediamill.errors import Forbidden, TooManyAuthFailures, Unauthorized
from mediamill.observability import metrics
from mediamill.observability.logging import get_logger
from mediamill.store import auth_repo

log = get_logger("mediamill.auth")

SESSION_COOKIE = "mm_session"
bearer = HTTPBearer(auto_error=False, description="An API key: `mm_<prefix>_<secret>`")


@dataclass(frozen=True)
class Caller:
    """The authenticated principal of a request."""

    tenant_id: str
    role: str
    key_id: int | None
    name: str | None

    def can(self, role: str) -> bool:
        return auth_repo.role_rank(self.role) >= auth_repo.role_rank(role)

    @property
    def is_root(self) -> bool:
        """The root admin: an admin of the ``default`` tenant, who runs the install (shared queues,
        breakers, every tenant's keys)."""
        return self.tenant_id == auth_repo.DEFAULT_TENANT and self.can("admin")

    @property
    def scope(self) -> str | None:
        """The tenant whose share of the shared machinery (queues, workers, alerts) this caller sees;
        None for the ``default`` tenant, which runs the install and sees all of it."""
        return None if self.tenant_id == auth_repo.DEFAULT_TENANT else self.tenant_id

    @property
    def label(self) -> str:
        """How the caller shows in ``submitted_by`` and audit fields."""
        return f"key:{self.key_id}" + (f" ({self.name})" if self.name else "") if self.key_id else self.name or "?"


SessionResolver = Callable[[Request, str], Caller | None]


def _no_session(_request: Request, _value: str) -> Caller | None:
    return None


_session_resolver: SessionResolver = _no_session


def set_session_resolver(resolver: SessionResolver | None) -> None:
    """The dashboard installs its cookie → Caller function here (None restores "no session")."""
    global _session_resolver
    _session_resolver = resolver or _no_session


def resolve_session(request: Request, value: str) -> Caller | None:
    """A caller from a session cookie value, or None (stubbed until the dashboard installs one)."""
    return _session_resolver(request, value)


def _limiter(request: Request) -> AuthFailureLimiter:
    """The app's failure brake (one per process, sized by the settings)."""
    state = request.app.state
    limiter = getattr(state, "auth_limiter", None)
    if limiter is None:
        settings = state.runtime.settings
        limiter = state.auth_limiter = AuthFailureLimiter(per_address=settings.auth_failures_per_address,
                                                          per_key=settings.auth_failures_per_key)
    return limiter


async def check_key(request: Request, key: str, *, surface: str) -> auth_repo.KeyRecord | None:
    """Verify an API key behind the failure brake: the key's record, None when it is not valid.

    Raises :class:`TooManyAuthFailures` (429) while the client's address or the key's prefix is braked.
    """
    limiter = _limiter(request)
    address = client_address(request.client.host if request.client else None)
    parts = auth_repo.split_key(key)
    prefix = parts[0] if parts else None
    try:
        limiter.check(address, prefix, key)
    except TooManyAuthFailures as exc:
        metrics.auth_failure(surface, "rate_limited")
        log.warning("authentication refused: too many failures", surface=surface, client=address,
                    key_prefix=prefix, retry_after=exc.retry_after)
        raise
    record = await run_in_threadpool(auth_repo.cached_lookup, request.app.state.runtime.engine, key)
    if record is None:
        limiter.failed(address, prefix)
        metrics.auth_failure(surface, "invalid")
        log.info("authentication failed", surface=surface, client=address, key_prefix=prefix)
    else:
        limiter.verified(key)
    return record


async def current_caller(request: Request,
                         credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Caller:
    """The request's caller; 401 when there is no valid key or session."""
    cached = getattr(request.state, "caller", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    caller: Caller | None = None
    if credentials is not None and credentials.scheme.lower() == "bearer":
        record = auth_repo.peek_cached(credentials.credentials)
        if record is not None:  # the common case: no thread hop, no database
            caller = Caller(record.tenant_id, record.role, record.id, record.name)
        else:
            found = await check_key(request, credentials.credentials, surface="api")
            caller = Caller(found.tenant_id, found.role, found.id, found.name) if found else None
    elif (cookie := request.cookies.get(SESSION_COOKIE)) is not None:
        caller = await run_in_threadpool(resolve_session, request, cookie)  # reads the database
    if caller is None:
        raise Unauthorized("a valid API key is required (Authorization: Bearer mm_…)")
    request.state.caller = caller
    return caller


def require(role: str) -> Callable[..., object]:
    """A dependency that admits callers with ``role`` or a stronger one (403 otherwise)."""
    auth_repo.role_rank(role)

    async def dependency(caller: Caller = Depends(current_caller)) -> Caller:
        if not caller.can(role):
            raise Forbidden(f"this needs the {role} role; the key has {caller.role}")
        return caller

    dependency.__name__ = f"require_{role}"
    return dependency


AnyCaller = Depends(current_caller)
Viewer = Depends(require("viewer"))
Submitter = Depends(require("submitter"))
Operator = Depends(require("operator"))
Admin = Depends(require("admin"))
