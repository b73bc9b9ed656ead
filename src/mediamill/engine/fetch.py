"""Fetching URL inputs (by the worker), behind the SSRF guard."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from mediamill.errors import InvalidInput, SourceTooLarge, TransientError
from mediamill.media.sniff import sniff_file
from mediamill.storage import new_key

if TYPE_CHECKING:
    from mediamill.runtime import Runtime


def _check_url(runtime: Runtime, url: str) -> None:
    try:
        from mediamill import netguard
    except ImportError:  # pragma: no cover - the guard module ships with the notifier
        raise InvalidInput("URL inputs are not available") from None
    netguard.check_url(url, allowlist=runtime.settings.url_allowlist)


def fetch_to_storage(runtime: Runtime, url: str, tenant_id: str, scratch: Path) -> tuple[str, str, int]:
    """Download ``url`` (redirects re-checked by the guard) into storage; returns (key, sniffed mime, size)."""
    limit = runtime.settings.limits.max_input_bytes
    scratch.mkdir(parents=True, exist_ok=True)
    dest = scratch / "fetched"
    current = url
    with httpx.Client(timeout=httpx.Timeout(30.0), follow_redirects=False) as client:
        for _ in range(5):
            _check_url(runtime, current)
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
