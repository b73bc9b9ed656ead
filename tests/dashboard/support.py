"""Helpers of the dashboard tests: a live server (uvicorn + an in-process Worker), keys, a
logged-in browser page, screenshots, and sample media."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mediamill.runtime import Runtime
from mediamill.store import auth_repo
from tests.helpers import LiveServer

__all__ = ["LiveServer"]  # shared with the API tests (tests/helpers.py)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

WORKFLOWS: list[dict[str, Any]] = [
    {"code": "WF-DASH-NOOP", "name": "noop", "type": "generic", "queue": "dash",
     "steps": [{"name": "Nothing", "action": "noop"}]},
    {"code": "WF-DASH-FAIL", "name": "always fails", "type": "generic", "queue": "dash", "retry_count": 0,
     "steps": [{"name": "Boom", "action": "fail", "params": {"error_class": "invalid_input"}}]},
    {"code": "WF-DASH-EDIT", "name": "edit me", "type": "generic", "queue": "dash",
     "steps": [{"name": "First", "action": "noop"}]},
]


@dataclass
class Keys:
    admin: str
    operator: str
    viewer: str

    @classmethod
    def create(cls, rt: Runtime) -> Keys:
        def mk(role: str) -> str:
            return auth_repo.create_key(rt.engine, role=role, name=f"dash {role}").plaintext

        return cls(mk("admin"), mk("operator"), mk("viewer"))





def shot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/dashboard/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header stays on top of a full-page shot
    page.screenshot(path=str(path), full_page=True)
    return path


def login(page: Any, base: str, key: str, next_path: str = "/") -> None:
    """Log in through the login form (the way a person does)."""
    page.goto(f"{base}{next_path}")
    page.wait_for_url(re.compile(r"/login"))
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(base + next_path.split("?")[0]) + r"(\?.*)?$"))


def api(base: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def make_video(path: Path, seconds: float = 2.0) -> Path:
    """A small H.264/AAC MP4: lavfi testsrc 320×240 plus a sine tone."""
    from imageio_ffmpeg import get_ffmpeg_exe

    subprocess.run([get_ffmpeg_exe(), "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc=duration={seconds}:size=320x240:rate=25",
                    "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
                   check=True, timeout=60)
    return path
