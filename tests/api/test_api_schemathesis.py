"""Property-based API testing with schemathesis against /openapi.json on a live server.

Every operation is exercised with a valid admin key and bounded examples (about 3,000 cases,
~30 s); the run must produce no server error, no response outside its documented schema and
no undocumented content type. The two Server-Sent Events streams are left out: they stay
open by design and are tested end to end in test_api_e2e.py.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from mediamill.runtime import Runtime

from .support import Keys, LiveServer

MAX_EXAMPLES = 25
CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"


def _seed_jobs(live: LiveServer, keys: Keys) -> None:
    for i in range(3):
        httpx.post(f"{live.url}/v1/jobs", headers=Keys.h(keys.admin),
                   files={"file": (f"f{i}.txt", io.BytesIO(b"seed " * 50))}, data={"workflow": "WF-TEST-NOOP"})


def test_schemathesis_finds_no_server_errors(rt: Runtime, keys: Keys, live: LiveServer) -> None:
    _seed_jobs(live, keys)
    st = str(Path(sys.executable).with_name("st"))
    cmd = [st, "run", f"{live.url}/openapi.json", "-H", f"Authorization: Bearer {keys.admin}",
           "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES), "--workers", "1", "--seed", "1",
           "--exclude-path-regex", r".*/events$", "--request-timeout", "20",
           "--suppress-health-check", "all", "--no-color"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "st_hooks", "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280, env=env)
    out = proc.stdout
    selected = re.search(r"Selected: (\d+)/(\d+)", out)
    cases = re.search(r"(\d+) generated, (.+)", out)
    print(f"\nschemathesis: operations {selected.group(0) if selected else '?'}; "
          f"test cases {cases.group(0) if cases else '?'}")
    assert proc.returncode == 0, "\n".join(out.splitlines()[-120:]) + proc.stderr[-2000:]
    assert selected and int(selected.group(1)) >= 40
