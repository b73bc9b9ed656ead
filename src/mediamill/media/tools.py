"""External tools: which ffmpeg we run, how we run it, and what ``mediamill doctor`` shows.

ffmpeg comes from the imageio-ffmpeg wheel unless a *newer* ffmpeg is on PATH (or one is
named by ``MEDIAMILL_FFMPEG``); the choice is made once per process. Every run gets
``-nostdin -hide_banner``, a deadline (the tool is killed on timeout → ``StepTimeout``) and
keeps the tail of stderr for ``ToolFailed``. Progress comes from ``-progress pipe:1``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from mediamill.errors import (
    STDERR_TAIL,
    CorruptMedia,
    MediamillError,
    ResourceExceeded,
    StepTimeout,
    ToolFailed,
    Unavailable,
)
from mediamill.media.decoders import plain_reason

#: stderr lines that mean "the input is bad", not "the tool or we are broken"
_INPUT_FAULTS = re.compile(
    r"Invalid data found|moov atom not found|could not find codec parameters|"
    r"Invalid NAL|error while decoding|corrupt|truncat|End of file|no frame!|"
    r"does not contain any stream|Output file #?\d* does not contain|"
    r"Stream map .* matches no streams|Decoding requested, but no decoder",
    re.IGNORECASE,
)
_OUT_OF_SPACE = re.compile(r"No space left on device|Disk quota exceeded", re.IGNORECASE)
_VERSION = re.compile(r"version\s+n?(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Ffmpeg:
    """The ffmpeg binary chosen for this process."""

    path: str
    version: str
    source: str  # "env" | "PATH" | "imageio-ffmpeg"

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return _parse_version(self.version)


def _parse_version(text: str) -> tuple[int, ...]:
    match = _VERSION.search(text)
    return tuple(int(g) for g in match.groups() if g is not None) if match else (0,)


def _version_line(path: str) -> str:
    try:
        out = subprocess.run([path, "-hide_banner", "-version"], capture_output=True, text=True,
                             timeout=10, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.splitlines()[0] if out.returncode == 0 and out.stdout else ""


@cache
def ffmpeg() -> Ffmpeg:
    """Choose ffmpeg once: $MEDIAMILL_FFMPEG, else the newer of PATH's and the wheel's."""
    named = os.environ.get("MEDIAMILL_FFMPEG")
    if named:
        line = _version_line(named)
        if not line:
            raise Unavailable(f"MEDIAMILL_FFMPEG={named} does not run")
        return Ffmpeg(named, line, "env")
    candidates: list[Ffmpeg] = []
    on_path = shutil.which("ffmpeg")
    if on_path and (line := _version_line(on_path)):
        candidates.append(Ffmpeg(on_path, line, "PATH"))
    try:
        import imageio_ffmpeg

        bundled = imageio_ffmpeg.get_ffmpeg_exe()
        if line := _version_line(bundled):
            candidates.append(Ffmpeg(bundled, line, "imageio-ffmpeg"))
    except (ImportError, RuntimeError):
        pass
    if not candidates:
        raise Unavailable("no ffmpeg found: install imageio-ffmpeg or put ffmpeg on PATH")
    # max() keeps the first of equals, so PATH wins a tie
    return max(candidates, key=lambda c: c.version_tuple)


class _StderrTail:
    """Collects the last lines of a pipe in a background thread (so the pipe never fills up)."""

    def __init__(self, stream: Any, keep: int = 60) -> None:
        self.lines: deque[str] = deque(maxlen=keep)
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            self.lines.append(raw.decode("utf-8", "replace").rstrip())
        stream.close()

    def text(self) -> str:
        self._thread.join(timeout=2)
        return "\n".join(self.lines)


def _progress_reader(duration_s: float | None, on_progress: Callable[[float], None] | None
                     ) -> Callable[[str], None]:
    """Turn ``-progress`` key=value lines into percentages of ``duration_s``."""
    def feed(line: str) -> None:
        key, _, value = line.partition("=")
        value = value.strip()
        if on_progress is None or not duration_s or key != "out_time_us" or not (value.isascii() and value.isdigit()):
            return
        on_progress(min(99.0, 100.0 * int(value) / 1e6 / duration_s))
    return feed


def run_ffmpeg(
    args: Sequence[str],
    *,
    timeout: float | None = None,
    duration_s: float | None = None,
    on_progress: Callable[[float], None] | None = None,
    stdout_sink: Callable[[bytes], None] | None = None,
    what: str = "ffmpeg",
    loglevel: str = "error",
    cwd: Path | None = None,
) -> str:
    """Run ffmpeg with ``args`` (everything after the global flags) and return its stderr tail.

    With ``stdout_sink`` the caller receives raw stdout chunks (e.g. ``-f s16le pipe:1``) and
    progress is not parsed; otherwise stdout carries ``-progress`` lines.
    """
    cmd = [ffmpeg().path, "-nostdin", "-hide_banner", "-nostats", "-y", "-loglevel", loglevel]
    if stdout_sink is None:
        cmd += ["-progress", "pipe:1", "-stats_period", "0.5"]
    cmd += list(args)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=cwd)
    tail = _StderrTail(proc.stderr)
    timed_out = threading.Event()
    killer = _arm_killer(proc, timeout, timed_out)
    try:
        _drain_stdout(proc, stdout_sink, _progress_reader(duration_s, on_progress))
        code = proc.wait()
    finally:
        if killer is not None:
            killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = tail.text()
    if timed_out.is_set():
        raise StepTimeout(f"{what} did not finish within {timeout:.0f} s and was stopped")
    if code != 0:
        raise tool_failure(what, code, stderr)
    return stderr


def _arm_killer(proc: subprocess.Popen[bytes], timeout: float | None,
                flag: threading.Event) -> threading.Timer | None:
    if not timeout:
        return None

    def kill() -> None:
        flag.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    return timer


def _drain_stdout(proc: subprocess.Popen[bytes], sink: Callable[[bytes], None] | None,
                  feed: Callable[[str], None]) -> None:
    assert proc.stdout is not None
    if sink is not None:
        while chunk := proc.stdout.read(1 << 16):
            sink(chunk)
        return
    for raw in iter(proc.stdout.readline, b""):
        feed(raw.decode("ascii", "replace").strip())


def tool_failure(what: str, code: int, stderr: str) -> Exception:
    """Classify a failed tool run: input faults are ``CorruptMedia``, the rest ``ToolFailed``."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1] if lines else f"exit code {code}"
    if _OUT_OF_SPACE.search(stderr):
        err: MediamillError = ResourceExceeded(f"{what} ran out of disk space on the server")
    elif code > 0 and _INPUT_FAULTS.search(stderr):
        fault = next(ln for ln in lines if _INPUT_FAULTS.search(ln))
        err = CorruptMedia(f"{what} could not read the input: {plain_reason(fault)}")
    else:
        return ToolFailed(f"{what} failed (exit code {code}): {plain_reason(last, limit=300)}", stderr_tail=stderr)
    err.stderr_tail = stderr[-STDERR_TAIL:]
    return err


