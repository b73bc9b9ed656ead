"""Submitting jobs: store the input (server-generated key), create the job on the workflow's current
version, its queue entry and its first event — in one transaction."""

from __future__ import annotations

import base64
import collections
import functools
import os
import secrets
import tempfile
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO

from mediamill import telemetry
from mediamill.engine import rollouts, wakeup
from mediamill.engine.routing import REVIEW_CODE, REVIEW_QUEUE, RoutingDecision, RoutingFacts, decide
from mediamill.errors import Conflict, InvalidInput, MediamillError, NotFound, UnsupportedFormat
from mediamill.media.sniff import accepts, canonical, sniff_bytes, sniff_file
from mediamill.storage import Storage, new_key
from mediamill.store import lifecycle, submit_repo, workflow_repo
from mediamill.store.db import Connection, Engine
from mediamill.store.inputs import input_referenced, lock_input
from mediamill.store.submit_repo import CONSTRAINT_ERRORS
from mediamill.store.timeutil import utcnow
from mediamill.workflows.models import WorkflowDef

#: The standard base-32 alphabet to Crockford's (no I, L, O, U: nothing to misread when a code is read aloud)
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")


@dataclass
class JobInput:
    """Where a job's input is: an object in storage, or a URL the worker fetches."""

    storage_key: str | None = None
    url: str | None = None
    filename: str | None = None
    mime: str | None = None  # sniffed from the bytes, never a client's claim
    size: int | None = None
    checksum: str | None = None
    #: an object already in storage that other jobs or an upload may share (upload_id, storage_key)
    reused: bool = False


@dataclass
class SubmitRequest:
    job_input: JobInput
    workflow_code: str | None = None  # None or "auto" = route by rules
    tenant_id: str = "default"
    priority: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    notify: dict[str, Any] | None = None
    submitted_by: str | None = None
    request_id: str | None = None
    idempotency_key: str | None = None
    idempotency_hash: str | None = None
    version: int | None = None
    deliver: dict[str, Any] | None = None  # overrides the workflow's deliver: (checked by the caller)


@dataclass(slots=True)  # (not frozen: a frozen dataclass's __init__ costs five times as much, once a job of a batch)
class SubmittedJob:
    id: int
    job_code: str
    status: str
    workflow_code: str
    workflow_version: int
    queue_name: str
    priority: int
    replayed: bool = False  # an Idempotency-Key replay returned an existing job
    routing: dict[str, Any] | None = None  # how it was routed, when submitted without a workflow

    def as_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "job_code": self.job_code, "status": self.status,
               "workflow": self.workflow_code, "workflow_version": self.workflow_version,
               "queue": self.queue_name, "priority": self.priority}
        if self.routing is not None:
            out["routing"] = self.routing
        return out


def new_job_code(now: datetime | None = None) -> str:
    """One job code (see :func:`new_job_codes`)."""
    return new_job_codes(1, now)[0]


def new_job_codes(n: int, now: datetime | None = None) -> list[str]:
    """``n`` job codes: the day, and 40 random bits as eight base-32 characters (a single code's from
    :data:`_spare_codes`)."""
    prefix = _day_prefix((now or utcnow()).date())
    if n != 1:
        return [prefix + rand for rand in _random_parts(n)]
    try:
        rand = _spare_codes.popleft()
    except IndexError:
        rand, *spare = _random_parts(_SPARE_CODES)
        _spare_codes.extend(spare)
    return [prefix + rand]


def _random_parts(n: int) -> list[str]:
    """``n`` times 40 random bits as eight base-32 characters (five random bytes encode to eight characters without
    padding; one read of the system's random source and one encoding for all of them)."""
    rand = base64.b32encode(secrets.token_bytes(5 * n)).translate(_CROCKFORD).decode()
    return [rand[k:k + 8] for k in range(0, 8 * n, 8)]


#: Random parts of single submits' job codes, made :data:`_SPARE_CODES` at a time: a single submit then costs
#: neither a read of the system's random source nor an encoding (with a cold cache between one submit's round trip
#: and the next, those cost it ≈ 10 µs). Each is used once (``popleft`` is atomic); a forked process starts with
#: none, so parent and child never share one.
_spare_codes: collections.deque[str] = collections.deque()
_SPARE_CODES = 256
os.register_at_fork(after_in_child=_spare_codes.clear)


