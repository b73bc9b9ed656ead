"""Errors come back as one exception tree built from the problem document: 404, 409, 422 and 429
against a real ``mediamill serve``; the retry policy waits out ``Retry-After``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mediamill.client import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    Client,
    ConflictError,
    MediamillClientError,
    NotFoundError,
    RateLimitError,
    RetryPolicy,
    UnprocessableEntityError,
)
from tests.client.conftest import Server
from tests.helpers import free_port

BAD_WORKFLOW = """code: WF-BROKEN
name: broken
type: image
steps:
  - name: x
    type: custom
    action: no_such_action
"""


def test_404_not_found(sqlite_server: Server) -> None:
    with Client(sqlite_server.url, sqlite_server.admin_key) as mm, pytest.raises(NotFoundError) as info:
        mm.job(987654)
    err = info.value
    assert isinstance(err, APIError) and isinstance(err, MediamillClientError)
    assert err.status == 404 and err.title == "Not found"
    assert err.detail == "no job 987654" and err.error_class == "not_found"
    assert err.type == "https://mediamill.dev/problems/not_found"
    assert str(err) == "no job 987654"


def test_409_conflict(sqlite_server: Server, small_jpeg: Path) -> None:
    with Client(sqlite_server.url, sqlite_server.admin_key) as mm:
        job = mm.wait(mm.submit(small_jpeg, workflow="WF-IMAGE-PROCESS").id, timeout=120)
        with pytest.raises(ConflictError) as info:
            mm.cancel(job.id)
        assert info.value.status == 409 and info.value.detail == f"job {job.id} is already completed"
        first = mm.submit(small_jpeg, workflow="WF-IMAGE-PROCESS", idempotency_key="k-409", metadata={"n": 1})
        again = mm.submit(small_jpeg, workflow="WF-IMAGE-PROCESS", idempotency_key="k-409", metadata={"n": 1})
        assert (again.id, again.replayed, first.replayed) == (first.id, True, False)  # a retry, uploaded anew
        with pytest.raises(ConflictError):  # the same key with another request
            mm.submit(small_jpeg, workflow="WF-IMAGE-PROCESS", idempotency_key="k-409", metadata={"n": 2})


def test_422_unprocessable(sqlite_server: Server) -> None:
    with Client(sqlite_server.url, sqlite_server.admin_key) as mm:
        with pytest.raises(UnprocessableEntityError) as info:
            mm.workflows.apply(BAD_WORKFLOW)
        err = info.value
        assert err.status == 422 and err.error_class == "invalid_workflow"
        assert any("no_such_action" in p for p in err.errors), err.problem
        with pytest.raises(UnprocessableEntityError) as info:
            mm.set_priority(1, 500)  # outside 0-100: the request itself is refused
        assert info.value.errors and info.value.errors[0]["loc"] == "body.priority"


def test_429_rate_limited_then_retry_policy_honours_retry_after(sqlite_server: Server) -> None:
    with Client(sqlite_server.url, sqlite_server.admin_key) as admin:
        key = admin.create_key("submitter", name="rate-limit test").key
    with Client(sqlite_server.url, key) as mm:
        with pytest.raises(RateLimitError) as info:
            for _ in range(30):  # the burst is 10; each refused URL still spends a token
                with pytest.raises(UnprocessableEntityError):
                    mm.submit_url("ftp://example.invalid/clip.mp4")
        err = info.value
        assert err.status == 429 and err.title == "Too many requests"
        assert err.retry_after is not None and err.retry_after >= 1
    with Client(sqlite_server.url, key, retry=RetryPolicy(max_retries=5)) as patient:
        started = time.monotonic()
        with pytest.raises(UnprocessableEntityError):  # 429 waited out, then the real answer
            patient.submit_url("ftp://example.invalid/clip.mp4")
        assert time.monotonic() - started >= err.retry_after * 0.9


def test_401_and_unreachable_server(sqlite_server: Server) -> None:
    with Client(sqlite_server.url, "mm_wrong") as mm, pytest.raises(AuthenticationError) as info:
        mm.me()
    assert info.value.status == 401
    with Client(f"http://127.0.0.1:{free_port()}", "k") as mm, pytest.raises(APIConnectionError):
        mm.job(1)


def test_wait_times_out_on_a_job_that_cannot_start(sqlite_server: Server, small_jpeg: Path) -> None:
    """A job in a paused queue sends no events: wait() still returns at its deadline."""
    from mediamill.client import AsyncClient, WaitTimeout

    with Client(sqlite_server.url, sqlite_server.admin_key) as mm:
        mm.pause_queue("image_processing")
        try:
            job = mm.submit(small_jpeg, workflow="WF-IMAGE-PROCESS")
            started = time.monotonic()
            with pytest.raises(WaitTimeout) as info:
                mm.wait(job.id, timeout=2)
            assert 1.9 <= time.monotonic() - started < 8
            assert info.value.job.status == "queued"

            async def async_wait() -> None:
                async with AsyncClient(sqlite_server.url, sqlite_server.admin_key) as amm:
                    await amm.wait(job.id, timeout=1)

            import asyncio

            with pytest.raises(WaitTimeout):
                asyncio.run(async_wait())
        finally:
            mm.resume_queue("image_processing")
        assert mm.wait(job.id, timeout=120).status == "completed"
