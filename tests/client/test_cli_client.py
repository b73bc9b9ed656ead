"""`mediamill login` (the key stored 0600, then used by every command), the `[remote]` table of the
config file, `--url`/`--api-key`, `--local`, and shell completion."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediamill.cli import remote
from tests.client.conftest import Server, clean_env, mediamill_cmd, run_serve


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's server runs workers for the image queue only (so another queue has none)."""
    with run_serve(tmp_path_factory.mktemp("serve"), MEDIAMILL_POOLS="image_processing=1") as server:
        yield server


def run(args: list[str], env: dict[str, str], cwd: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*mediamill_cmd(), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False, **kw)  # type: ignore[call-overload]


def test_login_stores_the_key_0600_and_commands_use_it(sqlite_server: Server, tmp_path: Path) -> None:
    xdg, cwd = tmp_path / "xdg", tmp_path / "anywhere"
    cwd.mkdir()
    env = clean_env(XDG_CONFIG_HOME=str(xdg))
    out = run(["login", sqlite_server.url], env, cwd, input=sqlite_server.admin_key + "\n")
    assert out.returncode == 0, out.stdout + out.stderr
    path = xdg / "mediamill" / "config.toml"
    assert f"logged in to {sqlite_server.url} as admin of tenant default" in out.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sqlite_server.admin_key in path.read_text()
    assert sqlite_server.admin_key not in out.stdout + out.stderr  # typed at a hidden prompt, never echoed
    workflows = json.loads(run(["workflows", "list", "--json"], env, cwd).stdout)
    assert "WF-VIDEO-TRANSCODE" in {w["code"] for w in workflows}
    assert list(cwd.iterdir()) == []  # nothing local was created

    bad = run(["login", sqlite_server.url, "--api-key", "mm_00000000_wrong"], env, cwd)
    assert bad.returncode == 1 and "error:" in bad.stderr
    assert sqlite_server.admin_key in path.read_text()  # a refused key does not replace a good one


def test_config_file_remote_table_and_flags(sqlite_server: Server, tmp_path: Path) -> None:
    env = clean_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    (tmp_path / "mediamill.toml").write_text(
        f'data_dir = "unused"\n\n[remote]\nurl = "{sqlite_server.url}"\napi_key = "{sqlite_server.admin_key}"\n')
    queues = run(["queues", "--json"], env, tmp_path)
    assert queues.returncode == 0 and isinstance(json.loads(queues.stdout), list), queues.stderr
    assert not (tmp_path / "unused").exists()
    (tmp_path / "mediamill.toml").unlink()
    flags = run(["--url", sqlite_server.url, "--api-key", sqlite_server.admin_key, "job", "987654"], env, tmp_path)
    assert (flags.returncode, flags.stderr.strip()) == (1, "error: no job 987654")
    wrong = run(["--url", sqlite_server.url, "--api-key", "mm_00000000_nope", "jobs"], env, tmp_path)
    assert wrong.returncode == 1 and "error:" in wrong.stderr and "Traceback" not in wrong.stderr
    down = run(["--url", "http://127.0.0.1:9", "jobs"], env, tmp_path)
    assert down.returncode == 1 and "error:" in down.stderr and "Traceback" not in down.stderr