@functools.lru_cache(maxsize=2)
def _day_prefix(day: date) -> str:
    """``JOB-YYYYMMDD-`` of ``day`` (formatted once a day)."""
    return f"JOB-{day:%Y%m%d}-"


# ------------------------------------------------------------------------------ inputs
def store_input_file(storage: Storage, path: Path, *, tenant_id: str = "default",
                     filename: str | None = None) -> JobInput:
    """Copy a local file into storage under a fresh key and sniff its type from its bytes."""
    if not path.is_file():
        raise InvalidInput(f"no such file: {path}")
    mime = sniff_file(path)
    storage.check_room()
    info = storage.put_file(new_key("inputs", tenant_id), path)
    return JobInput(storage_key=info.key, filename=filename or path.name, mime=mime, size=info.size,
                    checksum=info.checksum)


def store_input_stream(storage: Storage, stream: BinaryIO, *, tenant_id: str = "default",
                       filename: str | None = None) -> JobInput:
    storage.check_room()
    info = storage.put(new_key("inputs", tenant_id), stream)
    return JobInput(storage_key=info.key, filename=filename, mime=sniff_object(storage, info.key),
                    size=info.size, checksum=info.checksum)


def sniff_object(storage: Storage, key: str) -> str:
    local = storage.local_path(key)
    if local is not None:
        return sniff_file(local)
    with storage.open(key) as fh:
        head = fh.read(8192)
    mime = sniff_bytes(head)
    if mime.startswith("application/zip") or "openxml" in mime:
        with tempfile.TemporaryDirectory() as tmp:
            return sniff_file(storage.get_to_file(key, Path(tmp) / "obj"))
    return mime


# ------------------------------------------------------------------------------ routing
def route(conn: Connection, req: SubmitRequest) -> RoutingDecision:
    """Pick a workflow for a job submitted without one (see ``mediamill.engine.routing``)."""
    inp = req.job_input
    facts = RoutingFacts(mime=inp.mime, size=inp.size, filename=inp.filename, metadata=req.metadata,
                         submitter=req.submitted_by, priority=req.priority, params=req.params)
    return decide(conn, tenant_id=req.tenant_id, facts=facts)


def _ensure_review_workflow(conn: Connection) -> None:
    try:
        workflow_repo.get_workflow(conn, REVIEW_CODE)
    except NotFound:
        wf = WorkflowDef.model_validate({
            "code": REVIEW_CODE, "name": "Needs review (no routing rule matched)", "type": "generic",
            "input_types": ["*/*"], "queue": REVIEW_QUEUE, "priority": 5,
            "steps": [{"name": "Hold for review", "action": "noop"}]})
        workflow_repo.save_version(conn, wf, author="system")


# ------------------------------------------------------------------------------ submit
def _idempotent_replay(conn: Connection, req: SubmitRequest) -> SubmittedJob | None:
    if not req.idempotency_key:
        return None
    row = submit_repo.job_by_idempotency_key(conn, req.tenant_id, req.idempotency_key)
    if row is None:
        return None
    if req.idempotency_hash and row["idempotency_hash"] != req.idempotency_hash:
        raise Conflict("Idempotency-Key was already used with a different request body")
    code, _type = workflow_repo.workflow_facts(conn, row["workflow_id"])
    return SubmittedJob(row["id"], row["job_code"], row["status"], code, row["workflow_version"] or 1,
                        row["queue_name"] or "", row["priority"] or 0, replayed=True, routing=row["routing"])


def _fixed_values(prep: Prepared, now: datetime) -> dict[str, Any]:
    """The ``workflow_jobs`` values every job of one :class:`Prepared` submitted at ``now`` starts with."""
    wf = prep.wf
    return {"workflow_id": wf.workflow_id, "workflow_version": wf.version, "status": prep.status, "current_step": 0,
            "progress_percent": 0, "submitted_at": now, "queue_name": prep.queue, "retry_count": 0,
            "rescue_count": 0, "run_number": 1, "cancel_requested": False, "updated_at": now}


