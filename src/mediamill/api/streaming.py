"""Streaming request bodies into storage without holding them in memory.

``Pipe`` joins the event loop (which receives the body) to a thread running the blocking
``Storage.put`` (which reads a file-like object): at most ``depth`` chunks are in flight, so
memory stays flat whatever the upload size. ``stream_multipart`` parses a multipart body
incrementally (python-multipart's push parser) and sends the ``file`` part down a pipe while
collecting the small form fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from python_multipart.multipart import MultipartParser, parse_options_header

from mediamill.errors import InvalidInput, SourceTooLarge

T = TypeVar("T")
R = TypeVar("R")
MAX_FIELD_BYTES = 64 * 1024
_EOF = object()


class PipeAborted(Exception):
    """The producer gave up (client went away, limit exceeded)."""


class Pipe(io.RawIOBase):
    """A bounded byte pipe: the event loop writes, a worker thread reads.

    The writer never needs a thread of its own: when the pipe is full it awaits an event the
    reader sets (through the loop) after taking a chunk, so a burst of uploads cannot starve
    a thread pool into a deadlock.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = 16) -> None:
        self._loop = loop
        self._depth = depth
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._space = asyncio.Event()
        self._buf = b""
        self._done = False
        self._aborted: BaseException | None = None

    # -- reader side (worker thread) -------------------------------------------------------
    def readable(self) -> bool:
        return True

    def _next_item(self) -> Any:
        with self._cond:
            while not self._items:
                self._cond.wait()
            item = self._items.popleft()
        self._loop.call_soon_threadsafe(self._space.set)
        return item

    def read(self, n: int | None = -1) -> bytes:
        while not self._buf and not self._done:
            item = self._next_item()
            if item is _EOF:
                self._done = True
            elif isinstance(item, BaseException):
                self._done = True
                raise item
            else:
                self._buf = item
        if n is None or n < 0 or n >= len(self._buf):
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    # -- writer side (event loop) ----------------------------------------------------------
    def _offer(self, item: Any, force: bool = False) -> bool:
        with self._cond:
            if not force and len(self._items) >= self._depth:
                return False
            self._items.append(item)
            self._cond.notify()
            return True

    async def send(self, item: Any) -> None:
        while True:
            if self._aborted is not None:
                raise self._aborted
            self._space.clear()
            if self._offer(item):
                return
            await self._space.wait()

    async def end(self) -> None:
        await self.send(_EOF)

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop what is queued, wake the reader with an error, and refuse every later ``send``.

        Call it on the event loop: a writer waiting for room wakes up and raises ``PipeAborted``.
        """
        reason = exc or PipeAborted("upload aborted")
        self._aborted = PipeAborted(str(reason))
        with self._cond:
            self._items.clear()
        self._offer(reason, force=True)
        self._space.set()


#: threads that write upload bytes (one per upload in flight; ``api.limits.UploadSlots`` keeps the
#: number of uploads at or below it, so an upload never queues for a thread)
STREAM_THREADS = 64
_executor = ThreadPoolExecutor(max_workers=STREAM_THREADS, thread_name_prefix="mm-stream")


async def run_with_pipe(consume: Callable[[Pipe], T], produce: Callable[[Pipe], Awaitable[R]]) -> tuple[T, R]:
    """Run ``consume(pipe)`` in a thread while ``produce(pipe)`` feeds it; abort both on error.

    A consumer that fails first (a full disk, a missing bucket) stops the producer at once —
    otherwise it would wait forever for room in the pipe — and its error is the one raised.
    """
    loop = asyncio.get_running_loop()
    pipe = Pipe(loop)
    future = loop.run_in_executor(_executor, consume, pipe)
    producer = asyncio.ensure_future(produce(pipe))
    try:
        await asyncio.wait((producer, future), return_when=asyncio.FIRST_COMPLETED)
        if not producer.done() and future.done() and future.exception() is not None:
            # the abort comes first: Python 3.11's wait_for (under the body's idle timeout) can swallow a
            # cancellation that races a chunk arriving, and the producer must not then wait for room forever
            pipe.abort(PipeAborted("the consumer failed"))
            producer.cancel()
            with contextlib.suppress(BaseException):
                await producer
            raise future.exception()  # type: ignore[misc]
        produced = await producer
    except BaseException as exc:
        if not producer.done():
            producer.cancel()
        pipe.abort(PipeAborted(str(exc)))
        with contextlib.suppress(Exception):
            await future  # the consumer fails because of the abort; the producer's error wins
        raise
    return await future, produced


@dataclass
class MultipartResult:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    file_bytes: int = 0
    saw_file: bool = False


class _PartState:
    def __init__(self) -> None:
        self.headers: dict[str, bytes] = {}
        self.header_field = b""
        self.header_value = b""
        self.name: str | None = None
        self.is_file = False
        self.buf = bytearray()


class _Collector:
    """python-multipart callbacks: file bytes to ``pending``, fields to ``result.fields``."""

    def __init__(self, file_field: str, max_file_bytes: int) -> None:
        self.file_field = file_field
        self.max_file_bytes = max_file_bytes
        self.result = MultipartResult()
        self.part = _PartState()
        self.pending: list[bytes] = []
        self.errors: list[Exception] = []

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished}

    def on_part_begin(self) -> None:
        self.part = _PartState()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.part.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.part.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers[self.part.header_field.decode("latin-1").lower()] = self.part.header_value
        self.part.header_field, self.part.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _disp, opts = parse_options_header(self.part.headers.get("content-disposition", b""))
        self.part.name = (opts.get(b"name") or b"").decode("utf-8", "replace")
        if self.part.name != self.file_field:
            return
        if self.result.saw_file:
            self.errors.append(InvalidInput("send one file per job"))
        self.part.is_file = True
        self.result.saw_file = True
        raw = opts.get(b"filename")
        self.result.filename = raw.decode("utf-8", "replace") if raw is not None else None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.part.is_file:
            self.result.file_bytes += len(chunk)
            if self.result.file_bytes > self.max_file_bytes:
                self.errors.append(SourceTooLarge(f"the file is larger than {self.max_file_bytes} bytes"))
            self.pending.append(bytes(chunk))
            return
        self.part.buf += chunk
        if len(self.part.buf) > MAX_FIELD_BYTES:
            self.errors.append(InvalidInput(f"form field {self.part.name!r} is larger than {MAX_FIELD_BYTES} bytes"))

    def on_part_end(self) -> None:
        if not self.part.is_file and self.part.name:
            self.result.fields[self.part.name] = self.part.buf.decode("utf-8", "replace")


async def stream_multipart(body: AsyncIterator[bytes], boundary: bytes, pipe: Pipe, *,
                           max_file_bytes: int, file_field: str = "file") -> MultipartResult:
    """Parse ``body``; the ``file_field`` part goes to ``pipe`` as it arrives, other parts are
    collected as text fields (64 KiB each at most)."""
    col = _Collector(file_field, max_file_bytes)
    parser = MultipartParser(boundary, callbacks=col.callbacks())  # type: ignore[arg-type]
    async for chunk in body:
        try:
            parser.write(chunk)
        except Exception as exc:  # python-multipart's MultipartParseError and friends
            raise InvalidInput(f"malformed multipart body: {exc}") from None
        if col.errors:
            raise col.errors[0]
        if col.pending:
            await pipe.send(b"".join(col.pending))
            col.pending.clear()
    parser.finalize()
    await pipe.end()
    return col.result


def boundary_of(content_type: str) -> bytes:
    """The multipart boundary of a Content-Type header (InvalidInput when absent)."""
    ctype, opts = parse_options_header(content_type)
    boundary = opts.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InvalidInput("expected multipart/form-data with a boundary")
    return boundary
