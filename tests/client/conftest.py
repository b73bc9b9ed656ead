"""Fixtures of the client tests: a real ``mediamill serve`` subprocess on loopback (SQLite, or
PostgreSQL when configured) with its admin key, and the media the tests upload."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.helpers import PG_SKIP_REASON, PG_URL, free_port, postgres_database, wait_until

#: the file the acceptance test uploads: 50 MiB of 48 kHz stereo PCM (about 4.5 minutes)
FIFTY_MB = 50 * 1024 * 1024


def mediamill_cmd() -> list[str]:
    script = Path(sys.executable).with_name("mediamill")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mediamill.cli.main"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any MEDIAMILL_ setting of the developer's shell, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    env.update(COLUMNS="200", NO_COLOR="1", PYTHONUNBUFFERED="1", **extra)
    return env


@dataclass
class Server:
    """A running ``mediamill serve``."""

    url: str
    port: int
    admin_key: str
    data_dir: Path
    database_url: str
    proc: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, str] = field(default_factory=dict)

    def local_env(self, **extra: str) -> dict[str, str]:
        """What a local-mode CLI on the server's machine uses (its data dir and database)."""
        env = clean_env(MEDIAMILL_DATA_DIR=str(self.data_dir), **extra)
        if self.database_url:
            env["MEDIAMILL_DATABASE_URL"] = self.database_url
        return env


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def run_serve(tmp: Path, database_url: str = "", **settings: str) -> Iterator[Server]:
    """``mediamill serve`` on a fresh data dir and a free port; stopped (SIGINT, then SIGKILL) afterwards."""
    data, port, log = tmp / "server-data", free_port(), tmp / "serve.log"
    env = clean_env(MEDIAMILL_DATA_DIR=str(data), MEDIAMILL_PORT=str(port), MEDIAMILL_DATABASE_URL=database_url,
                    **settings)
    with log.open("wb") as out:
        proc = subprocess.Popen([*mediamill_cmd(), "serve"], env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_until(lambda: _healthy(port) or proc.poll() is not None, timeout=90, interval=0.2,
                   message="mediamill serve answered /readyz")
        assert proc.poll() is None, log.read_text()
        key = wait_until(lambda: re.search(r"admin API key \(shown once\): (\S+)", log.read_text()), timeout=10)
        yield Server(f"http://127.0.0.1:{port}", port, key.group(1), data, database_url, proc, log, dict(settings))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def backend_url(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        yield ""
        return
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    with postgres_database("mm_client") as url:
        yield url


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One SQLite server per module; submits are limited to 60 per minute per key (a burst of 10)."""
    with run_serve(tmp_path_factory.mktemp("serve"), MEDIAMILL_SUBMIT_RATE_PER_MINUTE="60") as server:
        yield server


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("client-media")


@pytest.fixture(scope="session")
def big_wav(media_dir: Path) -> Path:
    """A 50 MiB WAV: a tone whose pitch changes every second (cycling through 40 pitches)."""
    import array
    import math

    path = media_dir / "fifty.wav"
    rate, frame_bytes = 48_000, 4
    frames = (FIFTY_MB - 44) // frame_bytes
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        seconds: dict[int, bytes] = {}
        second = 0
        while frames > 0:
            n = min(rate, frames)
            freq = 220 + (second % 40) * 11
            if freq not in seconds:
                seconds[freq] = array.array("h", (int(8000 * math.sin(2 * math.pi * freq * i / rate))
                                                  for i in range(rate) for _ in range(2))).tobytes()
            w.writeframes(seconds[freq][:n * frame_bytes])
            frames -= n
            second += 1
    assert path.stat().st_size == FIFTY_MB
    return path


@pytest.fixture(scope="session")
def small_jpeg(media_dir: Path) -> Path:
    """640×360 with a gradient: a quick WF-IMAGE-PROCESS job."""
    path = media_dir / "photo.jpg"
    img = Image.new("RGB", (640, 360))
    img.putdata([(x * 255 // 640, y * 255 // 360, 128) for y in range(360) for x in range(640)])
    img.save(path, "JPEG", quality=85)
    return path