#: The ``workflow_jobs`` columns whose values come from each request (:func:`_request_values`).
_REQUEST_COLUMNS = ("job_code", "input_file_path", "input_key", "input_url", "input_mime", "input_size",
                    "input_filename", "priority", "submitted_by", "tenant_id", "params", "job_metadata", "notify",
                    "request_id", "idempotency_key", "idempotency_hash", "routing", "deliver")


def _request_values(req: SubmitRequest, prep: Prepared, code: str) -> tuple[Any, ...]:
    """The values of :data:`_REQUEST_COLUMNS` for ``req`` (prepared as ``prep``, its job code ``code``)."""
    inp = req.job_input
    return (code, inp.storage_key or inp.url, inp.storage_key, inp.url, inp.mime, inp.size, inp.filename,
            prep.wf.definition.priority if req.priority is None else req.priority, req.submitted_by, req.tenant_id,
            req.params or {}, req.metadata or {}, req.notify, req.request_id, req.idempotency_key,
            req.idempotency_hash, prep.routing.as_dict() if prep.routing else None, req.deliver)


def _job_values(req: SubmitRequest, prep: Prepared, now: datetime, code: str,
                fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The job's ``workflow_jobs`` row (``fixed``: :func:`_fixed_values` of ``prep`` and ``now``, made once a
    batch)."""
    return {**(fixed or _fixed_values(prep, now)),
            **dict(zip(_REQUEST_COLUMNS, _request_values(req, prep, code), strict=True))}


def _job_rows(reqs: Sequence[SubmitRequest], prepared: Sequence[Prepared], now: datetime) -> list[dict[str, Any]]:
    """The jobs' ``workflow_jobs`` rows, each with a new job code."""
    fixed: dict[int, dict[str, Any]] = {}
    rows = []
    for req, prep, code in zip(reqs, prepared, new_job_codes(len(reqs), now), strict=True):
        base = fixed.get(id(prep))
        if base is None:
            base = fixed[id(prep)] = _fixed_values(prep, now)
        rows.append(_job_values(req, prep, now, code, base))
    return rows


def _check_type(d: WorkflowDef, inp: JobInput) -> None:
    if inp.mime is None:
        return  # URL inputs are sniffed by the worker after the fetch
    if inp.mime == "application/x-empty":
        raise InvalidInput("the input file is empty")
    if not accepts(d.input_types, inp.mime):
        raise UnsupportedFormat(
            f"workflow {d.code} accepts {', '.join(d.input_types)}; the file is {canonical(inp.mime)} "
            f"(detected from its content)")


@dataclass(frozen=True)
class Prepared:
    """A checked submission: the workflow version it runs, its first status and queue, its routing."""

    wf: workflow_repo.VersionedWorkflow
    status: str
    queue: str
    routing: RoutingDecision | None = None


@dataclass
class _BatchLookups:
    """What one transaction has already read: a batch of submits of one upload and one workflow checks the
    input's references once and reads the workflow's head once (both are stable within the transaction:
    the input's lock, or SQLite's write lock, is held until it ends)."""

    stored: set[str] = field(default_factory=set)
    workflows: dict[tuple[str, int | None], workflow_repo.VersionedWorkflow] = field(default_factory=dict)
    accepted: set[tuple[int, int, str | None]] = field(default_factory=set)  # (workflow, version, type) checked
    # what a submit naming its workflow was prepared as, by all it depends on: (workflow code, version asked for,
    # input type, whether it overrides deliver:)
    prepared: dict[tuple[str, int | None, str | None, bool], Prepared] = field(default_factory=dict)

    def check_still_stored(self, conn: Connection, key: str) -> None:
        if key not in self.stored:
            _check_still_stored(conn, key)
            self.stored.add(key)

    def check_type(self, wf: workflow_repo.VersionedWorkflow, inp: JobInput) -> None:
        key = (wf.workflow_id, wf.version, inp.mime)
        if key not in self.accepted:
            _check_type(wf.definition, inp)
            self.accepted.add(key)

    def workflow(self, conn: Connection, code: str, version: int | None) -> workflow_repo.VersionedWorkflow:
        wf = self.workflows.get((code, version))
        if wf is None:
            wf = self.workflows[(code, version)] = workflow_repo.current_workflow(conn, code, version)
        return wf


