"""The S3 backend against moto's S3 server: the whole Storage interface, multipart, presigning."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import httpx
import pytest

from mediamill.errors import InvalidInput, NotFound
from mediamill.storage import new_key, open_storage
from mediamill.storage.s3 import MULTIPART_THRESHOLD, S3Storage


@pytest.fixture
def storage(s3_env: str) -> S3Storage:
    st = open_storage("s3://mm-test/some/prefix")
    assert isinstance(st, S3Storage) and st.local_path("inputs/default/x") is None
    st.ensure_bucket()
    return st


def test_put_open_range_exists_size_delete(storage: S3Storage) -> None:
    key = new_key("inputs", "default")
    data = os.urandom(300_000)
    info = storage.put(key, io.BytesIO(data), content_type="application/octet-stream")
    assert info.size == len(data) and info.checksum == hashlib.sha256(data).hexdigest()
    assert storage.exists(key) and storage.size(key) == len(data)
    with storage.open(key) as fh:
        assert fh.read() == data
    assert b"".join(storage.iter_bytes(key, 100, 199)) == data[100:200]
    raw = storage.client.head_object(Bucket="mm-test", Key=f"some/prefix/{key}")
    assert raw["ContentLength"] == len(data)
    storage.delete(key)
    assert not storage.exists(key)
    with pytest.raises(NotFound):
        storage.open(key)
    with pytest.raises(NotFound):
        storage.size(key)


def test_multipart_for_large_objects(storage: S3Storage, tmp_path: Path) -> None:
    key = new_key("outputs", "default")
    size = MULTIPART_THRESHOLD + 5 * 1024 * 1024
    src = tmp_path / "big.bin"
    with src.open("wb") as fh:
        fh.truncate(size)
    info = storage.put_file(key, src)
    assert info.size == size
    head = storage.client.head_object(Bucket="mm-test", Key=f"some/prefix/{key}")
    assert "-" in head["ETag"]  # a multipart upload's ETag names its part count
    dest = storage.get_to_file(key, tmp_path / "back.bin")
    assert dest.stat().st_size == size


def test_presigned_get_and_put(storage: S3Storage) -> None:
    key = new_key("uploads", "default")
    put_url = storage.presign_put(key, expires=60, content_type="text/plain")
    assert put_url and httpx.put(put_url, content=b"hello", headers={"Content-Type": "text/plain"}).status_code == 200
    get_url = storage.presign_get(key, expires=60, filename='na"me.txt')
    res = httpx.get(get_url or "")
    assert res.status_code == 200 and res.content == b"hello"


def test_keys_are_checked(storage: S3Storage) -> None:
    for bad in ("../x", "/abs", "inputs/../../x", "a\\b"):
        with pytest.raises(InvalidInput):
            storage.put(bad, io.BytesIO(b"x"))
