"""tus throughput where the unfinished bytes live: local part files or S3 multipart parts (moto).

    SIZE=67108864 CHUNK=4194304 STORAGE=s3://bench/mm python benchmarks/tus_parts.py
    STORAGE= python benchmarks/tus_parts.py          # local storage, 128 MiB by default

One upload of ``SIZE`` random bytes in ``CHUNK``-byte PATCHes through a live server on SQLite;
prints the time and MiB/s. On S3 the bytes of a PATCH that do not fill a part (8 MiB) go up as a
pending object and are read back when a later PATCH fills the part: PATCHes smaller than a part
cost up to one more upload and one download of their bytes; moto's speed is not S3's.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.api.support import Keys, LiveServer, make_runtime


def main() -> None:
    size = int(os.environ.get("SIZE", str(128 * 1024 * 1024)))
    chunk = int(os.environ.get("CHUNK", str(4 * 1024 * 1024)))
    storage = os.environ.get("STORAGE", "")
    server = None
    if storage.startswith("s3://"):
        from moto.server import ThreadedMotoServer
        from tests.helpers import free_port

        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                          AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")
    data = os.urandom(size)
    with tempfile.TemporaryDirectory() as tmp:
        rt = make_runtime(Path(tmp) / "data", **({"storage_url": storage} if storage else {}))
        if storage:
            rt.storage.ensure_bucket()  # type: ignore[attr-defined]
        h = {"Authorization": f"Bearer {Keys(rt).submitter}", "Tus-Resumable": "1.0.0"}
        with LiveServer(rt) as live, httpx.Client(base_url=live.url, timeout=300) as client:
            started = time.perf_counter()
            location = client.post("/v1/uploads", headers={**h, "Upload-Length": str(size)}).headers["location"]
            path = "/v1/uploads/" + location.rsplit("/", 1)[1]
            for offset in range(0, size, chunk):
                res = client.patch(path, content=data[offset:offset + chunk], headers={
                    **h, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)})
                assert res.status_code == 204, res.text
            elapsed = time.perf_counter() - started
            assert client.get(path, headers=h).json()["complete"]
        rt.close()
    if server is not None:
        server.stop()
    print(f"storage={storage or 'local'} size={size >> 20} MiB chunk={chunk >> 20} MiB: "
          f"{elapsed:.2f} s, {size / elapsed / 2**20:.0f} MiB/s")


if __name__ == "__main__":
    main()
