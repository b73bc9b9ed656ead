"""The CLI in remote mode: from a directory with no data dir, every command goes through the SDK to
a real ``mediamill serve`` (SQLite and PostgreSQL), prints what local mode prints and exits with the
same codes; ``job ID --json`` is byte-identical in both modes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.conftest import Server, backend_url, clean_env, mediamill_cmd, run_serve
from tests.helpers import BACKENDS

WORKFLOW = """code: WF-CLIENT-THUMBS
name: Client thumbnails
type: image
queue: image_processing
steps:
  - name: Validate
    type: validation
    action: validate_image
  - name: Thumbnail
    type: thumbnail
    action: create_thumbnail
    params: {{size: {width}}}
"""


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with backend_url(request.param) as url, run_serve(tmp_path, url) as running:
        yield running


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*mediamill_cmd(), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.timeout(900)  # some forty CLI processes, each importing the whole package
def test_remote_cli_end_to_end(server: Server, tmp_path: Path, small_jpeg: Path) -> None:
    elsewhere = tmp_path / "laptop"
    elsewhere.mkdir()
    (elsewhere / "photo.jpg").write_bytes(small_jpeg.read_bytes())
    remote_env = clean_env(MEDIAMILL_URL=server.url, MEDIAMILL_API_KEY=server.admin_key,
                           XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    local_env = server.local_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"))

    def remote(*args: str) -> subprocess.CompletedProcess[str]:
        return run(list(args), remote_env, elsewhere)

    def local(*args: str) -> subprocess.CompletedProcess[str]:
        return run(list(args), local_env, tmp_path)

    # submit --wait: upload, live progress, then the outputs table; exit 0
    done = remote("submit", "photo.jpg", "--workflow", "WF-IMAGE-PROCESS", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert ": completed" in done.stdout and "thumbnail" in done.stdout
    # submit --json prints the API's answer
    accepted = json.loads(remote("submit", "photo.jpg", "-w", "WF-IMAGE-PROCESS", "--json", "-p", "9",
                                 "--param", "quality=80").stdout)
    assert accepted["links"]["self"].endswith(f"/v1/jobs/{accepted['id']}") and accepted["priority"] == 9
    waited = remote("submit", "photo.jpg", "-w", "WF-IMAGE-PROCESS", "--wait", "--json")
    finished = json.loads(waited.stdout)
    assert waited.returncode == 0 and finished["status"] == "completed" and finished["outputs"]

    # job ID --json: the same document in both modes; the table too
    job_id = finished["id"]
    remote_json, local_json = remote("job", str(job_id), "--json"), local("job", str(job_id), "--json")
    assert remote_json.returncode == local_json.returncode == 0, remote_json.stderr + local_json.stderr
    assert remote_json.stdout == local_json.stdout
    assert json.loads(remote_json.stdout)["status"] == "completed"
    assert remote("job", str(job_id)).stdout == local("job", str(job_id)).stdout

    # jobs: the API's list
    listed = json.loads(remote("jobs", "--json", "--limit", "10").stdout)
    assert {job_id, accepted["id"]} <= {j["id"] for j in listed}

    # errors: same message and exit code as local mode
    for args in (["job", "999999"], ["cancel", str(job_id)], ["retry", "999999"], ["submit", "nope.jpg"]):
        r, loc = remote(*args), local(*args)
        assert (r.returncode, r.stderr) == (loc.returncode, loc.stderr), (args, r.stderr, loc.stderr)
        assert r.returncode == 1 and r.stderr.startswith("error:")

    # outputs by code: the same files as local mode saves, checked against size and sha256
    saved = json.loads(remote("outputs", finished["job_code"], "--dest", "got", "--json").stdout)
    local_saved = json.loads(local("outputs", str(job_id), "--dest", str(tmp_path / "got-local"), "--json").stdout)
    assert [(r["name"], r["sha256"], r["action"]) for r in saved["items"]] == \
        [(r["name"], r["sha256"], r["action"]) for r in local_saved["items"]]
    for row in saved["items"]:
        assert (elsewhere / "got" / row["name"]).read_bytes() == (tmp_path / "got-local" / row["name"]).read_bytes()
    again = remote("outputs", finished["job_code"], "--dest", "got")
    assert again.returncode == 0 and "unchanged" in again.stdout

    # actions: the server's catalogue, the same document as local mode on the server's machine
    assert remote("actions", "--json").stdout == local("actions", "--json").stdout
    assert "max_dimension" in remote("actions", "resize_image").stdout
    unknown, unknown_local = remote("actions", "resize_imag"), local("actions", "resize_imag")
    assert (unknown.returncode, unknown.stderr) == (unknown_local.returncode, unknown_local.stderr)

    _workflows(remote, local, elsewhere)
    _operations(remote, job_id)
    _pipelines(remote, local, elsewhere)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["client-thumbs.yaml", "got", "photo.jpg"]  # no data dir


def _workflows(remote, local, elsewhere: Path) -> None:  # type: ignore[no-untyped-def]
    doc = elsewhere / "client-thumbs.yaml"
    doc.write_text(WORKFLOW.format(width=64))
    assert "✓" in remote("workflows", "validate", "-f", str(doc)).stdout
    first = json.loads(remote("workflows", "apply", "-f", str(doc), "--json").stdout)
    assert first == [{"file": str(doc), "code": "WF-CLIENT-THUMBS", "version": 1, "created": True, "warnings": []}]
    doc.write_text(WORKFLOW.format(width=96))
    assert "created version 2" in remote("workflows", "apply", "-f", str(doc)).stdout
    assert "unchanged, version 2" in remote("workflows", "apply", "-f", str(doc)).stdout
    diff = json.loads(remote("workflows", "diff", "WF-CLIENT-THUMBS", "1", "2", "--json").stdout)
    assert diff["steps_changed"] == ["Thumbnail"]
    assert remote("workflows", "activate", "WF-CLIENT-THUMBS", "1").returncode == 0
    shown = json.loads(remote("workflows", "show", "WF-CLIENT-THUMBS", "--json").stdout)
    assert shown["current_version"] == 1 and len(shown["versions"]) == 2
    assert "WF-CLIENT-THUMBS" in remote("workflows", "list").stdout
    assert "WF-CLIENT-THUMBS" in local("workflows", "list").stdout  # the server stored it
    doc.write_text("code: WF-BAD\nsteps: []\n")
    bad = remote("workflows", "validate", "-f", str(doc))
    assert bad.returncode == 2 and "✗" in bad.stderr
    doc.write_text(WORKFLOW.format(width=96))


def _operations(remote, job_id: int) -> None:  # type: ignore[no-untyped-def]
    queues = json.loads(remote("queues", "--json").stdout)
    assert "image_processing" in {q["name"] for q in queues}
    assert remote("queues", "pause", "image_processing").stdout.strip() == "queue image_processing: paused"
    assert remote("queues", "resume", "image_processing").returncode == 0
    assert json.loads(remote("workers", "--json").stdout), "serve runs a worker"
    assert remote("workers", "--all").returncode == 1
    assert json.loads(remote("breakers", "--json").stdout) is not None
    assert json.loads(remote("dlq", "list", "--json").stdout) == []
    keys = json.loads(remote("keys", "list", "--json").stdout)
    assert any(k["role"] == "admin" for k in keys)
    created = json.loads(remote("keys", "create", "--role", "viewer", "--name", "ci", "--json").stdout)
    assert created["key"].startswith("mm_")
    assert remote("keys", "revoke", str(created["id"])).stdout.strip() == f"key {created['id']} revoked"
    assert json.loads(remote("channels", "list", "--json").stdout) == []
    assert json.loads(remote("alerts", "--json").stdout) is not None
    assert remote("priority", str(job_id), "5").returncode == 1  # a finished job keeps its priority


def _pipelines(remote, local, elsewhere: Path) -> None:  # type: ignore[no-untyped-def]
    added = remote("routes", "add", "--name", "photos", "-c", "input.mime.startsWith('image/')",
                   "-w", "WF-IMAGE-PROCESS", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["workflow"] == "WF-IMAGE-PROCESS"
    assert remote("routes", "list", "--json").stdout == local("routes", "list", "--json").stdout
    explained = json.loads(remote("routes", "explain", str(elsewhere / "photo.jpg"), "--json").stdout)
    assert (explained["workflow"], explained["rule"], explained["mime"]) == ("WF-IMAGE-PROCESS", "photos",
                                                                            "image/jpeg")
    assert "→ WF-IMAGE-PROCESS" in remote("routes", "explain", str(elsewhere / "photo.jpg")).stdout
    # without --workflow the server's rule decides
    routed = json.loads(remote("submit", "photo.jpg", "--json").stdout)
    assert routed["workflow"] == "WF-IMAGE-PROCESS" and routed["routing"]["rule"] == "photos"
    expected = local_removed_message(remote)
    assert remote("routes", "remove", "photos").stdout.strip() == expected
    gone = remote("routes", "remove", "photos")
    assert gone.returncode == 1 and "no routing rule 'photos'" in gone.stderr
    counted = [json.loads(run_mode("--all", "--workflow", "WF-IMAGE-PROCESS", "--status", "completed",
                                   "--dry-run", "--json").stdout)["count"] for run_mode in (
        lambda *a: remote("reprocess", *a), lambda *a: local("reprocess", *a))]
    assert counted[0] == counted[1] >= 2


def local_removed_message(remote) -> str:  # type: ignore[no-untyped-def]
    rules = json.loads(remote("routes", "list", "--json").stdout)
    rule = next(r for r in rules if r["name"] == "photos")
    return f"rule {rule['id']} 'photos' removed"
