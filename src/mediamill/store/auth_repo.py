"""Tenants and API keys.

A key looks like ``mm_<prefix>_<secret>``: the prefix (8 lowercase hex characters) finds the
row, the secret (32 random bytes, url-safe base64) is checked against its SHA-256 with a
constant-time compare. A slow KDF buys nothing for a 256-bit random secret, and SHA-256
keeps the per-request check in the microseconds. The plaintext is returned once, at creation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from mediamill import installkey
from mediamill.errors import InvalidInput, NotFound
from mediamill.store.db import reading
from mediamill.store.tables import api_keys, spent_tokens, tenants
from mediamill.store.timeutil import utcnow

ROLES = ("viewer", "submitter", "operator", "admin")  # weakest first
KEY_PREFIX = "mm_"
DEFAULT_TENANT = "default"
TOUCH_INTERVAL_SECONDS = 60.0
_TENANT_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass(frozen=True)
class KeyRecord:
    """What a verified key says about its holder."""

    id: int
    tenant_id: str
    role: str
    name: str | None


@dataclass(frozen=True)
class CreatedKey:
    id: int
    tenant_id: str
    role: str
    name: str | None
    prefix: str
    plaintext: str  # shown once, never stored


def role_rank(role: str) -> int:
    """Position of a role in admin > operator > submitter > viewer (higher = more rights)."""
    try:
        return ROLES.index(role)
    except ValueError:
        raise InvalidInput(f"unknown role {role!r}; expected one of {', '.join(reversed(ROLES))}") from None


def check_tenant_id(tenant_id: str) -> str:
    if not tenant_id or len(tenant_id) > 64 or not set(tenant_id) <= _TENANT_CHARS:
        raise InvalidInput("a tenant id is 1-64 characters of a-z, 0-9, '_' and '-'")
    return tenant_id


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(plaintext: str) -> tuple[str, str] | None:
    """``mm_<prefix>_<secret>`` → (prefix, secret); None when the shape is wrong."""
    if not plaintext.startswith(KEY_PREFIX):
        return None
    prefix, sep, secret = plaintext[len(KEY_PREFIX):].partition("_")
    if not sep or len(prefix) != 8 or not secret:
        return None
    return prefix, secret


# ------------------------------------------------------------------------------ tenants
def ensure_tenant(conn: Connection, tenant_id: str, name: str | None = None) -> None:
    """Create the tenant when it does not exist yet."""
    check_tenant_id(tenant_id)
    exists = conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tenant_id)).first()
    if exists is None:
        conn.execute(tenants.insert().values(id=tenant_id, name=name or tenant_id, created_at=utcnow()))


# ------------------------------------------------------------------------------ keys
def create_key(engine: Engine, *, role: str, tenant_id: str = DEFAULT_TENANT,
               name: str | None = None) -> CreatedKey:
    """Create a key (and its tenant when new); the plaintext is only in the return value."""
    role_rank(role)
    for _ in range(5):  # a prefix collision is astronomically rare; retry rather than fail
        prefix, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
        try:
            with engine.begin() as conn:
                ensure_tenant(conn, tenant_id)
                key_id = conn.execute(api_keys.insert().values(
                    tenant_id=tenant_id, name=name, prefix=prefix, key_hash=_hash(secret), role=role,
                    created_at=utcnow()).returning(api_keys.c.id)).scalar_one()
        except IntegrityError:
            continue
        return CreatedKey(key_id, tenant_id, role, name, prefix, f"{KEY_PREFIX}{prefix}_{secret}")
    raise RuntimeError("could not allocate a unique key prefix")


def list_keys(conn: Connection, *, tenant_id: str | None = None,
              include_revoked: bool = True) -> list[dict[str, Any]]:
    """Keys without their hashes (newest first)."""
    cols = [c for c in api_keys.c if c.name != "key_hash"]
    q = sa.select(*cols).order_by(api_keys.c.id.desc())
    if tenant_id is not None:
        q = q.where(api_keys.c.tenant_id == tenant_id)
    if not include_revoked:
        q = q.where(api_keys.c.revoked_at.is_(None))
    return [dict(r) for r in conn.execute(q).mappings()]


def revoke_key(engine: Engine, key_id: int, *, tenant_id: str | None = None) -> None:
    """Revoke a key (idempotent); NotFound when it is not in ``tenant_id``."""
    cond = api_keys.c.id == key_id
    if tenant_id is not None:
        cond = cond & (api_keys.c.tenant_id == tenant_id)
    with engine.begin() as conn:
        row = conn.execute(sa.select(api_keys.c.revoked_at).where(cond)).first()
        if row is None:
            raise NotFound(f"no API key {key_id}")
        if row[0] is None:
            conn.execute(api_keys.update().where(cond).values(revoked_at=utcnow()))
    _cache.forget_id(key_id)


def verify_key(conn: Connection, plaintext: str) -> KeyRecord | None:
    """The key's record when ``plaintext`` is a live key, else None (no timing hint either way)."""
    parts = split_key(plaintext)
    if parts is None:
        return None
    prefix, secret = parts
    row = conn.execute(sa.select(api_keys.c.id, api_keys.c.tenant_id, api_keys.c.role, api_keys.c.name,
                                 api_keys.c.key_hash, api_keys.c.revoked_at)
                       .where(api_keys.c.prefix == prefix)).mappings().first()
    expected = row["key_hash"] if row is not None else _hash("x")
    ok = hmac.compare_digest(expected, _hash(secret))
    if row is None or not ok or row["revoked_at"] is not None:
        return None
    return KeyRecord(row["id"], row["tenant_id"], row["role"], row["name"])


