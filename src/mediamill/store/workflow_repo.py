"""Workflow definitions in the database: immutable versions, activation (rollback), diff, built-ins."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from mediamill.errors import NotFound
from mediamill.store.tables import workflow_definitions as wd
from mediamill.store.tables import workflow_steps as ws
from mediamill.store.tables import workflow_versions as wv
from mediamill.store.timeutil import utcnow
from mediamill.workflows.loader import dump_yaml, parse_workflow, validate_document
from mediamill.workflows.models import WorkflowDef


@dataclass(frozen=True)
class SavedVersion:
    code: str
    workflow_id: int
    version: int
    created: bool  # False when identical content already existed
    active: bool


@dataclass(frozen=True)
class VersionedWorkflow:
    workflow_id: int
    version: int
    definition: WorkflowDef
    is_active: bool
    current_version: int | None
    step_ids: list[int]  # workflow_steps.id per step, in order
    checksum: str | None = None  # the stored version's (None: a workflow inserted by plain SQL, with no versions)


def _definition_row(wf: WorkflowDef, version: int) -> dict[str, Any]:
    return {
        "workflow_name": wf.name, "description": wf.description, "workflow_type": wf.type,
        "input_types": ",".join(wf.input_types), "output_types": ",".join(wf.output_types),
        "steps_json": json.dumps([s.model_dump(mode="json", exclude_none=True) for s in wf.steps]),
        "default_priority": wf.priority, "timeout_minutes": wf.timeout_minutes,
        "retry_count": wf.retry_count, "queue_name": wf.queue_name, "current_version": version,
        "updated_at": utcnow(),
    }


def _insert_steps(conn: Connection, workflow_id: int, version: int, wf: WorkflowDef) -> None:
    rows = [{
        "workflow_id": workflow_id, "version": version, "step_number": i + 1, "step_name": s.name,
        "step_type": s.type or s.action.split("_")[0], "action": s.action,
        "parameters": json.dumps(s.params), "timeout_seconds": s.timeout_seconds,
        "on_failure": s.on_failure, "condition": s.when,
        "needs": json.dumps(s.needs) if s.needs is not None else None, "retry_count": s.retry_count,
    } for i, s in enumerate(wf.steps)]
    conn.execute(ws.insert(), rows)


def save_version(conn: Connection, wf: WorkflowDef, *, source: str | None = None,
                 author: str | None = None, activate: bool = True,
                 tenant_id: str | None = None, comment: str | None = None) -> SavedVersion:
    """Store ``wf`` as a new immutable version (or find the identical one) and optionally activate it."""
    checksum = wf.checksum()
    row = conn.execute(sa.select(wd.c.id, wd.c.current_version).where(wd.c.workflow_code == wf.code)
                       ).first()
    if row is None:
        workflow_id = conn.execute(
            wd.insert().values(workflow_code=wf.code, is_active=True, created_by=author,
                               tenant_id=tenant_id, **_definition_row(wf, 1)).returning(wd.c.id)
        ).scalar_one()
        current = None
    else:
        workflow_id, current = row
    same = conn.execute(sa.select(wv.c.version).where(wv.c.workflow_id == workflow_id,
                                                      wv.c.checksum == checksum)
                        .order_by(wv.c.version.desc())).scalar()
    if same is not None:
        if activate and same != current:
            activate_version(conn, wf.code, same)
        return SavedVersion(wf.code, workflow_id, same, created=False, active=activate or same == current)
    version = (conn.execute(sa.select(sa.func.max(wv.c.version)).where(wv.c.workflow_id == workflow_id)
                            ).scalar() or 0) + 1
    conn.execute(wv.insert().values(
        workflow_id=workflow_id, version=version, definition=json.loads(wf.canonical_json()),
        source=source if source is not None else dump_yaml(wf), checksum=checksum,
        created_by=author, created_at=utcnow(), comment=comment))
    _insert_steps(conn, workflow_id, version, wf)
    if activate or current is None:
        conn.execute(wd.update().where(wd.c.id == workflow_id).values(**_definition_row(wf, version)))
    return SavedVersion(wf.code, workflow_id, version, created=True, active=activate or current is None)


def activate_version(conn: Connection, code: str, version: int) -> WorkflowDef:
    """Make ``version`` the one new jobs run (activating an older version is a rollback)."""
    got = get_workflow(conn, code, version)
    conn.execute(wd.update().where(wd.c.id == got.workflow_id)
                 .values(is_active=True, **_definition_row(got.definition, version)))
    return got.definition


def set_active(conn: Connection, code: str, active: bool) -> None:
    res = conn.execute(wd.update().where(wd.c.workflow_code == code).values(is_active=active,
                                                                             updated_at=utcnow()))
    if res.rowcount == 0:
        raise NotFound(f"no workflow {code!r}")


def get_workflow(conn: Connection, code_or_id: str | int, version: int | None = None) -> VersionedWorkflow:
    """A workflow's definition at ``version`` (default: the current one)."""
    cond = wd.c.id == code_or_id if isinstance(code_or_id, int) else wd.c.workflow_code == code_or_id
    head = conn.execute(sa.select(wd).where(cond)).mappings().first()
    if head is None:
        raise NotFound(f"no workflow {code_or_id!r}")
    want = version or head["current_version"]
    if want is None:
        return _legacy_workflow(conn, head)
    ver = conn.execute(sa.select(wv.c.definition, wv.c.checksum).where(wv.c.workflow_id == head["id"],
                                                                       wv.c.version == want)).first()
    if ver is None:
        raise NotFound(f"workflow {head['workflow_code']} has no version {want}")
    definition = WorkflowDef.model_validate(ver.definition)
    step_ids = list(conn.execute(sa.select(ws.c.id).where(ws.c.workflow_id == head["id"], ws.c.version == want)
                                 .order_by(ws.c.step_number)).scalars())
    return VersionedWorkflow(head["id"], want, definition, bool(head["is_active"]),
                             head["current_version"], step_ids, ver.checksum)


