"""What a (re)started worker pays before its first step: a SIGKILL storm restarts workers every few seconds,
and on a small machine start-up CPU decides whether the fleet makes progress at all."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
# the HTTP stack: the API's processes load it, a worker (or any other CLI command) has no use for it
HTTP_STACK = ("fastapi", "starlette", "python_multipart", "httptools")


def _python(args: list[str], tmp_path: Path, *, extra_path: str = "") -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [extra_path, str(SRC)])),
           "MEDIAMILL_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120,
                          cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_cli_does_not_import_the_http_stack(tmp_path: Path) -> None:
    out = _python(["-c", "import sys, mediamill.cli.main; "
                         f"print(','.join(m for m in {HTTP_STACK!r} if m in sys.modules))"], tmp_path)
    assert out.strip() == "", f"importing the CLI (every `mediamill worker`) loads {out.strip()}"


MAIN_MODULE = textwrap.dedent("""
    import os, sys
    from pathlib import Path

    # the top of a main module, like the CLI's imports: a step child must not run this again
    with open(os.environ["MARKER"], "a") as fh:
        fh.write(f"{__name__} {os.getpid()}\\n")

    if __name__ == "__main__":
        from mediamill.config import MediaLimits
        from mediamill.engine.children import ChildPool

        pool = ChildPool(size=1, max_tasks=10, limits=MediaLimits())
        pool.warm(1)
        work = Path(sys.argv[1])
        reply = pool.run({"steps": [{"action": "no-such-action", "work_dir": str(work)}]}, timeout=60,
                         on_progress=lambda *_: None)
        print(reply["ok"], reply["message"])
        pool.close()
""")


def test_a_step_child_does_not_run_the_parents_main_module(tmp_path: Path) -> None:
    """multiprocessing re-runs the parent's ``__main__`` in every new process; for a worker that is the whole
    CLI (a CPU-second per child, after ``warm()`` returned, on the first step's clock)."""
    pkg = tmp_path / "mainprobe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "run.py").write_text(MAIN_MODULE)
    marker = tmp_path / "imports.txt"
    os.environ["MARKER"] = str(marker)
    try:
        out = _python(["-m", "mainprobe.run", str(tmp_path / "work")], tmp_path, extra_path=str(tmp_path))
    finally:
        del os.environ["MARKER"]
    assert out.startswith("False") and "no-such-action" in out, out  # the child ran the task
    runs = marker.read_text().split()
    assert runs[0::2] == ["__main__"], f"the main module ran again in a step child: {runs}"
