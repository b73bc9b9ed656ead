"""A fresh install keeps its files to itself: folders 0700, the SQLite database (and its WAL) 0600,
the install key 0600 — under the usual umask 022, which would otherwise give 0755/0644."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mediamill import installkey
from mediamill.api.app import create_app
from mediamill.store import auth_repo
from tests.helpers import make_runtime


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_fresh_install_is_private(tmp_path: Path) -> None:
    data = tmp_path / "srv" / "mediamill"
    rt = make_runtime(data, migrate=False)
    rt.prepare()
    key = auth_repo.create_key(rt.engine, role="submitter").plaintext
    rt.storage.put("inputs/default/ab/cd/clip.bin", io.BytesIO(b"x" * 10))
    scratch = tmp_path / "scratch.bin"
    scratch.write_bytes(b"y" * 10)  # 0644 under the umask: moved into storage, it becomes 0600
    rt.storage.put_file("outputs/default/ef/out.bin", scratch, move=True)
    installkey.install_key(rt.settings)
    with TestClient(create_app(rt)) as client:
        created = client.post("/v1/uploads", headers={"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0",
                                                      "Upload-Length": "5"})
        assert created.status_code == 201, created.text

    assert _mode(tmp_path / "srv") == 0o700 and _mode(data) == 0o700
    for name in ("mediamill.db", "mediamill.db-wal", "mediamill.db-shm", installkey.KEY_FILE):
        assert _mode(data / name) == 0o600, name
    for folder in ("storage", "storage/.tmp", "storage/inputs", "storage/inputs/default/ab/cd", "uploads"):
        assert _mode(data / folder) == 0o700, folder
    assert _mode(data / "storage/inputs/default/ab/cd/clip.bin") == 0o600
    assert _mode(data / "storage/outputs/default/ef/out.bin") == 0o600
    rt.close()


def test_an_operator_prepared_folder_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    rt = make_runtime(shared, migrate=True)
    assert _mode(shared) == 0o750 and _mode(shared / "mediamill.db") == 0o600
    rt.close()
