"""Dead ends of the command line: `--version`, commands run where there is no database, and a
submit that no worker will ever run."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from mediamill import __version__
from mediamill.cli.main import app
from mediamill.config import Settings
from mediamill.engine import operations as ops
from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from tests.helpers import PG_SKIP_REASON, PG_URL, postgres_database, wait_until

#: commands that make their database themselves (they are how an installation starts)
STARTERS = {"serve", "api", "worker", "notifier", "db upgrade"}
#: commands that never touch the database: they work anywhere and create nothing
OFFLINE = {"doctor", "actions", "workflows validate", "login", "completion"}
WORKFLOW = "code: WF-DEAD-END\nname: Dead end\ntype: generic\nsteps:\n  - name: Only\n    action: noop\n"


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("MEDIAMILL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    # no `mediamill login` of the developer's account may turn these commands into remote ones
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent/mediamill-tests")


def _leaves(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Every runnable command: leaves, and groups that run without a subcommand (`queues`)."""
    if hasattr(cmd, "commands"):  # a group (Typer vendors its own click)
        if path and cmd.invoke_without_command:
            yield " ".join(path), cmd
        for name, sub in cmd.commands.items():
            yield from _leaves(sub, (*path, name))
    elif path:
        yield " ".join(path), cmd


def _args(cmd: Any, workdir: Path) -> list[str]:
    """Plausible values for the required arguments and options of a command."""
    out: list[str] = []
    for param in cmd.params:
        if not param.required:
            continue
        value = {"file": "input.mp4", "kind": "webhook", "role": "admin", "job": "1"}.get(param.name or "", "1")
        if param.param_type_name == "option":
            long = next(o for o in param.opts if o.startswith("--"))
            out += [long, str(workdir / "wf.yaml") if long == "--file" else value]
        else:
            out.append(value)
    return out


COMMANDS = dict(_leaves(typer.main.get_command(app)))


def test_the_command_tree_is_what_these_tests_expect() -> None:
    assert set(COMMANDS) >= STARTERS | OFFLINE, sorted(COMMANDS)
    assert {"jobs", "submit", "queues", "workflows list", "keys list", "outputs"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - STARTERS - OFFLINE))
def test_without_a_database_every_command_refuses_and_creates_nothing(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "input.mp4").write_bytes(b"\x00" * 64)
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = [*name.split(), *_args(COMMANDS[name], tmp_path)]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, (argv, result.output, result.exception)
    said = " ".join(result.stderr.split())
    assert "MEDIAMILL_DATA_DIR" in said and "MEDIAMILL_DATABASE_URL" in said, (argv, said)
    assert "no mediamill database" in said and "mediamill db upgrade" in said
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no database, no data dir, no storage


@pytest.mark.parametrize("argv", [["doctor", "--json"], ["actions", "--json"],
                                  ["workflows", "validate", "-f", "wf.yaml"], ["completion", "bash"]])
def test_offline_commands_work_anywhere_and_create_nothing(
        argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["wf.yaml"]


def _mediamill(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    return subprocess.run([sys.executable, "-m", "mediamill.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**clean, "COLUMNS": "200", "NO_COLOR": "1", **env},
                          check=False)


def test_version_prints_name_and_version(tmp_path: Path) -> None:
    done = _mediamill(tmp_path, "--version")
    assert (done.returncode, done.stdout) == (0, f"mediamill {__version__}\n"), done.stderr


def test_jobs_in_an_empty_directory_explains_itself(tmp_path: Path) -> None:
    done = _mediamill(tmp_path, "jobs")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "sqlalchemy" not in done.stderr.lower()
    said = " ".join(done.stderr.split())
    assert str(tmp_path / "mediamill-data" / "mediamill.db") in said
    assert "MEDIAMILL_DATA_DIR" in said and "MEDIAMILL_DATABASE_URL" in said
    assert list(tmp_path.iterdir()) == []


def test_an_empty_sqlite_file_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "mediamill-data").mkdir()
    (tmp_path / "mediamill-data" / "mediamill.db").write_bytes(b"")
    done = _mediamill(tmp_path, "jobs", "--json")
    assert done.returncode == 2 and "has no mediamill schema" in done.stderr, done.stderr


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason=PG_SKIP_REASON)
def test_postgres_database_missing_or_without_schema(tmp_path: Path) -> None:
    missing = PG_URL.rsplit("/", 1)[0] + f"/mm_missing_{uuid.uuid4().hex[:8]}"
    done = _mediamill(tmp_path, "jobs", MEDIAMILL_DATABASE_URL=missing)
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and "no mediamill database" in said and "MEDIAMILL_DATABASE_URL" in said, said
    with postgres_database() as empty:
        done = _mediamill(tmp_path, "queues", MEDIAMILL_DATABASE_URL=empty)
        assert done.returncode == 2 and "mediamill db upgrade" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_database_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    done = _mediamill(tmp_path, "jobs", MEDIAMILL_DATABASE_URL="postgresql://mm:secret@127.0.0.1:1/mediamill")
    assert done.returncode == 1, done.stdout + done.stderr
    said = " ".join(done.stderr.split())
    assert "cannot reach the database at postgresql://mm:***@127.0.0.1:1/mediamill" in said, said
    assert "Traceback" not in done.stderr and "secret" not in done.stderr


# ------------------------------------------------------------------------------ submit without a worker
@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    _clean_env(monkeypatch)
    monkeypatch.setenv("MEDIAMILL_DATA_DIR", str(tmp_path / "data"))
    rt = Runtime(Settings(data_dir=tmp_path / "data"))
    rt.prepare()
    (tmp_path / "wf.yaml").write_text(WORKFLOW.replace("type: generic", "type: generic\nqueue: lonely"))
    assert CliRunner().invoke(app, ["workflows", "apply", "-f", str(tmp_path / "wf.yaml")]).exit_code == 0
    (tmp_path / "note.txt").write_text("hello")
    yield rt
    rt.close()


def _submit(tmp_path: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["submit", str(tmp_path / "note.txt"), "-w", "WF-DEAD-END", "--json"])
    return result.exit_code, result.stdout, " ".join(result.stderr.split())


def test_submit_warns_when_no_live_worker_serves_the_queue(installed: Runtime, tmp_path: Path) -> None:
    code, out, err = _submit(tmp_path)
    assert code == 0 and '"status": "queued"' in out, err
    assert "warning: no live worker serves queue 'lonely'" in err and "mediamill worker --pool lonely=1" in err
    other = Worker(installed, pools={"elsewhere": 1}).start()  # alive, but for another queue
    try:
        wait_until(lambda: ops.list_workers(installed.engine, lease_seconds=installed.settings.lease_seconds),
                   message="the worker registered")
        assert "no live worker serves queue 'lonely'" in _submit(tmp_path)[2]
    finally:
        other.stop(grace=5)
    serving = Worker(installed, pools={"lonely": 1}).start()
    try:
        code, _out, err = _submit(tmp_path)
        assert code == 0 and "warning" not in err, err
    finally:
        serving.stop(grace=5)
