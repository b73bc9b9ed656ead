"""The pieces of the SDK that need no server: the SSE decoder, the retry policy, problem parsing."""

from __future__ import annotations

import httpx

from mediamill.client import RetryPolicy
from mediamill.client._core import SSEDecoder, parse_event
from mediamill.client.errors import (
    APIError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    error_from_response,
    retry_after_seconds,
)
from mediamill.client.models import ProgressEvent, StatusEvent


def _feed(decoder: SSEDecoder, text: str) -> list[tuple[str, str, str | None]]:
    return [f for line in text.split("\n") if (f := decoder.feed(line))]


def test_sse_decoder_dispatches_complete_events_only() -> None:
    d = SSEDecoder()
    frames = _feed(d, ': stream open\n\nid: 7\nevent: progress\nretry: 2000\n'
                      'data: {"job_id": 1, "type": "progress", "step": "A", "data": {"percent": 40.0}}\n\n'
                      'id: 8\nevent: status\ndata: {"job_id": 1, "type": "sta')  # cut mid-frame
    assert len(frames) == 1 and d.retry_ms == 2000 and d.last_id == "7"
    event = parse_event(frames[0])
    assert isinstance(event, ProgressEvent) and event.id == 7 and event.percent == 40.0 and event.step == "A"


def test_sse_multiline_data_and_typed_status() -> None:
    d = SSEDecoder()
    frames = _feed(d, 'id: 9\nevent: status\ndata: {"job_id": 1, "type": "status",\n'
                      'data:  "data": {"status": "completed"}}\n\n')
    event = parse_event(frames[0])
    assert isinstance(event, StatusEvent) and event.final and event.status == "completed"


def test_retry_policy_honours_retry_after_within_max_wait() -> None:
    policy = RetryPolicy(max_retries=2, max_wait=30)
    limited = RateLimitError(429, retry_after=7)
    assert policy.delay(1, limited) == 7
    assert policy.delay(3, limited) is None  # out of retries
    assert policy.delay(1, RateLimitError(429, retry_after=60)) is None  # longer than max_wait: give up
    assert policy.delay(1, APIError(400)) is None  # a refusal that retrying cannot fix
    assert 0 < policy.delay(1, ServiceUnavailableError(503)) <= 0.5  # type: ignore[operator]
    assert RetryPolicy(respect_retry_after=False).delay(1, limited) <= 0.5  # type: ignore[operator]


def test_problem_documents_become_the_matching_exception() -> None:
    response = httpx.Response(429, headers={"Retry-After": "3", "Content-Type": "application/problem+json",
                                            "X-Request-ID": "r1"},
                              json={"type": "https://mediamill.dev/problems/rate_limited", "title": "Too many requests",
                                    "status": 429, "detail": "slow down", "error_class": "rate_limited"})
    err = error_from_response(response)
    assert isinstance(err, RateLimitError) and err.retry_after == 3 and err.detail == "slow down"
    assert err.request_id == "r1" and err.error_class == "rate_limited"
    plain = error_from_response(httpx.Response(502, text="bad gateway"))
    assert isinstance(plain, ServerError) and plain.detail == "bad gateway"
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None


def test_async_client_has_every_method_of_the_sync_client() -> None:
    import inspect

    from mediamill.client import AsyncClient, Client, aio, sync

    pairs = [(Client, AsyncClient)] + [(getattr(sync, n), getattr(aio, f"Async{n}"))
                                       for n in ("Workflows", "DeadLetters", "Routes", "Rollouts", "Shadows")]
    for sync_cls, async_cls in pairs:
        public = {n for n, f in vars(sync_cls).items() if callable(f) and not n.startswith("_")} - {"close"}
        for name in sorted(public):
            fn = getattr(async_cls, name, None)
            assert fn is not None, f"{async_cls.__name__}.{name} is missing"
            assert inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn), f"{async_cls.__name__}.{name}"


def test_the_sdk_imports_nothing_of_the_server() -> None:
    import subprocess
    import sys

    code = ("import sys, mediamill.client; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'fastapi', 'av', 'pyvips', "
            "'boto3', 'alembic') or m.startswith(('mediamill.engine', 'mediamill.store', 'mediamill.api'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_upload_backoff_waits_out_retry_after() -> None:
    from mediamill.client._core import upload_backoff

    assert upload_backoff(1, RateLimitError(429, retry_after=3)) == 3
    assert upload_backoff(1, RateLimitError(429, retry_after=600)) == 60
    assert upload_backoff(1, APIError(409)) == 0.2 and upload_backoff(9, APIError(409)) == 5
