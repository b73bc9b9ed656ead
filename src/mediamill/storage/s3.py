"""S3-compatible storage (AWS S3, MinIO, Ceph, moto …) through boto3.

``s3://bucket/prefix``. Endpoint, region and credentials come from the usual environment
variables (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``, ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, profiles …), so
nothing secret ever sits in mediamill's own configuration. Large objects go up as multipart
uploads (boto3's managed transfer), downloads stream.

Presigned links handed to clients may need another address than the one mediamill's own
processes use (``http://minio:9000`` inside a cluster, ``https://media.example.com`` outside):
``MEDIAMILL_S3_PUBLIC_ENDPOINT`` names it. A signature covers the host, so links are signed
for the public endpoint itself, not rewritten afterwards; whatever answers there (a load
balancer, an ingress, a proxy) must pass the request on with its Host header unchanged.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from mediamill.errors import NotFound, ServiceUnavailable, TransientError
from mediamill.storage.base import CHUNK, ObjectInfo, Storage, StorageHealth, check_key

MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNK = 16 * 1024 * 1024


class _HashingReader(io.RawIOBase):
    """Wraps a stream, counting and hashing what boto3 reads from it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n if n is not None and n >= 0 else CHUNK)
        self.digest.update(data)
        self.size += len(data)
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def public_endpoint() -> str | None:
    """``MEDIAMILL_S3_PUBLIC_ENDPOINT``: the S3 address clients reach, when it differs from the internal one."""
    value = os.environ.get("MEDIAMILL_S3_PUBLIC_ENDPOINT", "").strip().rstrip("/")
    return value or None


def s3_client() -> Any:
    """A boto3 S3 client configured from the environment (what storage, sources and deliveries use)."""
    return _client()


def _client(endpoint: str | None = None) -> Any:
    import boto3
    from botocore.config import Config

    endpoint = endpoint or _endpoint()
    # path-style addressing for custom endpoints: self-hosted servers rarely have wildcard DNS
    style = "path" if endpoint else "auto"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    config = Config(s3={"addressing_style": style}, signature_version="s3v4",
                    retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32)
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, config=config)


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _is_missing(exc: Exception) -> bool:
    return _error_code(exc) in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


#: how long a bucket check is reused (``/readyz`` is polled every few seconds by load balancers)
HEALTH_CACHE_SECONDS = 10.0
PROBE_KEY = "health/write-probe"


