"""`mediamill keys revoke` stops a key of any tenant (the CLI speaks to the database: it is root)."""

from __future__ import annotations

import json
from pathlib import Path

from mediamill.store import auth_repo
from tests.helpers import make_runtime

from .test_cli_workflows import mm


def test_revoke_a_key_of_another_tenant(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rt = make_runtime(data, migrate=False)
    mm(data, "db", "upgrade")
    made = json.loads(mm(data, "keys", "create", "--role", "admin", "--tenant", "beta", "--json").stdout)
    assert auth_repo.cached_lookup(rt.engine, made["key"]) is not None

    refused = mm(data, "keys", "revoke", str(made["id"]), "--tenant", "default", check=False)
    assert refused.returncode != 0 and f"no API key {made['id']}" in refused.stdout + refused.stderr
    mm(data, "keys", "revoke", str(made["id"]))
    auth_repo.clear_cache()
    assert auth_repo.cached_lookup(rt.engine, made["key"]) is None
    listed = json.loads(mm(data, "keys", "list", "--tenant", "beta", "--json").stdout)
    assert [k["revoked_at"] is not None for k in listed] == [True]
    rt.close()
