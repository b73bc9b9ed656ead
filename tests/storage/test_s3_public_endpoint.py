"""Presigned links point at ``MEDIAMILL_S3_PUBLIC_ENDPOINT`` and verify when fetched through it.

moto does not check presigned signatures, so the public endpoint here is a small reverse proxy
on another loopback address (127.0.0.2) that verifies each link's SigV4 query signature against
the Host it was reached at — as S3 would — before passing the request on to moto.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from mediamill.config import Settings
from mediamill.runtime import Runtime
from mediamill.storage import new_key, open_storage
from mediamill.storage.s3 import S3Storage
from tests.helpers import LiveServer

SECRET = "test"


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="-_.~")


def sigv4_query_signature_valid(method: str, host: str, raw_path: str, query: str, headers: Any) -> bool:
    """Recompute a presigned URL's SigV4 signature for the request as received."""
    params = urllib.parse.parse_qsl(query, keep_blank_values=True)
    given = dict(params)
    if "X-Amz-Signature" not in given:
        return False
    _key_id, day, region, service, _ = given["X-Amz-Credential"].split("/")
    signed = given["X-Amz-SignedHeaders"].split(";")
    canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in
                               sorted(p for p in params if p[0] != "X-Amz-Signature"))
    canonical_headers = "".join(f"{h}:{(host if h == 'host' else headers.get(h, '')).strip()}\n" for h in signed)
    canonical = "\n".join([method, raw_path, canonical_query, canonical_headers, ";".join(signed),
                           "UNSIGNED-PAYLOAD"])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", given["X-Amz-Date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{SECRET}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given["X-Amz-Signature"])


class _VerifyingProxy(BaseHTTPRequestHandler):
    upstream = ""
    seen: list[tuple[str, str, bool]] = []

    def _handle(self) -> None:
        host = self.headers.get("Host", "")
        path, _, query = self.path.partition("?")
        valid = sigv4_query_signature_valid(self.command, host, path, query, self.headers)
        self.seen.append((self.command, host, valid))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not valid:
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        res = httpx.request(self.command, self.upstream + self.path, content=body,
                            headers={k: v for k, v in self.headers.items() if k.lower() != "host"} | {"Host": host})
        self.send_response(res.status_code)
        self.send_header("Content-Length", str(len(res.content)))
        self.end_headers()
        self.wfile.write(res.content)

    do_GET = do_PUT = _handle  # the names http.server dispatches to

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def public_endpoint(s3_env: str) -> Iterator[str]:
    handler = type("Proxy", (_VerifyingProxy,), {"upstream": s3_env, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.2", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.2:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_links_point_at_the_public_endpoint_and_verify_through_it(
        public_endpoint: str, s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAMILL_S3_PUBLIC_ENDPOINT", public_endpoint + "/")
    storage = open_storage("s3://mm-public/pre")
    assert isinstance(storage, S3Storage)
    storage.ensure_bucket()  # through the internal endpoint, as mediamill's own processes do
    key = new_key("outputs", "default")
    storage.put(key, io.BytesIO(b"rendition bytes"), content_type="video/mp4")

    get_url = storage.presign_get(key, expires=60, filename="clip.mp4") or ""
    assert get_url.startswith(public_endpoint + "/mm-public/pre/")
    res = httpx.get(get_url)
    assert res.status_code == 200 and res.content == b"rendition bytes"

    put_key = new_key("uploads", "default")
    put_url = storage.presign_put(put_key, expires=60, content_type="text/plain") or ""
    assert urllib.parse.urlsplit(put_url).netloc == urllib.parse.urlsplit(public_endpoint).netloc
    assert httpx.put(put_url, content=b"from a client", headers={"Content-Type": "text/plain"}).status_code == 200
    with storage.open(put_key) as fh:
        assert fh.read() == b"from a client"

    # the proxy's check is real: a link signed for the internal address, merely re-pointed, is refused
    internal = S3Storage(bucket="mm-public", prefix="pre", public_endpoint_url="")
    rewritten = (internal.presign_get(key, expires=60) or "").replace(s3_env, public_endpoint)
    assert httpx.get(rewritten).status_code == 403


def test_the_api_hands_out_public_links(public_endpoint: str, tmp_path: Path) -> None:
    from tests.api.support import Keys

    settings = Settings(data_dir=tmp_path, storage_url="s3://mm-api/x", s3_public_endpoint=public_endpoint)
    rt = Runtime(settings)
    rt.prepare()
    assert isinstance(rt.storage, S3Storage)
    rt.storage.ensure_bucket()
    keys = Keys(rt)
    try:
        with LiveServer(rt) as live:
            res = httpx.post(f"{live.url}/v1/uploads/presign", headers=Keys.h(keys.submitter),
                             json={"filename": "a.txt", "content_type": "text/plain"})
            assert res.status_code == 201, res.text
            grant = res.json()
            assert grant["url"].startswith(public_endpoint + "/mm-api/x/")
            put = httpx.put(grant["url"], content=b"hello", headers=grant["headers"])
            assert put.status_code == 200, put.text
    finally:
        rt.close()


def test_a_public_endpoint_must_be_a_url() -> None:
    from mediamill.config import load_settings
    from mediamill.errors import ConfigError

    with pytest.raises(ConfigError, match="MEDIAMILL_S3_PUBLIC_ENDPOINT"):
        load_settings(s3_public_endpoint="media.example.com")