def remaining(deadline: float | None) -> float | None:
    """Seconds left until a ``time.monotonic()`` deadline (None = no deadline)."""
    return None if deadline is None else max(0.1, deadline - time.monotonic())


def soffice_path() -> str | None:
    """LibreOffice's command-line binary when installed."""
    for name in ("soffice", "libreoffice"):
        found = shutil.which(name)
        if found:
            return found
    return None


def doctor_report() -> dict[str, Any]:
    """Versions and availability of every media tool, for ``mediamill doctor``."""
    return {
        "ffmpeg": _doctor_ffmpeg(),
        "pyav": _doctor_call(lambda: {"version": __import__("av").__version__}),
        "libvips": _doctor_call(_vips_info),
        "pillow": _doctor_call(_pillow_info),
        "pdfium": _doctor_call(_pdfium_info),
        "python_docx": _doctor_call(lambda: {"available": __import__("docx") is not None}),
        "pocketsphinx": _doctor_call(_sphinx_info),
        "libreoffice": {"available": soffice_path() is not None, "path": soffice_path(),
                        "note": None if soffice_path() else "DOCX → PDF conversion unavailable"},
    }


def _doctor_call(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return {"available": True, **fn()}
    except Exception as exc:  # doctor reports, it never raises
        return {"available": False, "error": str(exc)}


def _doctor_ffmpeg() -> dict[str, Any]:
    def info() -> dict[str, Any]:
        chosen = ffmpeg()
        return {"path": chosen.path, "version": chosen.version, "source": chosen.source}
    return _doctor_call(info)


def _vips_info() -> dict[str, Any]:
    import pyvips

    return {"version": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"}


def _pillow_info() -> dict[str, Any]:
    import PIL
    from PIL import features

    return {"version": PIL.__version__, "webp": features.check("webp"), "avif": features.check("avif")}


def _pdfium_info() -> dict[str, Any]:
    import pypdfium2.version as v

    return {"pypdfium2": str(v.PYPDFIUM_INFO), "pdfium": str(v.PDFIUM_INFO)}


def _sphinx_info() -> dict[str, Any]:
    import pocketsphinx

    model = Path(pocketsphinx.get_model_path()) / "en-us"
    return {"model": str(model), "model_present": model.is_dir()}