def _prepare(conn: Connection, req: SubmitRequest, seen: _BatchLookups | None = None) -> Prepared:
    seen = seen or _BatchLookups()
    inp = req.job_input
    if inp.storage_key is None and inp.url is None:
        raise InvalidInput("a job needs an input: a stored file, an upload or a URL")
    if inp.reused and inp.storage_key:
        seen.check_still_stored(conn, inp.storage_key)
    code = req.workflow_code
    if not code or code == "auto":
        routing = route(conn, req)
        if routing.workflow == REVIEW_CODE:
            _ensure_review_workflow(conn)
        return _prepared(conn, req, routing.workflow, req.version or routing.version, routing, seen)
    key = (code, req.version, inp.mime, req.deliver is not None)
    prep = seen.prepared.get(key)
    if prep is None:  # (a batch's submits of one workflow and input type are prepared alike)
        prep = seen.prepared[key] = _prepared(conn, req, code, req.version, None, seen)
    return prep


def _prepared(conn: Connection, req: SubmitRequest, code: str, version: int | None, routing: RoutingDecision | None,
              seen: _BatchLookups) -> Prepared:
    """``req`` checked against the workflow ``code`` runs (``version``, or its current one)."""
    wf = seen.workflow(conn, code, version)
    if not wf.is_active and version is None:
        raise Conflict(f"workflow {code} is deactivated")
    if req.deliver is not None and wf.definition.deliver is None:
        raise InvalidInput(f"workflow {code} has no deliver: step, so a job cannot override it")
    if code == REVIEW_CODE:
        return Prepared(wf, "pending", REVIEW_QUEUE, routing)
    seen.check_type(wf, req.job_input)
    return Prepared(wf, "queued", wf.definition.queue_name, routing)


def _status_event(v: dict[str, Any], prep: Prepared, rollout_id: int | None = None) -> dict[str, Any]:
    data = submit_repo.status_event(v, prep.wf.definition.code)
    if rollout_id is not None:
        data["rollout"] = rollout_id  # a canary picked this job for the candidate version
    if prep.status == "pending" and prep.routing is not None:
        data["reason"] = prep.routing.reason
    return data


def _check_still_stored(conn: Connection, key: str) -> None:
    """A shared object is only reused while something refers to it: once the last reference is
    pruned its file is gone (or going, under the same lock)."""
    lock_input(conn, key, shared=True)
    if not input_referenced(conn, key):
        raise NotFound(f"no object {key!r} (it was removed by retention)")


# ------------------------------------------------------------------------------ one-statement submits
# A single submit on PostgreSQL is usually one statement on an autocommit connection: one round trip, where the
# general path below takes eight (begin, the workflow's head, the job, rollouts, the queue entry, the event, the
# wake-up, commit). It may assume what the last general submit of the same workflow and tenant read — the
# current version (its checksum), no active rollout — because the statement checks exactly that and writes
# nothing when it no longer holds; the general path then runs and reads it all again.

_known: weakref.WeakKeyDictionary[Engine, dict[tuple[str, str], workflow_repo.VersionedWorkflow]] = \
    weakref.WeakKeyDictionary()
_known_lock = threading.Lock()


def _known_of(engine: Engine) -> dict[tuple[str, str], workflow_repo.VersionedWorkflow]:
    known = _known.get(engine)
    if known is None:
        with _known_lock:
            known = _known.setdefault(engine, {})
    return known


