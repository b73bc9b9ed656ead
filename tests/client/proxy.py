"""A TCP proxy for tests that cuts connections on purpose: once, the first connection whose client
has sent more than N bytes (an upload cut halfway), and once, the first connection whose server has
sent at least K Server-Sent Events (an event stream dropped mid-job)."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class Cuts:
    upload_after_bytes: int | None = None
    stream_after_events: int | None = None
    done: list[str] = field(default_factory=list)  # what was cut, in order


class _Conn:
    def __init__(self, proxy: CuttingProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = socket.create_connection(("127.0.0.1", proxy.target_port))
        self.up = 0
        self.events = 0
        self.tail = b""
        self.closed = threading.Event()

    def run(self) -> None:
        threading.Thread(target=self._pump, args=(self.client, self.server, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.server, self.client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while not self.closed.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if self.proxy.should_cut(self, data, upstream):
                    dst.sendall(data[: len(data) // 2])  # half a read goes through: the peer sees a torn message
                    self.cut()
                    return
                dst.sendall(data)
                with self.proxy.lock:
                    if upstream:
                        self.proxy.bytes_up += len(data)
        except OSError:
            pass
        self.cut()

    def cut(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for s in (self.client, self.server):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()


class CuttingProxy:
    """Listens on 127.0.0.1:<port> and forwards to 127.0.0.1:<target_port>."""

    def __init__(self, target_port: int, cuts: Cuts | None = None) -> None:
        self.target_port = target_port
        self.cuts = cuts or Cuts()
        self.lock = threading.Lock()
        self.bytes_up = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._conns: list[_Conn] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        for conn in self._conns:
            conn.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            conn = _Conn(self, client)
            self._conns.append(conn)
            conn.run()

    def should_cut(self, conn: _Conn, data: bytes, upstream: bool) -> bool:
        with self.lock:
            cuts = self.cuts
            if upstream:
                conn.up += len(data)
                if cuts.upload_after_bytes is not None and conn.up > cuts.upload_after_bytes:
                    cuts.upload_after_bytes = None
                    cuts.done.append(f"upload after {conn.up} bytes")
                    return True
                return False
            seen = conn.tail + data
            conn.events += seen.count(b"\nevent: ") - conn.tail.count(b"\nevent: ")
            conn.tail = data[-16:]
            if cuts.stream_after_events is not None and conn.events >= cuts.stream_after_events:
                cuts.stream_after_events = None
                cuts.done.append(f"event stream after {conn.events} events")
                return True
            return False