_VERSIONS: dict[tuple[str, int, int], VersionedWorkflow] = {}


def current_workflow(conn: Connection, code: str, version: int | None = None) -> VersionedWorkflow:
    """Like ``get_workflow`` but one indexed lookup when the version was read before: versions are immutable,
    so only the head row (current version, active flag) and the version's checksum are read each time."""
    want_version = sa.func.coalesce(sa.literal(version, sa.Integer), wd.c.current_version)
    head = conn.execute(sa.select(wd.c.id, wd.c.current_version, wd.c.is_active, wv.c.checksum)
                        .select_from(wd.outerjoin(wv, sa.and_(wv.c.workflow_id == wd.c.id,
                                                              wv.c.version == want_version)))
                        .where(wd.c.workflow_code == code)).first()
    if head is None:
        raise NotFound(f"no workflow {code!r}")
    want = version or head.current_version
    key = (str(conn.engine.url), head.id, want or 0)  # ids repeat across databases
    cached = _VERSIONS.get(key) if want is not None else None
    if cached is None or cached.checksum != head.checksum:  # a database recreated or restored reuses ids
        cached = get_workflow(conn, code, version)
        if want is not None:
            _VERSIONS[key] = cached
    if cached.is_active != bool(head.is_active) or cached.current_version != head.current_version:
        cached = VersionedWorkflow(cached.workflow_id, cached.version, cached.definition, bool(head.is_active),
                                   head.current_version, cached.step_ids, cached.checksum)
    return cached


def _legacy_workflow(conn: Connection, head: Any) -> VersionedWorkflow:
    """A workflow inserted by plain SQL (by another tool, with no versions): rebuilt from its workflow_steps rows."""
    rows = conn.execute(sa.select(ws).where(ws.c.workflow_id == head["id"]).order_by(ws.c.step_number)
                        ).mappings().all()
    steps = [{"name": r["step_name"] or f"step {r['step_number']}", "action": r["action"] or "noop",
              "type": r["step_type"], "params": json.loads(r["parameters"] or "{}"),
              "on_failure": r["on_failure"] or "stop", "timeout_seconds": r["timeout_seconds"] or 300}
             for r in rows]
    doc = {"code": head["workflow_code"], "name": head["workflow_name"] or head["workflow_code"],
           "description": head["description"] or "", "type": head["workflow_type"] or "generic",
           "input_types": (head["input_types"] or "*/*").split(","),
           "output_types": [t for t in (head["output_types"] or "").split(",") if t],
           "priority": head["default_priority"] or 5, "timeout_minutes": head["timeout_minutes"] or 60,
           "retry_count": head["retry_count"] if head["retry_count"] is not None else 3,
           "steps": steps or [{"name": "noop", "action": "noop"}]}
    definition = validate_document(doc, source=head["workflow_code"])
    return VersionedWorkflow(head["id"], 1, definition, bool(head["is_active"]), None, [r["id"] for r in rows])


