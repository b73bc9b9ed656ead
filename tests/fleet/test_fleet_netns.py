"""The fleet for real: three worker hosts and two API replicas as network namespaces on a bridge, one PostgreSQL
cluster and moto's S3 server on the bridge address (tests/fleet/netns.py builds and removes all of it).

Checked: a burst spreads over the workers, every host's metrics are scraped over the bridge, a tus upload can
move between replicas, and a host whose cable is pulled loses its jobs to the others within lease + 2 s with
nothing lost, nothing run twice and no stale write once the cable is back.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.fleet.netns import BUCKET, Fleet, netns_fleet, s3_client, unavailable_reason
from tests.helpers import wait_until

REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

LEASE = 5
BURST = {"code": "WF-BURST", "name": "burst", "type": "generic", "queue": "burst",
         "steps": [{"name": "nap", "action": "sleep", "params": {"seconds": 0.5}}]}
CUT = {"code": "WF-CUT", "name": "cut", "type": "generic", "queue": "cut",
       "steps": [{"name": "first", "action": "noop"},
                 {"name": "nap", "action": "sleep", "params": {"seconds": 6}},
                 {"name": "last", "action": "noop"}]}
TERMINAL = ("completed", "partial", "failed", "cancelled")
# A host cut in the middle of a transaction keeps the rows it touched locked until the server ends its session;
# the rescue skips locked rows, so that timeout must be shorter than the lease for a rescue within the lease.
FLEET_SETTINGS = {"lease_seconds": LEASE, "poll_interval": 0.2, "db_idle_in_transaction_timeout_seconds": 4}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("fleet")
    with netns_fleet(work, worker_hosts=3, api_hosts=2, workflows=[BURST, CUT],
                     settings=FLEET_SETTINGS) as built:
        built.start_workers()
        tag = built.net.tag
        yield built
    assert not [ns for ns in os.popen("ip netns list").read().split() if ns.startswith(tag)], "namespaces left"
    assert not built.net.leftovers()


@pytest.fixture(scope="module")
def db(fleet: Fleet) -> Iterator[sa.Engine]:
    # pooled: the test polls every 50 ms while it times a rescue, and a connection per poll is a server fork
    engine = sa.create_engine(fleet.cluster.local_url.replace("postgresql://", "postgresql+psycopg://", 1),
                              pool_size=2)
    yield engine
    engine.dispose()


def _rows(db: sa.Engine, sql: str, **params: Any) -> list[sa.Row[Any]]:
    with db.connect() as conn:
        return list(conn.execute(sa.text(sql), params).all())


def _statuses(db: sa.Engine, ids: list[int]) -> Counter[str]:
    rows = _rows(db, "SELECT status FROM workflow_jobs WHERE id = ANY(:ids)", ids=ids)
    found = Counter(str(r[0]) for r in rows)
    found["missing"] = len(ids) - len(rows)
    return found


def _wait(predicate: Any, timeout: float, message: str, interval: float = 0.1) -> Any:
    return wait_until(predicate, timeout=timeout, interval=interval, message=message)


def _wait_terminal(db: sa.Engine, ids: list[int], timeout: float) -> Counter[str]:
    def done() -> Counter[str] | None:
        counts = _statuses(db, ids)
        return counts if sum(counts[s] for s in TERMINAL) == len(ids) else None
    return _wait(done, timeout, f"{len(ids)} jobs terminal", interval=0.25)


def _queue(fleet: Fleet, name: str, action: str) -> None:
    res = httpx.post(f"{fleet.api_urls[0]}/v1/queues/{name}/{action}", headers=fleet.headers(), timeout=30)
    assert res.status_code == 200, res.text


def test_every_host_is_scraped_over_the_bridge(fleet: Fleet) -> None:
    """Each worker serves its own /metrics on its host's address; the root namespace scrapes all three."""
    for host in fleet.worker_hosts:
        text = httpx.get(fleet.metrics_url(host), timeout=10).text
        info = [s.labels for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "mediamill_process_info"]
        assert len(info) == 1 and info[0]["role"] == "worker", text[:500]
        assert info[0]["worker"] == fleet.worker_ids[host.name]


