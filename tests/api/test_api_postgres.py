"""The API on PostgreSQL: submit by upload, idempotency, SSE woken by LISTEN/NOTIFY, tenant isolation."""

from __future__ import annotations

import httpx
from httpx_sse import connect_sse

from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime

from .support import Keys, LiveServer

TUS = {"Tus-Resumable": "1.0.0"}


def test_upload_submit_follow_on_postgres(pg_rt: Runtime) -> None:
    keys = Keys(pg_rt)
    with LiveServer(pg_rt) as live, httpx.Client(base_url=live.url, timeout=30) as http:
        res = http.post("/v1/uploads", headers=Keys.h(keys.submitter, **TUS, **{
            "Upload-Length": "12", "Content-Type": "application/offset+octet-stream"}), content=b"hello world\n")
        assert res.status_code == 201 and res.headers["upload-offset"] == "12"
        upload_id = res.headers["location"].rsplit("/", 1)[1]
        body = {"upload_id": upload_id, "workflow": "WF-TEST-SLEEP"}
        first = http.post("/v1/jobs", json=body, headers=Keys.h(keys.submitter, **{"Idempotency-Key": "k1"}))
        again = http.post("/v1/jobs", json=body, headers=Keys.h(keys.submitter, **{"Idempotency-Key": "k1"}))
        assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
        job_id = first.json()["id"]
        assert http.get(f"/v1/jobs/{job_id}", headers=Keys.h(keys.other)).status_code == 404
        worker = Worker(pg_rt, pools={"*": 2}).start()
        try:
            with connect_sse(http, "GET", f"/v1/jobs/{job_id}/events", headers=Keys.h(keys.viewer)) as source:
                events = list(source.iter_sse())
        finally:
            worker.stop(grace=5)
        assert events[-1].event == "status" and events[-1].json()["data"]["status"] == "completed"
        assert any(e.event == "progress" for e in events)
        assert http.get("/v1/analytics/workflows", headers=Keys.h(keys.viewer)).status_code == 200
