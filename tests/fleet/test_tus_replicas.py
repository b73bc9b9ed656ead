"""A tus upload moves between two real `mediamill api` replicas on one PostgreSQL database.

On S3 storage its bytes are multipart parts and a pending object in the bucket, so any replica
continues it and the file arrives intact. On local storage the replicas must share the uploads
folder: when they do, the same holds; when they do not, the replica without the bytes answers
409 and writes nothing (it once padded the missing start with zeros and completed a corrupt file),
the upload stays resumable where it started, and bytes that vanished are a 410.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mediamill.api.tusparts import PART_SIZE
from mediamill.config import Settings
from mediamill.runtime import Runtime
from mediamill.storage.local import LocalStorage
from mediamill.store import auth_repo, uploads_repo
from tests.fleet.support import FLEET_SECRET_KEY, log_of, mediamill_process, stop
from tests.helpers import PG_SKIP_REASON, PG_URL, free_port, postgres_database, wait_until

needs_postgres = pytest.mark.skipif(not PG_URL, reason=PG_SKIP_REASON)
TUS = {"Tus-Resumable": "1.0.0"}
OCT = {"Content-Type": "application/offset+octet-stream"}
MiB = 1024 * 1024


class Replica:
    def __init__(self, name: str, port: int, proc: subprocess.Popen[bytes], data: Path) -> None:
        self.name, self.port, self.proc, self.data = name, port, proc, data
        self.url = f"http://127.0.0.1:{port}"


def _healthy(replica: Replica) -> bool:
    try:
        return httpx.get(f"{replica.url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def replicas(url: str, data_dirs: tuple[Path, Path], env: dict[str, str]) -> Iterator[tuple[Replica, Replica]]:
    """Two `mediamill api --no-migrate` processes on loopback, different ports, one database."""
    started: list[Replica] = []
    try:
        for name, data in zip(("a", "b"), data_dirs, strict=True):
            port = free_port()
            proc = mediamill_process(["api", "--no-migrate", "--port", str(port)], data_dir=data, database_url=url,
                                     log_name=f"api-{name}", env=env)
            started.append(Replica(name, port, proc, data))
        for r in started:
            wait_until(lambda r=r: _healthy(r) or r.proc.poll() is not None, timeout=90, interval=0.2,
                       message=f"replica {r.name} up")
            assert r.proc.poll() is None, log_of(r.data, f"api-{r.name}")
        yield started[0], started[1]
    finally:
        for r in started:
            stop(r.proc)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    with postgres_database("mm_tus") as url:
        yield url


def _prepare(url: str, tmp_path: Path, storage_url: str = "") -> tuple[Runtime, str]:
    """Migrate the database (the replicas run with --no-migrate, as behind a migrate job) and make a key."""
    rt = Runtime(Settings(data_dir=tmp_path / "client", database_url=url, secret_key=FLEET_SECRET_KEY,
                          storage_url=storage_url))
    rt.prepare()
    key = auth_repo.create_key(rt.engine, role="submitter").plaintext
    return rt, key


def _h(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **TUS, **extra}


def _create(replica: Replica, key: str, data: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    checksum = base64.b64encode(f"sha256 {digest}".encode()).decode()
    meta = f"filename {base64.b64encode(b'clip.bin').decode()},checksum {checksum}"
    res = httpx.post(f"{replica.url}/v1/uploads", headers=_h(key, **{"Upload-Length": str(len(data)),
                                                                     "Upload-Metadata": meta}), timeout=30)
    assert res.status_code == 201, res.text
    return res.headers["location"].rsplit("/", 1)[1]


def _patch(replica: Replica, key: str, upload_id: str, data: bytes, start: int, end: int) -> httpx.Response:
    chunk = data[start:end]
    check = base64.b64encode(hashlib.sha1(chunk).digest()).decode()
    return httpx.patch(f"{replica.url}/v1/uploads/{upload_id}", content=chunk, timeout=120,
                       headers=_h(key, **OCT, **{"Upload-Offset": str(start), "Upload-Checksum": f"sha1 {check}"}))


def _offset(replica: Replica, key: str, upload_id: str) -> int:
    res = httpx.head(f"{replica.url}/v1/uploads/{upload_id}", headers=_h(key), timeout=30)
    assert res.status_code == 200, res.status_code
    return int(res.headers["upload-offset"])


def _session(rt: Runtime, upload_id: str) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        return uploads_repo.get_session(conn, upload_id, tenant_id=None)


def _assert_intact(rt: Runtime, storage: Any, upload_id: str, data: bytes) -> None:
    session = _session(rt, upload_id)
    assert session["completed_at"] is not None and session["upload_offset"] == len(data)
    with storage.open(session["storage_key"]) as fh:
        stored = fh.read()
    assert len(stored) == len(data)
    if stored != data:
        differ = next(i for i, (x, y) in enumerate(zip(stored, data, strict=True)) if x != y)
        raise AssertionError(f"the stored bytes differ from byte {differ} on")
    assert uploads_repo.server_facts(session)["sha256"] == hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------ S3
@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield env
    server.stop()


@needs_postgres
def test_s3_upload_started_on_a_resumed_on_b_finished_on_a_is_intact(database: str, moto: dict[str, str],
                                                                       tmp_path: Path) -> None:
    storage_url = "s3://tus-replicas/media"
    rt, key = _prepare(database, tmp_path, storage_url)
    rt.storage.ensure_bucket()  # type: ignore[attr-defined]
    data = os.urandom(2 * PART_SIZE + 5 * MiB + 12345)
    cut1, cut2 = PART_SIZE + 4 * MiB, PART_SIZE + 10 * MiB  # each replica leaves a tail short of a part
    env = {**moto, "MEDIAMILL_STORAGE_URL": storage_url}
    try:
        with replicas(database, (tmp_path / "a", tmp_path / "b"), env) as (a, b):
            upload_id = _create(a, key, data)
            assert _patch(a, key, upload_id, data, 0, cut1).status_code == 204
            assert _offset(b, key, upload_id) == cut1
            res = _patch(b, key, upload_id, data, cut1, cut2)
            assert res.status_code == 204, res.text
            assert res.headers["upload-offset"] == str(cut2)
            state = _session(rt, upload_id)["part_state"]
            assert [p[0] for p in state["parts"]] == [1, 2] and all(p[2] >= PART_SIZE for p in state["parts"])
            assert 0 < sum(size for _key, size in state["pending"]) == cut2 - sum(p[2] for p in state["parts"])
            res = _patch(a, key, upload_id, data, cut2, len(data))
            assert res.status_code == 204, res.text
            got = httpx.get(f"{b.url}/v1/uploads/{upload_id}", headers=_h(key), timeout=30).json()
            assert got["complete"] is True and got["length"] == len(data)
        _assert_intact(rt, rt.storage, upload_id, data)
        client = rt.storage.client  # type: ignore[attr-defined]
        # nothing unfinished is left behind in the bucket
        assert not client.list_multipart_uploads(Bucket="tus-replicas").get("Uploads")
        assert not client.list_objects_v2(Bucket="tus-replicas", Prefix="media/tus/").get("Contents")
    finally:
        rt.close()


# ------------------------------------------------------------------------------ local storage
@needs_postgres
def test_local_replicas_with_their_own_folders_refuse_instead_of_corrupting(database: str, tmp_path: Path) -> None:
    rt, key = _prepare(database, tmp_path)
    data = os.urandom(3 * MiB + 777)
    half = len(data) // 2
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    try:
        with replicas(database, (a_dir, b_dir), {"MEDIAMILL_STORAGE_URL": ""}) as (a, b):
            upload_id = _create(a, key, data)
            assert _patch(a, key, upload_id, data, 0, half).status_code == 204
            res = _patch(b, key, upload_id, data, half, len(data))
            assert res.status_code == 409, res.text
            problem = res.json()
            assert problem["error_class"] == "upload_unreachable" and "MEDIAMILL_UPLOADS_DIR" in problem["detail"]
            assert not list((b_dir / "uploads").glob(f"{upload_id}*"))  # B wrote nothing
            assert _offset(a, key, upload_id) == half and _session(rt, upload_id)["patch_token"] is None
            # still resumable where it started, and intact
            assert _patch(a, key, upload_id, data, half, len(data)).status_code == 204
            _assert_intact(rt, LocalStorage(a_dir / "storage"), upload_id, data)

            # bytes that vanished from the folder the upload lives in: 410, never a file with a hole
            lost = _create(a, key, data)
            assert _patch(a, key, lost, data, 0, half).status_code == 204
            (a_dir / "uploads" / f"{lost}.part").unlink()
            res = _patch(a, key, lost, data, half, len(data))
            assert res.status_code == 410 and res.json()["error_class"] == "upload_lost", res.text
            assert _session(rt, lost)["completed_at"] is None
    finally:
        rt.close()


@needs_postgres
def test_local_replicas_sharing_the_data_dir_continue_each_other(database: str, tmp_path: Path) -> None:
    rt, key = _prepare(database, tmp_path)
    data = os.urandom(3 * MiB + 4321)
    third = len(data) // 3
    shared = tmp_path / "shared"
    try:
        with replicas(database, (shared, shared), {"MEDIAMILL_STORAGE_URL": ""}) as (a, b):
            upload_id = _create(a, key, data)
            assert _patch(a, key, upload_id, data, 0, third).status_code == 204
            assert _patch(b, key, upload_id, data, third, 2 * third).status_code == 204
            assert _patch(a, key, upload_id, data, 2 * third, len(data)).status_code == 204
        _assert_intact(rt, LocalStorage(shared / "storage"), upload_id, data)
        assert not list((shared / "uploads").glob(f"{upload_id}*"))  # part and marker are gone
    finally:
        rt.close()


# ------------------------------------------------------------------------------ the install key
def _bare_env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    return {**env, "MEDIAMILL_DATA_DIR": str(data), "NO_COLOR": "1", "COLUMNS": "200"}


@pytest.mark.parametrize("command", ["api", "serve"])
def test_a_non_loopback_server_without_the_secret_key_refuses_to_start(command: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = subprocess.run([sys.executable, "-m", "mediamill.cli.main", command, "--host", "0.0.0.0",
                           "--port", str(free_port())], env=_bare_env(data), capture_output=True, text=True,
                          timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "MEDIAMILL_SECRET_KEY is not set" in out and "0.0.0.0" in out, out
    # refused before anything was made: no database, no key generated in this replica's data dir
    assert not (data / "mediamill.db").exists() and not (data / "secret_key").exists()


def test_loopback_servers_keep_the_generated_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    with (tmp_path / "api.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mediamill.cli.main", "api", "--host", "127.0.0.1",
                                 "--port", str(port)], env=_bare_env(data), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    replica = Replica("loopback", port, proc, data)
    try:
        wait_until(lambda: _healthy(replica) or proc.poll() is not None, timeout=90, interval=0.2,
                   message="loopback api up")
        assert proc.poll() is None, (tmp_path / "api.log").read_text()
        assert (data / "secret_key").exists()
    finally:
        stop(proc)
