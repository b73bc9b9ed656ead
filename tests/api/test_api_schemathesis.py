"""Property-based contract testing with schemathesis against /openapi.json on a live server.

Every operation — the two Server-Sent Events streams included, their events checked against the
documented event schema — goes through every phase (examples, coverage, fuzzing, stateful) and
every check: no server error, responses, headers and content types as documented, every
schema-valid request accepted and every schema-violating one refused, exact ``Allow`` headers,
required headers enforced. ``schemathesis.toml`` beside this file lists the few answers JSON
Schema cannot predict (tus's 412/413, semantic refusals of workflow documents and URLs), each
with its reason. Examples per operation are bounded to keep the run a few minutes.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mediamill.runtime import Runtime

from .support import Keys, LiveServer

MAX_EXAMPLES = 5
HERE = Path(__file__).parent


def _seed_jobs(live: LiveServer, keys: Keys) -> None:
    for i in range(3):
        httpx.post(f"{live.url}/v1/jobs", headers=Keys.h(keys.admin),
                   files={"file": (f"f{i}.txt", io.BytesIO(b"seed " * 50))}, data={"workflow": "WF-TEST-NOOP"})


@pytest.mark.timeout(900)  # ~2,300 cases: about four minutes on a busy 2-core machine
def test_schemathesis_all_phases_all_checks_no_failures(rt: Runtime, keys: Keys, live: LiveServer) -> None:
    _seed_jobs(live, keys)
    st = str(Path(sys.executable).with_name("st"))
    cmd = [st, "--config-file", str(HERE / "schemathesis.toml"), "run", f"{live.url}/openapi.json",
           "-H", f"Authorization: Bearer {keys.admin}", "--checks", "all", "--max-examples", str(MAX_EXAMPLES),
           "--workers", "1", "--seed", "1", "--request-timeout", "5", "--suppress-health-check", "all",
           "--no-color"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "st_hooks", "PYTHONPATH": str(HERE)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    out = proc.stdout
    selected = re.search(r"Selected: (\d+)/(\d+)", out)
    cases = re.search(r"(\d+) generated, (.+)", out)
    print(f"\nschemathesis: operations {selected.group(0) if selected else '?'}; "
          f"test cases {cases.group(0) if cases else '?'}")
    assert proc.returncode == 0, "\n".join(out.splitlines()[-150:]) + proc.stderr[-2000:]
    assert selected and int(selected.group(1)) == int(selected.group(2)) >= 60  # nothing left out
    phases = out.split("Test Phases:")[1].split("\n\n")[0]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ {phase}", phases), phases
