"""`mediamill keys`: create, list and revoke API keys."""

from __future__ import annotations

import typer

from mediamill.cli import remote
from mediamill.cli.context import open_runtime
from mediamill.cli.output import console, handle_errors, print_json, print_table
from mediamill.store import auth_repo

app = typer.Typer(help="API keys (roles: admin, operator, submitter, viewer).", no_args_is_help=True)


@app.command("create")
@handle_errors
def create(role: str = typer.Option(..., "--role", help="admin | operator | submitter | viewer"),
           tenant: str = typer.Option(auth_repo.DEFAULT_TENANT, "--tenant", help="tenant id (created when new)"),
           name: str | None = typer.Option(None, "--name", help="a label for the key"),
           as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Create a key; the plaintext is printed once and never stored."""
    mm = remote.client()
    if mm is not None:
        body = mm.create_key(role, tenant=tenant, name=name).to_dict()
    else:
        rt = open_runtime()
        rt.migrate()
        created = auth_repo.create_key(rt.engine, role=role, tenant_id=tenant, name=name)
        body = {"id": created.id, "tenant": created.tenant_id, "role": created.role, "name": created.name,
                "prefix": created.prefix, "key": created.plaintext}
    if as_json:
        print_json(body)
        return
    console.print(f"key {body['id']} ({body['role']}, tenant {body['tenant']}) — shown once:", highlight=False)
    console.print(body["key"], highlight=False, soft_wrap=True)


@app.command("list")
@handle_errors
def list_(tenant: str | None = typer.Option(None, "--tenant", help="only this tenant"),
          as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Every key (never the secrets); in remote mode, the keys of the API key's tenant."""
    mm = remote.client()
    if mm is not None:
        rows = [r for r in mm.list_keys() if tenant is None or r.get("tenant_id") == tenant]
    else:
        rt = open_runtime()
        with rt.engine.connect() as conn:
            rows = auth_repo.list_keys(conn, tenant_id=tenant)
    if as_json:
        print_json(rows)
        return
    print_table(rows, ["id", "tenant_id", "role", "name", "prefix", "created_at", "last_used_at", "revoked_at"],
                title="API keys")


@app.command("revoke")
@handle_errors
def revoke(key_id: int = typer.Argument(..., help="the key's id (see `keys list`)"),
           tenant: str | None = typer.Option(None, "--tenant", help="refuse unless the key belongs to this tenant")
           ) -> None:
    """Revoke a key of any tenant (API processes stop accepting it within seconds); in remote mode, a key
    of the API key's tenant."""
    mm = remote.client()
    if mm is not None:
        mm.revoke_key(key_id)
    else:
        rt = open_runtime()
        auth_repo.revoke_key(rt.engine, key_id, tenant_id=tenant)
    console.print(f"key {key_id} revoked")
