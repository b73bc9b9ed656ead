"""A lean HTTP/1.1 load generator, run as a process of its own so that its CPU is counted apart from the
server's (and does not sit in the benchmark's interpreter, its GIL or its event loop).

    python benchmarks/loadgen.py < plan.json > results.json

The plan (JSON on stdin): ``{"url": "http://127.0.0.1:PORT", "path": "/v1/jobs", "body": "<text>",
"keys": ["mm_…", …], "total": N}`` — ``len(keys)`` clients, one keep-alive connection and one bearer key
each, ``total`` POSTs shared out between them, each client sending its next request when the previous
answer has arrived (a closed loop, as 32 API clients would). The results (JSON on stdout):
``{"results": [[status, ms, job_id], …], "elapsed_s": …, "cpu_s": …}`` — ``status`` 0 when the connection
failed, ``job_id`` the ``id`` of a 202 answer, ``cpu_s`` this process's user+system time during the load.

It speaks just enough HTTP (a Content-Length or chunked body, ``Connection: close``) to stay cheap: an
httpx client costs several times more CPU per request than the server's own parsing, which on a small
machine makes the generator the bottleneck it is trying to measure.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any
from urllib.parse import urlsplit


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep_alive) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked, keep_alive = 0, False, True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "connection" and value.strip().lower() == "close":
            keep_alive = False
    if not chunked:
        return status, await reader.readexactly(length), keep_alive
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, bytes(body), keep_alive
        body += chunk[:-2]


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _client(host: str, port: int, request: bytes, count: int, results: list[list[Any]],
                  conn: Connection | None) -> None:
    for _ in range(count):
        t0 = time.perf_counter()
        status, job = 0, None
        try:
            if conn is None:
                conn = await asyncio.open_connection(host, port)
            reader, writer = conn
            writer.write(request)
            status, body, keep_alive = await _read_response(reader)
            if status == 202:
                job = json.loads(body).get("id")
            if not keep_alive:
                writer.close()
                conn = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            conn = None  # connection refused/reset: a refusal the client sees; the next request reconnects
        results.append([status, (time.perf_counter() - t0) * 1000, job])
    if conn is not None:
        conn[1].close()


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    url = urlsplit(plan["url"])
    host, port = url.hostname or "127.0.0.1", url.port or 80
    body = plan["body"].encode()
    keys, total = plan["keys"], int(plan["total"])
    per_client = [total // len(keys) + (1 if i < total % len(keys) else 0) for i in range(len(keys))]
    requests = [(f"POST {plan.get('path', '/v1/jobs')} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                 f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n").encode() + body for key in keys]
    # every client connected first: opening connections is not part of the measured load
    conns = await asyncio.gather(*(asyncio.open_connection(host, port) for _ in keys))
    results: list[list[Any]] = []
    cpu0, t0 = _cpu(), time.perf_counter()
    await asyncio.gather(*(_client(host, port, request, count, results, conn)
                           for request, count, conn in zip(requests, per_client, conns, strict=True)))
    return {"results": results, "elapsed_s": time.perf_counter() - t0, "cpu_s": _cpu() - cpu0}


def main() -> None:
    plan = json.load(sys.stdin)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    json.dump(runner(run(plan)), sys.stdout)


if __name__ == "__main__":
    main()
