"""Shadow runs: a candidate version runs beside the active one on the same inputs, harmlessly.

A shadow job (``shadow_of`` = its primary) runs on the same queues at the lowest priority, writes
its outputs under the ``shadow/`` storage prefix, skips steps that act on the outside world (actions
that are not idempotent: webhooks, deliveries), sends no notification, leaves no dead letter, moves no
breaker and no figure, and never appears in the default job list. ``report`` compares the two versions
over the shadowed pairs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mediamill.actions.base import get_action
from mediamill.engine.rollouts import latest, public, version_figures
from mediamill.errors import NotFound
from mediamill.media.compare import compare_outputs
from mediamill.storage import Storage
from mediamill.store import shadow_repo, workflow_repo
from mediamill.store.db import Connection, Engine

SHADOW_SKIP = "shadow run: steps that act outside (webhooks, deliveries) do not run"
OUTSIDE_FAMILIES = ("delivery", "destination")
PAIRS_COMPARED = 20  # pairs whose outputs are opened and compared (the newest)


def acts_outside(action: str) -> bool:
    """Does this action change something outside mediamill (so a shadow run must not run it)?"""
    spec = get_action(action)
    return spec is None or not spec.idempotent or spec.family in OUTSIDE_FAMILIES


def _rollout(conn: Connection, workflow_id: int, tenant_id: str, version: int | None) -> dict[str, Any] | None:
    if version is None:
        return latest(conn, workflow_id, tenant_id, "shadow")
    return shadow_repo.shadow_rollout(conn, workflow_id, tenant_id, version)


def _pairs(conn: Connection, workflow_id: int, tenant_id: str, version: int, limit: int) -> list[tuple[Any, Any]]:
    return [(_Row(p), _Row(s)) for p, s in shadow_repo.shadow_pairs(conn, workflow_id, tenant_id, version, limit)]


class _Row(dict[str, Any]):
    """A dict whose keys read as attributes (what ``version_figures`` expects)."""

    def __getattr__(self, name: str) -> Any:
        return self[name]


def _per_step(outputs: list[list[dict[str, Any]]]) -> dict[str, dict[str, int]]:
    steps: dict[str, dict[str, int]] = {}
    for outs in outputs:
        for o in outs:
            s = steps.setdefault(o["step_name"] or "?", {"outputs": 0, "bytes": 0})
            s["outputs"] += 1
            s["bytes"] += int(o["bytes"] or 0)
    return steps


def report(engine: Engine, storage: Storage, code: str, *, tenant_id: str, version: int | None = None,
           limit: int = 200) -> dict[str, Any]:
    """Both versions side by side over the shadowed pairs: runs, failures by class, p50/p95 duration,
    outputs and bytes per step, and per output pair a difference that means something."""
    with engine.connect() as conn:
        wf = workflow_repo.get_workflow(conn, code)
        rollout = _rollout(conn, wf.workflow_id, tenant_id, version)
        if rollout is None:
            raise NotFound(f"{code} has no shadow run" + (f" of version {version}" if version else ""))
        pairs = _pairs(conn, wf.workflow_id, tenant_id, rollout["version"], limit)
        outputs = shadow_repo.outputs_by_job(conn, [i for p, s in pairs for i in (p["id"], s["id"])])
    primaries, shadows = [p for p, _s in pairs], [s for _p, s in pairs]
    versions = {
        "primary": {"versions": sorted({p["workflow_version"] for p in primaries}), **version_figures(primaries),
                    "steps": _per_step([outputs[p["id"]] for p in primaries])},
        "candidate": {"versions": [rollout["version"]], **version_figures(shadows),
                      "steps": _per_step([outputs[s["id"]] for s in shadows])},
    }
    compared = [_pair(storage, p, s, outputs[p["id"]], outputs[s["id"]], i < PAIRS_COMPARED)
                for i, (p, s) in enumerate(pairs)]
    return {"workflow": code, "shadow": public(rollout), "pairs_total": len(pairs), "versions": versions,
            "pairs": compared}


def _job_view(j: dict[str, Any]) -> dict[str, Any]:
    end = j["finished_at"] or j["completed_at"]  # a failed run has a duration too
    done = end is not None and j["started_at"] is not None
    return {"id": j["id"], "job_code": j["job_code"], "version": j["workflow_version"], "status": j["status"],
            "error_class": j["error_class"],
            "duration_seconds": round((end - j["started_at"]).total_seconds(), 3) if done else None}


def _pair(storage: Storage, p: dict[str, Any], s: dict[str, Any], p_outs: list[dict[str, Any]],
          s_outs: list[dict[str, Any]], open_files: bool) -> dict[str, Any]:
    matched = _match(p_outs, s_outs)
    diffs = []
    for a, b in matched:
        entry: dict[str, Any] = {"step": (a or b or {}).get("step_name"), "primary": _out_view(a),
                                 "candidate": _out_view(b)}
        if a and b and open_files:
            entry["difference"] = _difference(storage, a, b)
        diffs.append(entry)
    return {"primary": _job_view(p), "candidate": _job_view(s), "outputs": diffs}


def _out_view(o: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if o is None else {"name": o["name"], "mime_type": o["mime_type"], "bytes": o["bytes"]}


def _match(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[tuple[dict[str, Any] | None,
                                                                          dict[str, Any] | None]]:
    """Pair outputs by name, then the rest by step and order; what is left has no counterpart."""
    by_name = {o["name"]: o for o in b}
    pairs: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = []
    rest_a = []
    for o in a:
        twin = by_name.pop(o["name"], None)
        if twin is not None:
            pairs.append((o, twin))
        else:
            rest_a.append(o)
    rest_b = [o for o in b if o["name"] in by_name]
    for o in rest_a:
        twin = next((x for x in rest_b if x["step_name"] == o["step_name"]), None)
        if twin is not None:
            rest_b.remove(twin)
        pairs.append((o, twin))
    pairs.extend((None, o) for o in rest_b)
    return pairs


def _difference(storage: Storage, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mm-shadow-") as tmp:
        try:
            pa = storage.local_path(a["storage_key"]) or storage.get_to_file(a["storage_key"], Path(tmp) / "a")
            pb = storage.local_path(b["storage_key"]) or storage.get_to_file(b["storage_key"], Path(tmp) / "b")
        except Exception as exc:  # an output pruned or unreadable: say so, compare the rest
            return {"kind": "error", "error": f"could not read the outputs: {type(exc).__name__}"}
        out = compare_outputs(pa, pb, a["mime_type"], b["mime_type"])
    if a["bytes"] and b["bytes"]:
        out["bytes_ratio"] = round(b["bytes"] / a["bytes"], 3)
    return out