class S3Storage(Storage):
    """Objects under ``prefix/`` in one bucket."""

    scheme = "s3"

    def __init__(self, *, bucket: str, prefix: str = "", client: Any = None,
                 public_endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client if client is not None else _client()
        self.public_endpoint_url = public_endpoint_url if public_endpoint_url is not None else public_endpoint()
        self._presigner: Any = None
        self._health: tuple[float, StorageHealth] | None = None

    @property
    def presigner(self) -> Any:
        """The client that signs links for clients: one bound to the public endpoint when there is one.

        It only computes signatures (no request goes through it), with the same credentials.
        """
        if not self.public_endpoint_url:
            return self.client
        if self._presigner is None:
            self._presigner = _client(self.public_endpoint_url)
        return self._presigner

    @classmethod
    def from_url(cls, url: str) -> S3Storage:
        """``s3://bucket/optional/prefix``."""
        rest = url[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ValueError(f"expected s3://bucket[/prefix], got {url!r}")
        return cls(bucket=bucket, prefix=prefix)

    def _k(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNK,
                              max_concurrency=4, use_threads=True)

    def put(self, key: str, stream: BinaryIO, *, content_type: str | None = None) -> ObjectInfo:
        reader = _HashingReader(stream)
        extra = {"ContentType": content_type} if content_type else {}
        try:
            # a buffered wrapper gives boto3 a stream it reads in order, part by part
            self.client.upload_fileobj(io.BufferedReader(reader, CHUNK), self.bucket, self._k(key),
                                       ExtraArgs=extra or None, Config=self._transfer_config())
        except Exception as exc:
            if _error_code(exc) == "NoSuchBucket" or "NoSuchBucket" in str(exc):
                raise self._missing_bucket() from exc
            if exc.__class__.__name__ in ("ClientError", "S3UploadFailedError", "EndpointConnectionError"):
                raise TransientError(f"S3 upload to bucket {self.bucket!r} failed: {exc}",
                                     public_message=f"storage bucket {self.bucket!r} refused the upload; "
                                                    "try again later") from exc
            raise
        return ObjectInfo(key=key, size=reader.size, checksum=reader.digest.hexdigest())

    def _get(self, key: str, byte_range: str | None = None) -> Any:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._k(key)}
        if byte_range:
            kwargs["Range"] = byte_range
        try:
            return self.client.get_object(**kwargs)
        except Exception as exc:
            if _is_missing(exc):
                raise NotFound(f"no object {key!r}") from exc
            raise

    def open(self, key: str) -> BinaryIO:
        body = self._get(key)["Body"]
        return io.BufferedReader(_BodyReader(body), CHUNK)

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        byte_range = f"bytes={start}-{'' if end is None else end}" if start or end is not None else None
        body = self._get(key, byte_range)["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def _head(self, key: str) -> dict[str, Any]:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self._k(key)))
        except Exception as exc:
            if _is_missing(exc):
                raise NotFound(f"no object {key!r}") from exc
            raise

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except NotFound:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def local_path(self, key: str) -> Path | None:
        return None

    def get_to_file(self, key: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, self._k(key), str(dest), Config=self._transfer_config())
        except Exception as exc:
            if _is_missing(exc):
                raise NotFound(f"no object {key!r}") from exc
            raise
        return dest

    def put_file(self, key: str, path: Path, *, content_type: str | None = None, move: bool = False) -> ObjectInfo:
        with path.open("rb") as fh:
            return self.put(key, fh, content_type=content_type)

    def presign_get(self, key: str, *, expires: int = 300, filename: str | None = None) -> str | None:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self._k(key)}
        if filename:
            safe = filename.replace('"', "").replace("\\", "")
            params["ResponseContentDisposition"] = f'attachment; filename="{safe}"'
        return str(self.presigner.generate_presigned_url("get_object", Params=params, ExpiresIn=expires))

    def presign_put(self, key: str, *, expires: int = 900, content_type: str | None = None) -> str | None:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self._k(key)}
        if content_type:
            params["ContentType"] = content_type
        return str(self.presigner.generate_presigned_url("put_object", Params=params, ExpiresIn=expires))

    def _missing_bucket(self) -> ServiceUnavailable:
        return ServiceUnavailable(f"storage bucket {self.bucket!r} does not exist (MEDIAMILL_STORAGE_URL); "
                                  "create it or point MEDIAMILL_STORAGE_URL at an existing bucket")

    def health(self) -> StorageHealth:
        """The bucket exists and takes a write (a tiny probe object, deleted again); cached briefly."""
        now = time.monotonic()
        cached = self._health
        if cached is not None and now - cached[0] < HEALTH_CACHE_SECONDS:
            return cached[1]
        result = StorageHealth(ok=True, backend=self.scheme, problem=self._bucket_problem())
        if result.problem:
            result = StorageHealth(ok=False, backend=self.scheme, problem=result.problem)
        self._health = (now, result)
        return result

    def _bucket_problem(self) -> str | None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            code = _error_code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                return f"bucket {self.bucket!r} does not exist"
            if code in ("403", "AccessDenied"):
                return f"bucket {self.bucket!r} is not accessible with these credentials"
            return f"bucket {self.bucket!r} cannot be reached ({type(exc).__name__})"
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._k(PROBE_KEY), Body=b"ok")
            self.client.delete_object(Bucket=self.bucket, Key=self._k(PROBE_KEY))
        except Exception as exc:
            return f"bucket {self.bucket!r} is not writable ({_error_code(exc) or type(exc).__name__})"
        return None

    def object_ref(self, key: str) -> tuple[str, str]:
        """(bucket, full key) of a stored object, for server-side copies to and from other buckets."""
        return self.bucket, self._k(key)

    def copy_in(self, key: str, *, bucket: str, source_key: str) -> ObjectInfo:
        """Store a copy of another bucket's object under ``key`` without moving its bytes through us."""
        try:
            self.client.copy({"Bucket": bucket, "Key": source_key}, self.bucket, self._k(key),
                             Config=self._transfer_config())
        except Exception as exc:
            if _is_missing(exc):
                raise NotFound(f"no object s3://{bucket}/{source_key}") from exc
            raise
        return ObjectInfo(key=key, size=self.size(key))

    def ensure_bucket(self) -> None:
        """Create the bucket when missing (tests, first start against an empty MinIO)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception:
            self.client.create_bucket(Bucket=self.bucket)


class _BodyReader(io.RawIOBase):
    """botocore's StreamingBody as a raw stream (so BufferedReader can wrap it)."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        data = self._body.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()
