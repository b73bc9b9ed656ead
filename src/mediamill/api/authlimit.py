"""A brake on failed authentication: bearer keys on the API and the dashboard's ``/login`` form.

Failures are counted in two token buckets per process — one per client address (an IPv6
client by its /64, which one host usually owns whole) and one per key prefix (the public
``mm_<prefix>_`` part that names the key being guessed). Each bucket holds ``limit``
failures and refills at ``limit`` per minute. While either bucket of a request is empty,
the attempt is refused with 429 and ``Retry-After`` *before* the key is checked, so a guess
made while braked teaches the guesser nothing.

A key this process verified in the last :data:`TRUST_SECONDS` is let through even while its
address or prefix is braked: a client that really holds the key keeps working next to a
guesser on the same NAT, or one aiming at its prefix. Only the correct key matches, so this
is no oracle.

The state is per process, on purpose: counting in the database would turn every wrong key
into a database write, handing a flood of bad requests a lever on the database. With N API
processes behind one address an attacker gets at most N times the budget — still a handful
of guesses a minute against a 256-bit secret — and the limit is the same wherever the
request lands, since every process brakes on its own.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import threading
import time
from dataclasses import dataclass

from mediamill.errors import TooManyAuthFailures

TRUST_SECONDS = 900.0
MAX_TRACKED = 50_000  # buckets kept in memory; full ones are dropped first when over


@dataclass
class _Bucket:
    tokens: float
    at: float


def client_address(host: str | None) -> str:
    """The address a client is counted under: IPv4 as is, IPv6 by its /64."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


class AuthFailureLimiter:
    """Per-address and per-key-prefix failure buckets, plus recently verified keys (see the module doc)."""

    def __init__(self, *, per_address: int, per_key: int) -> None:
        self._limits = {"addr": float(per_address), "key": float(per_key)}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._trusted: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, address: str, prefix: str | None, key: str) -> None:
        """Raise :class:`TooManyAuthFailures` when this attempt must wait (before checking the key)."""
        now = time.monotonic()
        digest = _digest(key)
        with self._lock:
            if self._trusted.get(digest, 0.0) > now:
                return
            wait = max(self._wait(("addr", address), now),
                       self._wait(("key", prefix), now) if prefix else 0.0)
        if wait > 0:
            raise TooManyAuthFailures(max(1, math.ceil(wait)))

    def failed(self, address: str, prefix: str | None) -> None:
        """Count a failed attempt against the address and the key prefix."""
        now = time.monotonic()
        with self._lock:
            self._take(("addr", address), now)
            if prefix:
                self._take(("key", prefix), now)
            if len(self._buckets) > MAX_TRACKED:
                self._forget_full(now)

    def verified(self, key: str) -> None:
        """``key`` was just verified: it passes any brake for a while."""
        now = time.monotonic()
        with self._lock:
            if len(self._trusted) > MAX_TRACKED:
                self._trusted = {d: t for d, t in self._trusted.items() if t > now}
            self._trusted[_digest(key)] = now + TRUST_SECONDS

    def _refill(self, kind_key: tuple[str, str], now: float) -> _Bucket:
        limit = self._limits[kind_key[0]]
        bucket = self._buckets.get(kind_key)
        if bucket is None:
            return _Bucket(limit, now)
        bucket.tokens = min(limit, bucket.tokens + (now - bucket.at) * limit / 60.0)
        bucket.at = now
        return bucket

    def _wait(self, kind_key: tuple[str, str], now: float) -> float:
        bucket = self._refill(kind_key, now)
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) * 60.0 / self._limits[kind_key[0]]

    def _take(self, kind_key: tuple[str, str], now: float) -> None:
        bucket = self._refill(kind_key, now)
        bucket.tokens = max(0.0, bucket.tokens - 1.0)
        self._buckets[kind_key] = bucket

    def _forget_full(self, now: float) -> None:
        """Drop refilled buckets; if a flood of distinct addresses/prefixes keeps them all busy, keep the
        emptiest three quarters (a dropped bucket starts full again: the brake weakens, memory stays bounded)."""
        for kind_key in list(self._buckets):
            if self._refill(kind_key, now).tokens >= self._limits[kind_key[0]]:
                del self._buckets[kind_key]
        if len(self._buckets) > MAX_TRACKED:
            keep = sorted(self._buckets.items(), key=lambda item: item[1].tokens)[: MAX_TRACKED * 3 // 4]
            self._buckets = dict(keep)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()