def _learn(conn: Connection, reqs: Sequence[SubmitRequest], prepared: Sequence[Prepared],
           live: dict[tuple[int, str, str], dict[str, Any]]) -> None:
    """Note, per (workflow, tenant) a general submit just queued, whether the next may take one statement."""
    known = _known_of(conn.engine)
    for req, prep in zip(reqs, prepared, strict=True):
        if prep.status != "queued" or prep.routing is not None or req.version is not None or prep.wf.checksum is None:
            continue
        wf, key = prep.wf, (prep.wf.definition.code, req.tenant_id)
        rolling = any((wf.workflow_id, req.tenant_id, kind) in live for kind in ("canary", "shadow"))
        if rolling or not wf.is_active or wf.current_version != wf.version:
            known.pop(key, None)
        else:
            known[key] = wf


def _known_workflow(engine: Engine, req: SubmitRequest,
                    known: dict[tuple[str, str], workflow_repo.VersionedWorkflow],
                    ) -> workflow_repo.VersionedWorkflow | None:
    """The workflow version a one-statement submit of ``req`` may assume (what the last general submit of its
    workflow and tenant read, ``known``: the engine's, :func:`_known_of`), or None: submit the general way."""
    code, inp = req.workflow_code, req.job_input
    if (not code or req.version is not None or inp.reused or engine.dialect.name != "postgresql"
            or (inp.storage_key is None and inp.url is None)):
        return None
    wf = known.get((code, req.tenant_id))
    if wf is None or wf.checksum is None or (req.deliver is not None and wf.definition.deliver is None):
        return None
    return wf


def _known_prepared(engine: Engine, reqs: Sequence[SubmitRequest]) -> Prepared | None:
    """How submits of ONE workflow and tenant, each of which may take the one statement, are queued; None: submit
    them the general way."""
    first, known = reqs[0], _known_of(engine)
    wf = _known_workflow(engine, first, known)
    if wf is None:
        return None
    inputs = {}
    for req in reqs:
        if req.tenant_id != first.tenant_id or _known_workflow(engine, req, known) is not wf:
            return None
        inputs[req.job_input.mime] = req.job_input
    try:
        for inp in inputs.values():
            _check_type(wf.definition, inp)
    except MediamillError:
        return None  # the general path decides on the current version, and explains
    return Prepared(wf, "queued", wf.definition.queue_name)


def _submit_one_statement(engine: Engine, reqs: Sequence[SubmitRequest]) -> list[SubmittedJob] | None:
    """The submits in one statement (one job: :func:`submit_repo.insert_queued_job`; several of one workflow and
    tenant: :func:`submit_repo.insert_queued_batch`), when the facts it needs are known; None: submit the general
    way (which learns the facts again, or forgets them)."""
    prep = _known_prepared(engine, reqs)
    if prep is None:
        return None
    wf, now = prep.wf, utcnow()
    assert wf.checksum is not None
    facts = {"checksum": wf.checksum, "workflow_code": wf.definition.code, "channel": wakeup.CHANNEL}
    codes = new_job_codes(len(reqs), now)
    if len(reqs) == 1:
        row = _job_values(reqs[0], prep, now, codes[0])
        job_id = submit_repo.insert_queued_job(engine, row, **facts)
        ids, priorities = (None if job_id is None else [job_id]), (row["priority"],)
    else:  # the rows as columns (each request's values in one tuple, turned into columns by zip)
        columns = dict(zip(_REQUEST_COLUMNS, zip(*(_request_values(r, prep, c) for r, c in zip(reqs, codes,
                                                                                                 strict=True)),
                                                 strict=True), strict=True))
        del columns["tenant_id"]  # (one tenant: checked above)
        ids = submit_repo.insert_queued_batch(engine, {**_fixed_values(prep, now), "tenant_id": reqs[0].tenant_id},
                                              columns, **facts)
        priorities = columns["priority"]
    if ids is None:
        return None
    return [SubmittedJob(i, code, "queued", wf.definition.code, wf.version, prep.queue, priority)
            for i, code, priority in zip(ids, codes, priorities, strict=True)]


