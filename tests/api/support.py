"""Helpers for the API tests: runtimes on SQLite or PostgreSQL, keys, a live uvicorn server."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from mediamill.config import Settings
from mediamill.errors import WorkflowInvalid
from mediamill.runtime import Runtime
from mediamill.store import auth_repo, workflow_repo
from mediamill.workflows.loader import validate_document
from tests.helpers import PG_URL, LiveServer, free_port, postgres_database, wait_until

__all__ = ["PG_URL", "LiveServer", "free_port", "postgres_database", "wait_until"]  # re-exported for the API tests


TEST_WORKFLOWS = [
    {"code": "WF-TEST-NOOP", "name": "noop", "type": "generic", "queue": "test",
     "steps": [{"name": "Nothing", "action": "noop"}]},
    {"code": "WF-TEST-SLEEP", "name": "sleep", "type": "generic", "queue": "test",
     "steps": [{"name": "Nap", "action": "sleep", "params": {"seconds": 0.6}},
               {"name": "Done", "action": "noop"}]},
    {"code": "WF-TEST-FAIL", "name": "fail", "type": "generic", "queue": "test", "retry_count": 0,
     "steps": [{"name": "Boom", "action": "fail", "params": {"error_class": "invalid_input"}}]},
]


def make_runtime(data_dir: Path, database_url: str = "", **overrides: Any) -> Runtime:
    settings = Settings(data_dir=data_dir, database_url=database_url, **overrides)
    rt = Runtime(settings)
    rt.migrate()
    with contextlib.suppress(WorkflowInvalid):  # built-ins track the media actions, which change under us
        workflow_repo.install_builtins(rt.engine)
    with rt.engine.begin() as conn:
        for doc in TEST_WORKFLOWS:
            workflow_repo.save_version(conn, validate_document(doc), author="tests")
    auth_repo.clear_cache()
    return rt


class Keys:
    """Keys of two tenants, one per role for tenant 'default' and an admin + submitter for 'beta'."""

    def __init__(self, rt: Runtime) -> None:
        mk = auth_repo.create_key
        self.admin = mk(rt.engine, role="admin", name="admin").plaintext
        self.operator = mk(rt.engine, role="operator").plaintext
        self.submitter = mk(rt.engine, role="submitter").plaintext
        self.viewer = mk(rt.engine, role="viewer").plaintext
        self.other = mk(rt.engine, role="admin", tenant_id="beta", name="beta admin").plaintext

    @staticmethod
    def h(key: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}", **extra}