def workflow_facts(conn: Connection, workflow_id: int) -> tuple[str, str]:
    """A workflow's code and type (``generic`` when it has none), by its id."""
    row = conn.execute(sa.select(wd.c.workflow_code, wd.c.workflow_type)
                       .where(wd.c.id == workflow_id)).one()
    return row[0], row[1] or "generic"


def job_workflow(conn: Connection, job: Mapping[str, Any]) -> tuple[str, str, int]:
    """The code, type and version of the workflow a job (a ``workflow_jobs`` row) runs."""
    code, wtype = workflow_facts(conn, job["workflow_id"])
    return code, wtype, job["workflow_version"] or 1


def list_workflows(conn: Connection) -> list[dict[str, Any]]:
    counts = (sa.select(wv.c.workflow_id, sa.func.count().label("versions")).group_by(wv.c.workflow_id)
              .subquery())
    q = (sa.select(wd.c.id, wd.c.workflow_code, wd.c.workflow_name, wd.c.workflow_type, wd.c.queue_name,
                   wd.c.default_priority, wd.c.is_active, wd.c.current_version, wd.c.updated_at,
                   sa.func.coalesce(counts.c.versions, 0).label("versions"))
         .select_from(wd.outerjoin(counts, counts.c.workflow_id == wd.c.id)).order_by(wd.c.workflow_code))
    return [dict(r) for r in conn.execute(q).mappings()]


def workflow_owners(conn: Connection) -> dict[str, str | None]:
    """Workflow code → the tenant that owns it (None: shared by every tenant)."""
    return {str(code): tenant for code, tenant in conn.execute(sa.select(wd.c.workflow_code, wd.c.tenant_id))}


def workflow_owner(conn: Connection, code: str) -> tuple[bool, str | None]:
    """(whether a workflow ``code`` exists, the tenant that owns it — None: shared by every tenant)."""
    row = conn.execute(sa.select(wd.c.tenant_id).where(wd.c.workflow_code == code)).first()
    return (False, None) if row is None else (True, row.tenant_id)


def list_versions(conn: Connection, code: str) -> list[dict[str, Any]]:
    head = get_workflow(conn, code)
    q = (sa.select(wv.c.version, wv.c.checksum, wv.c.created_by, wv.c.created_at, wv.c.comment)
         .where(wv.c.workflow_id == head.workflow_id).order_by(wv.c.version))
    return [{**dict(r), "active": r["version"] == head.current_version} for r in conn.execute(q).mappings()]


def version_source(conn: Connection, code: str, version: int) -> str:
    got = get_workflow(conn, code, version)
    return dump_yaml(got.definition)


def diff_versions(conn: Connection, code: str, v1: int, v2: int) -> dict[str, Any]:
    """A unified diff of two versions plus a per-step summary (added / removed / changed)."""
    a, b = get_workflow(conn, code, v1).definition, get_workflow(conn, code, v2).definition
    text = "".join(difflib.unified_diff(dump_yaml(a).splitlines(True), dump_yaml(b).splitlines(True),
                                        fromfile=f"{code}@v{v1}", tofile=f"{code}@v{v2}"))
    sa_steps = {s.name: s.model_dump(mode="json") for s in a.steps}
    sb_steps = {s.name: s.model_dump(mode="json") for s in b.steps}
    return {
        "code": code, "from": v1, "to": v2, "diff": text,
        "steps_added": [n for n in sb_steps if n not in sa_steps],
        "steps_removed": [n for n in sa_steps if n not in sb_steps],
        "steps_changed": [n for n in sb_steps if n in sa_steps and sa_steps[n] != sb_steps[n]],
    }


BUILTIN_FILES = ("video_transcode.yaml", "image_process.yaml", "audio_transcode.yaml",
                 "doc_process.yaml", "video_analyze.yaml")


def builtin_workflows() -> list[WorkflowDef]:
    pkg = resources.files("mediamill.workflows") / "builtin"
    return [parse_workflow((pkg / name).read_text(), source=f"builtin/{name}") for name in BUILTIN_FILES]


def install_builtins(engine: Engine) -> list[SavedVersion]:
    """Install the built-in workflows (``workflows/builtin``) when missing (a later start creates no new versions).

    Safe when several processes start at once: whoever inserts a workflow first wins, the others skip it."""
    saved = []
    with engine.connect() as conn:
        existing = set(conn.execute(sa.select(wd.c.workflow_code)).scalars())
    for wf in builtin_workflows():
        if wf.code in existing:
            continue
        try:
            with engine.begin() as conn:
                saved.append(save_version(conn, wf, author="builtin", comment="built-in template"))
        except IntegrityError:
            continue  # another process installed it a moment ago
    return saved