def _insert(conn: Connection, reqs: Sequence[SubmitRequest]) -> list[SubmittedJob]:
    now = utcnow()
    seen = _BatchLookups()
    prepared = [_prepare(conn, r, seen) for r in reqs]
    live = rollouts.live_for(conn, {(prep.wf.workflow_id, r.tenant_id) for r, prep in zip(reqs, prepared, strict=True)
                                    if prep.status == "queued"})
    _learn(conn, reqs, prepared, live)
    values = _job_rows(reqs, prepared, now)
    if live or any(prep.status != "queued" or prep.routing is not None for prep in prepared):
        ids, queues = _insert_routed(conn, reqs, prepared, values, live, now)
    else:  # the usual batch: every job queued on the version its workflow runs now
        ids = submit_repo.insert_queued_jobs(conn, values, {prep.wf.workflow_id: prep.wf.definition.code
                                                            for prep in prepared})
        queues = [v["queue_name"] for v in values]
    wakeup.notify_in_tx(conn, queues)
    return [SubmittedJob(i, v["job_code"], v["status"], prep.wf.definition.code, prep.wf.version, v["queue_name"],
                         v["priority"], routing=v["routing"])
            for i, v, prep in zip(ids, values, prepared, strict=True)]


def _insert_routed(conn: Connection, reqs: Sequence[SubmitRequest], prepared: list[Prepared],
                   values: list[dict[str, Any]], live: dict[tuple[int, str, str], dict[str, Any]],
                   now: datetime) -> tuple[list[int], list[str]]:
    """Jobs some of which were routed, wait for review or meet a rollout (a canary moves them, a shadow runs
    beside them): their ids, and the queues their entries went to."""
    ids = submit_repo.insert_jobs(conn, values)
    canary = _divert(conn, reqs, prepared, values, ids, live) if live else {}
    events = [{"job_id": i, "tenant_id": v["tenant_id"], "event_type": "routing", "created_at": now,
               "data": prep.routing.event()}
              for i, v, prep in zip(ids, values, prepared, strict=True) if prep.routing is not None]
    events += [{"job_id": i, "tenant_id": v["tenant_id"], "event_type": "status", "created_at": now,
                "data": _status_event(v, prep, canary.get(i))}
               for i, v, prep in zip(ids, values, prepared, strict=True)]
    rows = [(i, v) for i, v in zip(ids, values, strict=True) if v["status"] == "queued"]
    if live:
        shadows = _shadow_jobs(conn, reqs, prepared, values, ids, live, now)
        rows += shadows
        events += [{"job_id": i, "tenant_id": v["tenant_id"], "event_type": "status", "created_at": now,
                    "data": {"status": "queued", "shadow_of": v["shadow_of"], "version": v["workflow_version"],
                             "queue": v["queue_name"], "priority": v["priority"]}} for i, v in shadows]
        events += [{"job_id": v["shadow_of"], "tenant_id": v["tenant_id"], "event_type": "shadow", "created_at": now,
                    "data": {"shadow_job": i, "version": v["workflow_version"]}} for i, v in shadows]
    submit_repo.enqueue_jobs(conn, [submit_repo.queue_entry(i, v) for i, v in rows])
    lifecycle.add_events(conn, events)
    return ids, [v["queue_name"] for _i, v in rows]


def _divertible(req: SubmitRequest, prep: Prepared) -> bool:
    """A job may run a candidate version unless its version was asked for (by the client or a rule)."""
    pinned = req.version is not None or (prep.routing is not None and prep.routing.version is not None)
    return prep.status == "queued" and not pinned


def _candidate(conn: Connection, prep: Prepared, rollout: dict[str, Any] | None, job_id: int,
               mime: str | None) -> workflow_repo.VersionedWorkflow | None:
    """The candidate version when the rollout picks this job and the candidate accepts its input."""
    if rollout is None or not rollouts.picked(rollout, job_id):
        return None
    cand = workflow_repo.current_workflow(conn, prep.wf.definition.code, int(rollout["version"]))
    return cand if not mime or accepts(cand.definition.input_types, mime) else None


