"""The upload pipe between the event loop and a storage thread: a failing consumer ends the upload."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from mediamill.api.streaming import Pipe, PipeAborted, run_with_pipe
from mediamill.errors import StorageFull


def _run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """``asyncio.run(main())`` on a thread of its own: in a whole test session the main thread may already run
    an event loop (Playwright's), where ``asyncio.run`` refuses to start."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(25)
    assert not thread.is_alive(), "the event loop did not finish"
    if errors:
        raise errors[0]


@pytest.mark.timeout(30)
def test_a_failing_consumer_ends_a_producer_that_swallowed_its_cancellation() -> None:
    """Python 3.11's ``wait_for`` can lose a cancellation that races a body chunk; the producer
    then keeps sending, and must be refused instead of waiting forever for room in the pipe."""
    sent = []

    def consume(pipe: Pipe) -> None:
        pipe.read(1)  # takes one chunk, then the disk is full
        raise StorageFull("full")

    async def produce(pipe: Pipe) -> None:
        for i in range(1000):
            with contextlib.suppress(asyncio.CancelledError):  # what the lost cancellation looks like
                await pipe.send(b"x" * 1024)
                sent.append(i)
            await asyncio.sleep(0)

    async def main() -> None:
        with pytest.raises(StorageFull):
            await asyncio.wait_for(run_with_pipe(consume, produce), 10)

    _run(main)
    assert len(sent) < 100  # stopped at the pipe's depth, not after the whole body


def test_an_aborted_pipe_refuses_every_later_send() -> None:
    async def main() -> None:
        pipe = Pipe(asyncio.get_running_loop(), depth=1)
        await pipe.send(b"a")
        pipe.abort()
        with pytest.raises(PipeAborted):
            await pipe.send(b"b")
        with pytest.raises(PipeAborted):
            pipe.read()

    _run(main)