def ensure_admin_key(engine: Engine) -> str | None:
    """On first start, create an admin key for tenant 'default' and return its plaintext.

    Returns None when any admin key exists already (its plaintext is unknown by design).
    """
    with engine.connect() as conn:
        existing = conn.execute(sa.select(api_keys.c.id).where(api_keys.c.role == "admin").limit(1)).first()
    if existing is not None:
        return None
    return create_key(engine, role="admin", tenant_id=DEFAULT_TENANT, name="first-start admin").plaintext


# ------------------------------------------------------------------------------ cache
class KeyCache:
    """Verified keys for a few seconds, and last_used_at written at most once a minute per key.

    Revocation through this process takes effect at once; through another process, within
    ``ttl`` seconds.
    """

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._hits: dict[str, tuple[float, KeyRecord]] = {}
        self._touched: dict[int, float] = {}
        self._lock = threading.Lock()

    def peek(self, plaintext: str) -> KeyRecord | None:
        """A fresh cached record whose last_used_at needs no write now (no I/O: safe on the event loop)."""
        now = time.monotonic()
        with self._lock:
            hit = self._hits.get(_hash(plaintext))
            if hit is None or now - hit[0] >= self.ttl:
                return None
            if now - self._touched.get(hit[1].id, -1e9) >= TOUCH_INTERVAL_SECONDS:
                return None
            return hit[1]

    def lookup(self, engine: Engine, plaintext: str) -> KeyRecord | None:
        digest = _hash(plaintext)
        now = time.monotonic()
        with self._lock:
            hit = self._hits.get(digest)
        if hit is not None and now - hit[0] < self.ttl:
            record: KeyRecord | None = hit[1]
        else:
            with reading(engine) as conn:  # a read: it does not wait for SQLite's write lock
                record = verify_key(conn, plaintext)
            with self._lock:
                if record is None:
                    self._hits.pop(digest, None)
                else:
                    if len(self._hits) > 10_000:
                        self._hits.clear()
                    self._hits[digest] = (now, record)
        if record is not None:
            self._maybe_touch(engine, record.id, now)
        return record

    def _maybe_touch(self, engine: Engine, key_id: int, now: float) -> None:
        with self._lock:
            if now - self._touched.get(key_id, -1e9) < TOUCH_INTERVAL_SECONDS:
                return
            self._touched[key_id] = now
        with engine.begin() as conn:
            conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(last_used_at=utcnow()))

    def forget_id(self, key_id: int) -> None:
        with self._lock:
            self._hits = {d: v for d, v in self._hits.items() if v[1].id != key_id}

    def clear(self) -> None:
        with self._lock:
            self._hits.clear()
            self._touched.clear()


_cache = KeyCache()


def cached_lookup(engine: Engine, plaintext: str) -> KeyRecord | None:
    """Verify a key through the process-wide cache."""
    return _cache.lookup(engine, plaintext)