def _divert(conn: Connection, reqs: Sequence[SubmitRequest], prepared: list[Prepared], values: list[dict[str, Any]],
            ids: list[int], live: dict[tuple[int, str, str], dict[str, Any]]) -> dict[int, int]:
    """Canary: move the picked jobs to the candidate version (decided by job id); returns job id → rollout id."""
    moved: dict[int, int] = {}
    for k, (req, prep, job_id) in enumerate(zip(reqs, prepared, ids, strict=True)):
        rollout = live.get((prep.wf.workflow_id, req.tenant_id, "canary")) if _divertible(req, prep) else None
        cand = _candidate(conn, prep, rollout, job_id, req.job_input.mime)
        if cand is None or rollout is None:
            continue
        values[k].update(workflow_version=cand.version, queue_name=cand.definition.queue_name)
        prepared[k] = Prepared(cand, prep.status, cand.definition.queue_name, prep.routing)
        submit_repo.move_to_version(conn, job_id, version=cand.version, queue=cand.definition.queue_name)
        moved[job_id] = int(rollout["id"])
    return moved


SHADOW_PRIORITY = 0  # shadow jobs run when nothing else waits on their queue


def _shadow_jobs(conn: Connection, reqs: Sequence[SubmitRequest], prepared: list[Prepared],
                 values: list[dict[str, Any]], ids: list[int], live: dict[tuple[int, str, str], dict[str, Any]],
                 now: datetime) -> list[tuple[int, dict[str, Any]]]:
    """Shadow runs: the picked primaries also run on the candidate as separate jobs (``shadow_of``)."""
    rows = []
    for req, prep, v, job_id in zip(reqs, prepared, values, ids, strict=True):
        rollout = live.get((prep.wf.workflow_id, req.tenant_id, "shadow")) if prep.status == "queued" else None
        cand = _candidate(conn, prep, rollout, job_id, req.job_input.mime)
        if cand is None:
            continue
        rows.append({**v, "job_code": new_job_code(now), "workflow_version": cand.version,
                     "queue_name": cand.definition.queue_name, "priority": SHADOW_PRIORITY, "shadow_of": job_id,
                     "notify": None, "idempotency_key": None, "idempotency_hash": None, "routing": None})
    if not rows:
        return []
    return list(zip(submit_repo.insert_jobs(conn, rows), rows, strict=True))


def submit_many(engine: Engine, reqs: Sequence[SubmitRequest]) -> list[SubmittedJob]:
    """Submit several jobs in one transaction (all or none)."""
    if not reqs:
        return []
    jobs = _submit_one_statement(engine, reqs)
    if jobs is None:
        with engine.begin() as conn:
            jobs = _insert(conn, reqs)
    wakeup.after_commit({j.queue_name for j in jobs}, engine)
    _count_submitted(jobs)
    return jobs


def submit_job(engine: Engine, req: SubmitRequest) -> SubmittedJob:
    """Submit one job; an Idempotency-Key replay returns the job the key created."""
    fast = _submit_one_statement(engine, [req])
    if fast is not None:
        wakeup.after_commit([fast[0].queue_name], engine)
        _count_submitted(fast)
        return fast[0]
    try:
        with engine.begin() as conn:
            replay = _idempotent_replay(conn, req)
            if replay is not None:
                return replay
            job = _insert(conn, [req])[0]
    except CONSTRAINT_ERRORS:
        if not req.idempotency_key:
            raise
        with engine.connect() as conn:  # a concurrent submit with the same key won the race
            replay = _idempotent_replay(conn, req)
        if replay is None:
            raise
        return replay
    wakeup.after_commit([job.queue_name], engine)
    _count_submitted([job])
    return job


def submit_in(conn: Connection, req: SubmitRequest) -> SubmittedJob:
    """Submit one job inside the caller's transaction (so the caller's own writes commit with it);
    after the commit, call :func:`announce` with the result."""
    replay = _idempotent_replay(conn, req)
    return replay if replay is not None else _insert(conn, [req])[0]


def announce(engine: Engine, jobs: Sequence[SubmittedJob]) -> None:
    """Wake workers for, and count, jobs whose submit transaction has committed."""
    fresh = [j for j in jobs if not j.replayed]
    wakeup.after_commit({j.queue_name for j in fresh}, engine)
    _count_submitted(fresh)


def _count_submitted(jobs: Sequence[SubmittedJob]) -> None:
    telemetry.emit_many("job.submitted", [{"workflow": j.workflow_code, "job_id": j.id, "tenant": None}
                                          for j in jobs])