def test_local_flag_and_local_only_commands_ignore_the_server(tmp_path: Path) -> None:
    env = clean_env(MEDIAMILL_URL="http://127.0.0.1:9", MEDIAMILL_API_KEY="x", MEDIAMILL_DATA_DIR=str(tmp_path / "d"),
                    XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    assert run(["db", "upgrade"], env, tmp_path).returncode == 0
    listed = run(["--local", "jobs", "--json"], env, tmp_path)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    assert run(["jobs"], env, tmp_path).returncode == 1  # without --local it tries the (absent) server


def test_save_login_keeps_other_tables(tmp_path: Path) -> None:
    path = tmp_path / "c" / "config.toml"
    path.parent.mkdir()
    path.write_text('[remote]\nurl = "http://old"\napi_key = "old"\n\n[other]\nx = 1\n')
    os.chmod(path, 0o644)
    remote.save_login("http://new:8000", 'k"ey', path)
    import tomllib

    data = tomllib.loads(path.read_text())
    assert data == {"remote": {"url": "http://new:8000", "api_key": 'k"ey'}, "other": {"x": 1}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_completion_scripts_and_completing(tmp_path: Path) -> None:
    env = clean_env()
    for shell in ("bash", "zsh", "fish", "powershell"):
        out = run(["completion", shell], env, tmp_path)
        assert out.returncode == 0 and "_MEDIAMILL_COMPLETE" in out.stdout, shell
    assert run(["completion", "tcsh"], env, tmp_path).returncode == 2
    script = run(["completion", "bash"], env, tmp_path).stdout
    completed = subprocess.run(
        ["bash", "-c", script + '\nCOMP_WORDS=(mediamill work); COMP_CWORD=1; _mediamill_completion mediamill; '
                                'printf "%s\\n" "${COMPREPLY[@]}"'],
        env={**env, "PATH": f"{Path(mediamill_cmd()[0]).parent}:{env['PATH']}"}, capture_output=True, text=True,
        timeout=120, check=False)
    assert {"worker", "workers", "workflows"} <= set(completed.stdout.split()), completed.stdout + completed.stderr


def test_remote_submit_warns_when_no_worker_serves_the_queue(sqlite_server: Server, small_jpeg: Path,
                                                             tmp_path: Path) -> None:
    from mediamill.client import Client

    with Client(sqlite_server.url, sqlite_server.admin_key) as mm:
        mm.workflows.apply("code: WF-NOBODY\nname: nobody\ntype: image\nqueue: nobody_serves\nsteps:\n"
                           "  - name: Validate\n    type: validation\n    action: validate_image\n")
    (tmp_path / "photo.jpg").write_bytes(small_jpeg.read_bytes())
    env = clean_env(MEDIAMILL_URL=sqlite_server.url, MEDIAMILL_API_KEY=sqlite_server.admin_key,
                    XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    out = run(["submit", "photo.jpg", "-w", "WF-NOBODY"], env, tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("submitted JOB-"), out.stdout + out.stderr
    assert "warning: no live worker serves queue 'nobody_serves'" in " ".join(out.stderr.split())
    job_id = out.stdout.split("(id ")[1].split(")")[0]
    assert run(["cancel", job_id], env, tmp_path).stdout.strip() == f"job {job_id}: cancelled"
    quiet = run(["submit", "photo.jpg", "-w", "WF-IMAGE-PROCESS"], env, tmp_path)
    assert quiet.returncode == 0 and "warning" not in quiet.stderr


def test_without_database_or_server_the_refusal_says_how_to_reach_a_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from mediamill.cli.main import app

    for name in [n for n in os.environ if n.startswith("MEDIAMILL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["jobs"])
    said = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "no mediamill database" in said and "mediamill login URL" in said, said
    assert list(tmp_path.iterdir()) == []


def test_remote_rollout_and_shadow_commands(sqlite_server: Server, tmp_path: Path) -> None:
    from mediamill.client import Client

    doc = ("code: WF-CANARY\nname: canary\ntype: image\nqueue: image_processing\nsteps:\n"
           "  - name: Validate\n    type: validation\n    action: validate_image\n")
    with Client(sqlite_server.url, sqlite_server.admin_key) as mm:
        mm.workflows.apply(doc)
        candidate = mm.workflows.apply(doc.replace("name: canary", "name: canary two"), activate=False)
    assert candidate.version == 2
    env = clean_env(MEDIAMILL_URL=sqlite_server.url, MEDIAMILL_API_KEY=sqlite_server.admin_key,
                    XDG_CONFIG_HOME=str(tmp_path / "xdg"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        out = run(list(args), env, tmp_path)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        return out

    assert cli("rollout", "start", "WF-CANARY", "--version", "2", "--percent", "20").stdout.strip() == \
        "WF-CANARY: v2 gets 20 % of new jobs"
    status = json.loads(cli("rollout", "status", "WF-CANARY", "--json").stdout)
    assert status["rollout"]["version"] == 2 and status["rollout"]["percent"] == 20
    assert cli("rollout", "abort", "WF-CANARY").stdout.strip() == "WF-CANARY: rollout aborted"
    assert cli("shadow", "start", "WF-CANARY", "--version", "2", "--percent", "50").stdout.strip() == \
        "WF-CANARY: shadowing 50 % of new jobs on v2"
    assert json.loads(cli("shadow", "report", "WF-CANARY", "--json").stdout)["pairs_total"] == 0
    assert cli("shadow", "stop", "WF-CANARY").stdout.strip() == "WF-CANARY: shadow run stopped"
