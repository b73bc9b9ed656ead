"""A long 1080p encode split over the namespace fleet (tests/fleet/netns.py): three worker hosts that share
nothing but PostgreSQL and S3 run the six segments of a 60 s 1080p input, one host is SIGKILLed while it
encodes, and the joined renditions are the single-worker run's: same size, same frame count and duration
(±1 frame), a keyframe at every seam, monotonic timestamps, evenly spaced frames, the same audio length.

The input is full-size because the split is the feature under test (keyframe search and segment planning
over a real 1080p GOP structure, 40 MB through S3 to every host); the renditions are small (360p and 180p,
``ultrafast``) so the encode itself stays cheap.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mediamill.client import Client
from tests.chunked_media import RenditionFacts, make_gop_clip, rendition_facts
from tests.fleet.netns import Fleet, netns_fleet, unavailable_reason
from tests.helpers import wait_until

REASON = unavailable_reason()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.slow]

LEASE = 5
SECONDS, SEGMENTS = 60, 6
LADDER = [{"name": "v360", "action": "transcode_video", "params": {"resolution": "360p", "preset": "ultrafast"}},
          {"name": "v180", "action": "transcode_video", "params": {"resolution": "180p", "preset": "ultrafast"}}]


def _workflow(code: str, parallel: int | None) -> dict[str, Any]:
    steps = [{**s, "parallel": parallel} if parallel else s for s in LADDER]
    return {"code": code, "name": code.lower(), "type": "video", "queue": "encode",
            "input_types": ["video/mp4"], "steps": steps}


ONE, SPLIT = _workflow("WF-ENC-ONE", None), _workflow("WF-ENC-SPLIT", SEGMENTS)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("fleet-encode")
    with netns_fleet(work, worker_hosts=3, api_hosts=1, workflows=[ONE, SPLIT],
                     settings={"lease_seconds": LEASE, "poll_interval": 0.2,
                               "db_idle_in_transaction_timeout_seconds": 4}) as built:
        built.start_workers(pool="encode=2")
        yield built


def _segments(db: sa.Engine, job_id: int) -> list[dict[str, Any]]:
    with db.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(
            "SELECT kind, seq, status, attempts, worker_id, spec FROM step_segments WHERE job_id = :id "
            "ORDER BY kind DESC, seq"), {"id": job_id}).mappings()]


def _rescued(db: sa.Engine, job_id: int) -> list[int]:
    with db.connect() as conn:
        rows = conn.execute(sa.text("SELECT data FROM job_events WHERE job_id = :id AND event_type = 'rescue' "
                                    "ORDER BY id"), {"id": job_id}).scalars().all()
    return [int(r["segment"]) for r in rows]


def _renditions(mm: Client, job_id: int, folder: Path) -> dict[str, RenditionFacts]:
    folder.mkdir()
    found = {}
    for out in mm.outputs(job_id):
        path = mm.download(job_id, out.name, folder)
        assert path is not None
        found[out.name] = rendition_facts(path)
    return found


def test_a_60s_1080p_encode_split_in_6_over_the_fleet(fleet: Fleet, tmp_path: Path) -> None:
    clip = make_gop_clip(tmp_path / "source.mp4", seconds=SECONDS, size="1920x1080", preset="veryfast")
    upload = fleet.upload(clip.read_bytes())
    db = sa.create_engine(fleet.cluster.local_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with Client(fleet.api_urls[0], fleet.api_key, timeout=120) as mm:
            single = mm.wait(fleet.submit(upload, ONE["code"], 1)[0], timeout=900)
            assert single.status == "completed", single.to_dict()

            split_id = fleet.submit(upload, SPLIT["code"], 1)[0]
            # SIGKILL the worker (only: its step child is orphaned, as in a real crash) of a running video segment
            victim = wait_until(lambda: next((r for r in _segments(db, split_id)
                                              if r["kind"] == "video" and r["status"] == "processing"), None),
                                timeout=600, interval=0.05, message="a video segment running on a host")
            host = next(h for h in fleet.worker_hosts if fleet.worker_ids[h.name] == victim["worker_id"])
            os.kill(fleet.workers[host.name].pid, signal.SIGKILL)
            split = mm.wait(split_id, timeout=900)
            assert split.status == "completed", split.to_dict()

            rows = _segments(db, split_id)
            video = [r for r in rows if r["kind"] == "video"]
            assert [r["seq"] for r in video] == list(range(SEGMENTS))
            assert sum(r["spec"]["frames"] for r in video) == SECONDS * 25
            # the kill cost the segments the host held (at most its two slots), nothing else ran twice
            rescued = set(_rescued(db, split_id))
            assert victim["seq"] in rescued and len(rescued) <= 2, rescued
            for r in rows:
                again = r["kind"] == "video" and r["seq"] in rescued
                assert (r["status"], r["attempts"]) == ("completed", 2 if again else 1), r
                if again:
                    assert r["worker_id"] != victim["worker_id"]
            assert len({r["worker_id"] for r in rows}) >= 2  # the segments ran over the fleet

            seams = sorted(round(float(r["spec"]["start"]), 3) for r in video)
            assert seams[0] == 0.0 and len(set(seams)) == SEGMENTS
            one, chunked = (_renditions(mm, single.id, tmp_path / "one"),
                            _renditions(mm, split.id, tmp_path / "split"))
    finally:
        db.dispose()
    assert sorted(one) == sorted(chunked) == ["video_180p.mp4", "video_360p.mp4"]
    for name, x in one.items():
        y = chunked[name]
        assert (y.width, y.height) == (x.width, x.height), name
        assert y.frames == SECONDS * 25 and abs(y.frames - x.frames) <= 1, (name, x.frames, y.frames)
        assert abs(y.duration - x.duration) <= x.frame_step, (name, x.duration, y.duration)
        assert y.pts_monotonic and y.dts_monotonic and y.even_spacing, name
        assert set(seams) <= {round(k, 3) for k in y.keyframes}, (name, seams, y.keyframes[:20])
        assert y.audio_duration is not None and x.audio_duration is not None
        assert abs(y.audio_duration - x.audio_duration) <= 0.05, name
