"""``MEDIAMILL_STORAGE_URL=s3://missing-bucket/x`` against moto's server on loopback: the start-up
check names the bucket, ``/readyz`` answers 503 naming it, a submit answers 503 naming it (never a
bare 500 or a hung request), and all recover once the bucket exists. A bucket that exists but
refuses writes is not ready either."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mediamill.cli.serve import storage_warning
from mediamill.runtime import Runtime
from mediamill.storage.s3 import S3Storage
from tests.api.support import Keys, LiveServer, make_runtime
from tests.helpers import moto_s3


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    with moto_s3(monkeypatch) as port:
        yield port


@pytest.fixture
def rt(moto: int, tmp_path: Path) -> Iterator[Runtime]:
    runtime = make_runtime(tmp_path / "data", storage_url="s3://missing-bucket/x")
    yield runtime
    runtime.close()


def _submit(http: httpx.Client, key: str) -> httpx.Response:
    return http.post("/v1/jobs", files={"file": ("note.txt", b"hello bucket\n" * 50)},
                     data={"workflow": "WF-TEST-NOOP"}, headers=Keys.h(key))


def test_missing_bucket_is_named_at_start_in_readyz_and_in_submits(rt: Runtime) -> None:
    storage = rt.storage
    assert isinstance(storage, S3Storage)
    warning = storage_warning(rt)
    assert warning and "missing-bucket" in warning and "does not exist" in warning
    keys = Keys(rt)
    with LiveServer(rt) as live, httpx.Client(base_url=live.url, timeout=30) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert "missing-bucket" in ready.json()["detail"]
        assert ready.json()["checks"]["storage"]["problem"] == "bucket 'missing-bucket' does not exist"
        res = _submit(http, keys.submitter)
        assert res.status_code == 503, res.text
        assert "missing-bucket" in res.json()["detail"] and res.headers["retry-after"]
        assert "MEDIAMILL_STORAGE_URL" in res.json()["detail"]

        storage.ensure_bucket()  # the operator creates it: no restart needed
        storage._health = None  # skip the few seconds the last check is reused
        assert storage_warning(rt) is None
        assert http.get("/readyz").status_code == 200
        assert _submit(http, keys.submitter).status_code == 202


def test_a_bucket_that_refuses_writes_is_not_ready(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = rt.storage
    assert isinstance(storage, S3Storage)
    storage.ensure_bucket()

    def refuse(**_kwargs: Any) -> None:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "PutObject")

    monkeypatch.setattr(storage.client, "put_object", refuse)
    health = storage.health()
    assert not health.ok and health.problem == "bucket 'missing-bucket' is not writable (AccessDenied)"
