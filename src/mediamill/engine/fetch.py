"""Fetching URL inputs (by the worker), behind the SSRF guard.

Every hop goes through :func:`mediamill.netguard.guarded_client`: the address a connection is
actually made to is the one that was checked (a DNS answer that changes between the check and
the connect cannot reach a private host), redirects are re-checked one by one, and proxy
environment variables are ignored so a ``HTTP_PROXY`` cannot route around the guard (an operator
chooses a proxy with ``MEDIAMILL_OUTBOUND_PROXY``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from mediamill import netguard
from mediamill.errors import InvalidInput, SourceTooLarge, TransientError
from mediamill.media.sniff import sniff_file
from mediamill.storage import new_key

if TYPE_CHECKING:
    from mediamill.runtime import Runtime

FETCH_TIMEOUT_SECONDS = 30.0
MAX_REDIRECTS = 5


def fetch_to_storage(runtime: Runtime, url: str, tenant_id: str, scratch: Path) -> tuple[str, str, int]:
    """Download ``url`` (redirects re-checked by the guard) into storage; returns (key, sniffed mime, size)."""
    limit = runtime.settings.limits.max_input_bytes
    scratch.mkdir(parents=True, exist_ok=True)
    dest = scratch / "fetched"
    current = url
    allow = netguard.Allowlist.parse(runtime.settings.url_allowlist)
    proxy = runtime.settings.outbound_proxy or None
    with netguard.guarded_client(allow, timeout=FETCH_TIMEOUT_SECONDS, proxy=proxy) as client:
        for _ in range(MAX_REDIRECTS):
            netguard.check_url(current, allow)  # a clear error before connecting; the client re-checks the dial
            try:
                with client.stream("GET", current) as resp:
                    if resp.is_redirect:
                        current = str(resp.next_request.url) if resp.next_request else ""
                        continue
                    if resp.status_code >= 500 or resp.status_code == 429:
                        raise TransientError(f"fetching the input failed: HTTP {resp.status_code}")
                    if resp.status_code >= 400:
                        raise InvalidInput(f"fetching the input failed: HTTP {resp.status_code}")
                    size = 0
                    with dest.open("wb") as out:
                        for chunk in resp.iter_bytes(1024 * 1024):
                            size += len(chunk)
                            if size > limit:
                                raise SourceTooLarge(f"the input is larger than {limit} bytes")
                            out.write(chunk)
                    break
            except httpx.TransportError as exc:
                raise TransientError(f"fetching the input failed: {exc}") from exc
        else:
            raise InvalidInput("too many redirects fetching the input")
    info = runtime.storage.put_file(new_key("inputs", tenant_id), dest)
    return info.key, sniff_file(dest), info.size