def peek_cached(plaintext: str) -> KeyRecord | None:
    """A cached verification without I/O (None: ask :func:`cached_lookup`)."""
    return _cache.peek(plaintext)


def clear_cache() -> None:
    _cache.clear()


# ------------------------------------------------------------------------------ dashboard sessions
# The dashboard's session cookie and `serve`'s one-time login link are signed tokens
# (``base64url(json).base64url(hmac)``) any API process can verify. What a signature cannot say —
# "this session was logged out", "this link was used" — is in ``spent_tokens``, shared by every
# process and kept across restarts until the token would have expired anyway.
LOGIN_TOKEN_SECONDS = 900


def session_secret(settings: Any) -> bytes:
    """The key signing sessions, login links and CSRF tokens (derived from the install key).

    A fleet of API processes on several machines must share ``MEDIAMILL_SECRET_KEY``.
    """
    return installkey.derive(settings, "session")


def spend_token(engine: Engine, token: str, expires_at: float) -> bool:
    """Mark ``token`` (a session or login-link nonce) spent until ``expires_at`` (epoch seconds).

    False when it already was: the primary key makes a race between two processes have one winner.
    """
    until = datetime.fromtimestamp(expires_at, UTC).replace(tzinfo=None)
    try:
        with engine.begin() as conn:
            conn.execute(spent_tokens.insert().values(token=token, expires_at=until, created_at=utcnow()))
    except IntegrityError:
        with engine.begin() as conn:  # an expired row not yet pruned does not block a new spend
            result = conn.execute(spent_tokens.update().where(spent_tokens.c.token == token,
                                                              spent_tokens.c.expires_at <= utcnow())
                                  .values(expires_at=until, created_at=utcnow()))
        return bool(result.rowcount)
    return True


def is_spent(engine: Engine, token: str) -> bool:
    """True while ``token`` is spent and not yet expired."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(spent_tokens.c.token).where(spent_tokens.c.token == token,
                                                                  spent_tokens.c.expires_at > utcnow())).first()
    return row is not None


def prune_spent_tokens(engine: Engine, *, batch: int = 5000) -> int:
    """Forget spent tokens past their expiry (the signature refuses them by then)."""
    with engine.begin() as conn:
        expired = sa.select(spent_tokens.c.token).where(spent_tokens.c.expires_at <= utcnow()).limit(batch)
        result = conn.execute(spent_tokens.delete().where(spent_tokens.c.token.in_(expired.scalar_subquery())))
    return int(result.rowcount or 0)


def sign_token(secret: bytes, purpose: str, payload: dict[str, Any]) -> str:
    """``payload`` (with an ``exp`` epoch) as a token valid for ``purpose`` only."""
    body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).rstrip(b"=")
    mac = hmac.new(secret, purpose.encode() + b"." + body, hashlib.sha256).digest()
    return (body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()


def read_token(secret: bytes, purpose: str, token: str) -> dict[str, Any] | None:
    """The payload of a genuine, unexpired token for ``purpose``; None otherwise."""
    body, _, sig = token.encode("ascii", "replace").partition(b".")
    expected = base64.urlsafe_b64encode(hmac.new(secret, purpose.encode() + b"." + body,
                                                 hashlib.sha256).digest()).rstrip(b"=")
    if not body or not hmac.compare_digest(expected, sig):
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
    except ValueError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int | float) or payload["exp"] < time.time():
        return None
    return payload


def key_record(engine: Engine, key_id: int) -> KeyRecord | None:
    """A live (unrevoked) key by id: what a dashboard session stands for."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(api_keys.c.id, api_keys.c.tenant_id, api_keys.c.role, api_keys.c.name)
                           .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))).first()
    return KeyRecord(row[0], row[1], row[2], row[3]) if row is not None else None


def login_url(rt: Any, base: str, key: str) -> str:
    """A one-time link (signed, expires in 15 minutes, single use) that logs the browser in as ``key``."""
    record = cached_lookup(rt.engine, key)
    if record is None:
        return f"{base}/login"
    token = sign_token(session_secret(rt.settings), "login",
                       {"k": record.id, "exp": int(time.time()) + LOGIN_TOKEN_SECONDS, "n": secrets.token_urlsafe(12)})
    return f"{base}/login/{token}"
