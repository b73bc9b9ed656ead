"""Chunked parallel encode: the single-worker encode against the chunked one on the same cores.

    PYTHONPATH=src .venv/bin/python benchmarks/parallel_encode.py                  # 60 s 1080p, 6 segments
    PYTHONPATH=src .venv/bin/python benchmarks/parallel_encode.py --seconds 20 --segments 4 --json

A generated input (``testsrc2`` 1920×1080, 25 fps, a keyframe every 2 s, AAC; cached in ``--media-dir``)
goes through one workflow with the WF-VIDEO-TRANSCODE ladder (1080p/720p/480p, libx264 veryfast, fused)
twice, through workers in this process on this machine's cores:

- **single**: one worker with one slot; one ffmpeg encodes the whole ladder (threads on every core).
- **chunked**: the same steps with ``parallel: N``; ``--workers`` workers of ``--slots`` slots each claim
  the segments (default 2 × 1: as many concurrent encodes as this machine has cores).

Figures (from the database's own timestamps): the single encode time (the unit's step execution), the
chunked job's wall time (claimed → finished), the segment phase (first segment started → last one
finished), and the **split + join overhead** = chunked wall − segment phase (probe and plan, park, claim
latency of the first segments, wake-up of the parked job, the joins and storing the renditions), as a
share of the single encode. Target: ≤ 5 %. Frame counts of every rendition are checked equal.

The model for N hosts like this one: wall(N) ≈ overhead + ceil(S / (N·k)) · segment time at k concurrent
encodes per host (printed for 1–8 hosts; valid while the database and storage are not the bottleneck).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import sqlalchemy as sa

from mediamill.config import Settings
from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.engine.worker import Worker
from mediamill.media.tools import ffmpeg
from mediamill.runtime import Runtime
from mediamill.store import workflow_repo
from mediamill.store.tables import job_events, step_executions, step_segments
from mediamill.workflows.loader import validate_document

TARGET_OVERHEAD = 0.05
LADDER = ("1080p", "720p", "480p")


def make_input(path: Path, seconds: int) -> Path:
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([ffmpeg().path, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=25:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", "-movflags", "+faststart", str(path)],
                   check=True)
    return path


def workflow(code: str, parallel: int | None) -> dict[str, Any]:
    steps = [{"name": f"Transcode {r}", "action": "transcode_video", "params": {"resolution": r, "preset": "veryfast"},
              **({"parallel": parallel} if parallel else {})} for r in LADDER]
    return {"code": code, "name": code, "type": "video", "queue": "bench", "input_types": ["video/mp4"],
            "timeout_minutes": 120, "steps": steps}


def run_job(rt: Runtime, src: Path, code: str, workers: int, slots: int) -> dict[str, Any]:
    started = [Worker(rt, pools={"bench": slots}, name=f"bench{n}").start() for n in range(workers)]
    try:
        job = submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, src), workflow_code=code))
        deadline = time.monotonic() + 3600
        while (d := ops.get_job(rt.engine, job.id))["status"] not in ("completed", "failed", "partial", "cancelled"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job.id} did not finish")
            time.sleep(0.2)
    finally:
        for w in started:
            w.stop(grace=5)
    if d["status"] != "completed":
        raise RuntimeError(f"{code}: {d['status']}: {d['error_message']}")
    return d


def _t(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00")
                                                                            ).replace(tzinfo=None)


def figures(rt: Runtime, job: dict[str, Any]) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        execs = conn.execute(sa.select(step_executions.c.started_at, step_executions.c.completed_at)
                             .where(step_executions.c.job_id == job["id"], step_executions.c.status == "completed")
                             ).all()
        segs = conn.execute(sa.select(step_segments.c.kind, step_segments.c.started_at, step_segments.c.completed_at,
                                      step_segments.c.worker_id, step_segments.c.attempts)
                            .where(step_segments.c.job_id == job["id"])).all()
        events = conn.execute(sa.select(job_events.c.event_type, job_events.c.created_at, job_events.c.data)
                              .where(job_events.c.job_id == job["id"]).order_by(job_events.c.id)).all()
    claimed = min(_t(e.created_at) for e in events if e.event_type == "status" and e.data.get("status") == "processing")
    finished = max(_t(e.created_at) for e in events if e.event_type == "status" and e.data.get("final"))
    out: dict[str, Any] = {"wall_s": (finished - claimed).total_seconds(),
                           "steps_s": (max(_t(e.completed_at) for e in execs)
                                       - min(_t(e.started_at) for e in execs)).total_seconds()}
    if segs:
        first, last = min(_t(s.started_at) for s in segs), max(_t(s.completed_at) for s in segs)
        videos = [(_t(s.completed_at) - _t(s.started_at)).total_seconds() for s in segs if s.kind == "video"]
        out.update(segments=len(videos), segment_phase_s=(last - first).total_seconds(),
                   segment_mean_s=sum(videos) / len(videos), workers_used=len({s.worker_id for s in segs}),
                   attempts=sum(s.attempts for s in segs))
        out["overhead_s"] = out["wall_s"] - out["segment_phase_s"]
        parked = min(_t(e.created_at) for e in events if e.event_type == "wait")
        resumed = max(_t(e.created_at) for e in events
                      if e.event_type == "status" and e.data.get("status") == "processing")
        out["breakdown_s"] = {"split": (parked - claimed).total_seconds(),
                              "to_first_segment": (first - parked).total_seconds(),
                              "wake": (resumed - last).total_seconds(),
                              "join": (finished - resumed).total_seconds()}
    return out


def frame_counts(rt: Runtime, job: dict[str, Any]) -> dict[str, int]:
    counts = {}
    for o in job["outputs"]:
        path = rt.storage.local_path(o["storage_key"])
        assert path is not None
        with av.open(str(path)) as c:
            counts[o["name"]] = sum(1 for p in c.demux(c.streams.video[0]) if p.pts is not None)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--segments", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--slots", type=int, default=1)
    ap.add_argument("--database-url", default=os.environ.get("MEDIAMILL_DATABASE_URL", ""),
                    help="PostgreSQL URL of an empty database (default: SQLite in a temporary folder)")
    ap.add_argument("--media-dir", type=Path, default=Path(tempfile.gettempdir()) / "mediamill-bench-media")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    src = make_input(args.media_dir / f"bench-1080p-{args.seconds}s.mp4", args.seconds)
    with tempfile.TemporaryDirectory(prefix="mm-parallel-") as tmp:
        rt = Runtime(Settings(data_dir=Path(tmp), database_url=args.database_url, lease_seconds=10))
        rt.migrate()
        with rt.engine.begin() as conn:
            for code, par in (("WF-BENCH-ONE", None), ("WF-BENCH-SPLIT", args.segments)):
                workflow_repo.save_version(conn, validate_document(workflow(code, par)), author="bench")
        single = run_job(rt, src, "WF-BENCH-ONE", 1, 1)
        chunked = run_job(rt, src, "WF-BENCH-SPLIT", args.workers, args.slots)
        report = {"input": f"{args.seconds} s 1920x1080 25 fps", "cores": os.cpu_count(),
                  "single": figures(rt, single), "chunked": figures(rt, chunked),
                  "frames_single": frame_counts(rt, single), "frames_chunked": frame_counts(rt, chunked)}
        rt.close()
    encode = report["single"]["steps_s"]
    c = report["chunked"]
    report["overhead_share"] = c["overhead_s"] / encode
    per_host = args.workers * args.slots
    report["model"] = {n: round(c["overhead_s"] + math.ceil(c["segments"] / (n * per_host)) * c["segment_mean_s"], 1)
                       for n in (1, 2, 3, 4, 6, 8)}
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return
    print(f"input {report['input']}, ladder {'/'.join(LADDER)} veryfast, {report['cores']} cores")
    print(f"single  : encode {encode:7.1f} s   job {report['single']['wall_s']:7.1f} s")
    print(f"chunked : job {c['wall_s']:7.1f} s = segments {c['segment_phase_s']:.1f} s "
          f"({c['segments']} segments + audio, {c['workers_used']} workers, {c['attempts']} attempts, "
          f"mean segment {c['segment_mean_s']:.1f} s)"
          f" + split/join overhead {c['overhead_s']:.2f} s")
    print("          overhead = " + ", ".join(f"{k} {v:.2f} s" for k, v in c["breakdown_s"].items()))
    ok = "ok" if report["overhead_share"] <= TARGET_OVERHEAD else "MISSED"
    print(f"overhead: {100 * report['overhead_share']:.1f} % of the single encode (target ≤ "
          f"{100 * TARGET_OVERHEAD:.0f} %: {ok}); speed-up {encode / c['wall_s']:.2f}×")
    same = report["frames_single"] == report["frames_chunked"]
    verdict = "same as single" if same else f"DIFFERENT from single: {report['frames_single']}"
    print(f"frames  : {report['frames_chunked']} ({verdict})")
    print("model   : hosts like this one → chunked wall time (s): "
          + ", ".join(f"{n}: {t}" for n, t in report["model"].items()))


if __name__ == "__main__":
    main()
