"""On S3 storage the API answers a download with a presigned redirect: the SDK follows it without
sending the API key to the storage host, and gets the stored bytes."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mediamill.client import Client
from tests.client.conftest import Server, run_serve

S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def s3_server(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, object]]:
    mp = pytest.MonkeyPatch()
    for k, v in {**S3_ENV, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        mp.setenv(k, v)  # the serve subprocess inherits these (clean_env drops only MEDIAMILL_*)
    from mediamill.storage import open_storage

    storage = open_storage("s3://mm-client/objects")
    storage.ensure_bucket()  # type: ignore[attr-defined]
    try:
        with run_serve(tmp_path_factory.mktemp("serve-s3"), MEDIAMILL_STORAGE_URL="s3://mm-client/objects") as server:
            yield server, storage
    finally:
        mp.undo()


def test_download_follows_the_presigned_redirect_without_the_key(s3_server: tuple[Server, object],
                                                                small_jpeg: Path, tmp_path: Path) -> None:
    server, storage = s3_server
    sent: list[httpx.Request] = []
    http = httpx.Client(timeout=60, event_hooks={"request": [sent.append]})
    with Client(server.url, server.admin_key, http_client=http) as mm:
        accepted = mm.submit(small_jpeg, workflow="WF-IMAGE-PROCESS")
        job = mm.wait(accepted.id, timeout=180)
        assert job.status == "completed", job.to_dict()
        first = httpx.get(f"{server.url}/v1/jobs/{job.id}/outputs/{job.outputs[0].name}",
                          headers={"Authorization": f"Bearer {server.admin_key}"})
        assert first.status_code == 307 and first.headers["location"].startswith("http://127.0.0.1:")
        for out in job.outputs:
            sent.clear()
            path = mm.download(job.id, out.name, tmp_path)
            assert path is not None
            with storage.open(out.to_dict()["storage_key"]) as fh:  # type: ignore[attr-defined]
                assert path.read_bytes() == fh.read(), out.name
            to_storage = [r for r in sent if r.url.port != server.port]
            assert to_storage and all("authorization" not in r.headers for r in to_storage)
    http.close()