def test_a_burst_spreads_over_the_workers(fleet: Fleet, db: sa.Engine) -> None:
    """30 jobs submitted at once (to a paused queue, after ANALYZE of an empty queue: the plan that let one
    claim take the whole backlog) end up spread: no worker runs more than twice its share."""
    upload = fleet.upload(b"burst input\n")
    with db.connect() as conn:
        conn.execute(sa.text("ANALYZE media_queue"))
        conn.commit()
    _queue(fleet, "burst", "pause")
    ids = fleet.submit(upload, BURST["code"], 30)
    _queue(fleet, "burst", "resume")
    counts = _wait_terminal(db, ids, timeout=120)
    assert counts["completed"] == 30, counts
    per_worker = Counter(str(r[0]) for r in _rows(
        db, "SELECT worker_id FROM step_executions WHERE job_id = ANY(:ids) AND status = 'completed'", ids=ids))
    assert sum(per_worker.values()) == 30, per_worker
    share = 30 / len(fleet.worker_hosts)
    assert max(per_worker.values()) <= 2 * share, per_worker
    assert set(per_worker) <= set(fleet.worker_ids.values()), per_worker


def _tus_across_replicas(fleet: Fleet, data: bytes) -> tuple[int, str]:
    """Start an upload on replica A with the first half, resume it on replica B; the final PATCH's status
    and the upload id."""
    a, b = fleet.api_urls
    tus = {**fleet.headers(), "Tus-Resumable": "1.0.0"}
    half = len(data) // 2
    res = httpx.post(f"{a}/v1/uploads", content=data[:half], timeout=60, headers={
        **tus, "Upload-Length": str(len(data)), "Content-Type": "application/offset+octet-stream"})
    assert res.status_code == 201, res.text
    upload_id = res.headers["location"].rsplit("/", 1)[1]
    head = httpx.head(f"{b}/v1/uploads/{upload_id}", headers=tus, timeout=30)
    assert head.status_code == 200, head.status_code
    offset = int(head.headers["upload-offset"])
    assert offset == half  # replica B knows how far replica A got
    res = httpx.patch(f"{b}/v1/uploads/{upload_id}", content=data[offset:], timeout=60, headers={
        **tus, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
    return res.status_code, upload_id


def test_a_tus_upload_moves_between_replicas(fleet: Fleet, db: sa.Engine) -> None:
    """Started on replica A, resumed on replica B (its own data dir): the object in S3 is the bytes sent."""
    data = os.urandom(3 * 1024 * 1024 + 17)
    status, upload_id = _tus_across_replicas(fleet, data)
    assert status == 204
    rows = _rows(db, "SELECT storage_key, completed_at FROM upload_sessions WHERE id = :id", id=upload_id)
    assert rows and rows[0][1] is not None and rows[0][0]
    key = str(rows[0][0])
    s3 = s3_client(fleet.s3_endpoint)
    found = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) if o["Key"].endswith(key)]
    assert len(found) == 1, found
    stored = s3.get_object(Bucket=BUCKET, Key=found[0])["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_cut_host_is_rescued_without_loss_or_stale_writes(fleet: Fleet, db: sa.Engine) -> None:
    """Pull one host's cable while its steps run: its jobs leave it within lease + 2 s, every job completes
    once, and when the cable is back the cut worker writes nothing into jobs finished elsewhere."""
    victim = fleet.worker_hosts[0]
    victim_id = fleet.worker_ids[victim.name]
    upload = fleet.upload(b"cut input\n")
    ids = fleet.submit(upload, CUT["code"], 2 * len(fleet.worker_hosts))

    def victim_naps() -> list[int]:
        return [int(r[0]) for r in _rows(
            db, "SELECT q.job_id FROM media_queue q JOIN step_executions s ON s.job_id = q.job_id "
                "WHERE q.job_id = ANY(:ids) AND q.status = 'processing' AND q.worker_id = :w "
                "AND s.step_name = 'nap' AND s.status = 'running' AND s.worker_id = :w", ids=ids, w=victim_id)]

    held = _wait(victim_naps, 60, "the victim running nap steps")
    cut_at = datetime.now(UTC).replace(tzinfo=None)
    t_cut = time.monotonic()
    fleet.cut(victim)
    try:
        def released() -> bool:
            return not _rows(db, "SELECT 1 FROM media_queue WHERE job_id = ANY(:ids) AND worker_id = :w "
                                 "AND status = 'processing'", ids=held, w=victim_id)
        _wait(released, LEASE + 10, "the cut host's jobs rescued", interval=0.05)
        rescue_s = time.monotonic() - t_cut
        # the scenario, not a wait: the link stays down 8 s, so the cut worker's own naps end while it is cut
        # off and it comes back with results to write
        time.sleep(max(0.0, 8 - (time.monotonic() - t_cut)))
    finally:
        fleet.restore(victim)
    restored_at = datetime.now(UTC).replace(tzinfo=None)
    print(f"rescued {rescue_s:.2f} s after the cut (lease {LEASE} s)")
    assert rescue_s <= LEASE + 2, f"rescued {rescue_s:.1f} s after the cut"

    counts = _wait_terminal(db, ids, timeout=120)
    assert counts["completed"] == len(ids), counts  # 0 lost

    # the cut worker is back: it heartbeats again (or has given up its claims); give its late writes a chance
    def back() -> bool:
        rows = _rows(db, "SELECT heartbeat_at FROM workers WHERE id = :w", w=victim_id)
        return bool(rows and rows[0][0] is not None and rows[0][0] > restored_at)
    _wait(back, 60, "the cut worker heartbeating again", interval=0.25)
    # it noticed: each job it held is dropped with one warning (the scenario did reach the fenced path)
    codes = [str(r[0]) for r in _rows(db, "SELECT job_code FROM workflow_jobs WHERE id = ANY(:ids)", ids=held)]
    _wait(lambda: all(f"job {c}: this worker lost its claim" in fleet.log(victim, "worker") for c in codes), 30,
          "the cut worker dropping the jobs it lost", interval=0.25)
    # a whole lease of the cut worker's life after it dropped them: any late write would have landed by then
    dropped_at = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=LEASE)
    _wait(lambda: _rows(db, "SELECT 1 FROM workers WHERE id = :w AND heartbeat_at > :t", w=victim_id, t=dropped_at),
          LEASE + 30, "the cut worker living a lease past the drop", interval=0.25)

    duplicated = _rows(db, "SELECT job_id, step_id, count(*) FROM step_executions WHERE job_id = ANY(:ids) "
                           "AND status = 'completed' GROUP BY job_id, step_id HAVING count(*) > 1", ids=ids)
    assert not duplicated, duplicated
    # what the cut worker started before the cut never completes (once back it may claim rescued jobs anew:
    # those are new executions, started after the cut)
    stale_steps = _rows(db, "SELECT job_id, step_name, status FROM step_executions WHERE worker_id = :w "
                            "AND started_at < :t AND completed_at > :t AND job_id = ANY(:ids) "
                            "AND status = 'completed'", w=victim_id, t=cut_at, ids=held)
    assert not stale_steps, (f"cut at {cut_at}, back at {restored_at}: ", _rows(
        db, "SELECT id, job_id, step_name, status, worker_id, started_at, completed_at, error_class "
            "FROM step_executions WHERE job_id = ANY(:ids) ORDER BY job_id, id", ids=held))
    progress = _rows(db, "SELECT id, status, progress_percent FROM workflow_jobs WHERE id = ANY(:ids)", ids=ids)
    assert all(float(p) == 100 for _, _, p in progress), progress
    for job_id in ids:
        events = _rows(db, "SELECT id, event_type, data FROM job_events WHERE job_id = :j ORDER BY id", j=job_id)
        final = max(i for i, (_, kind, data) in enumerate(events)
                    if kind == "status" and _status_of(data) == "completed")
        assert final == len(events) - 1, f"events after job {job_id}'s final event: {events[final + 1:]}"


def _status_of(data: Any) -> str | None:
    import json

    if isinstance(data, str):
        data = json.loads(data)
    return data.get("status") if isinstance(data, dict) else None


def test_the_fleet_is_removed_when_its_user_fails(tmp_path: Path) -> None:
    """A failure inside the fleet still removes its processes, namespaces, bridge, S3 server and cluster."""
    seen: dict[str, Any] = {}
    with pytest.raises(RuntimeError, match="the caller failed"), \
            netns_fleet(tmp_path, worker_hosts=1, api_hosts=1, workflows=[BURST]) as small:
        small.start_workers()
        seen.update(tag=small.net.tag, net=small.net, cluster=small.cluster.name,
                    pids=[p.pid for p in [*small.workers.values(), *small.apis.values()]])
        raise RuntimeError("the caller failed")
    assert not [ns for ns in os.popen("ip netns list").read().split() if ns.startswith(seen["tag"])]
    assert not seen["net"].leftovers()
    assert seen["cluster"] not in os.popen("pg_lsclusters --no-header").read()
    for pid in seen["pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
