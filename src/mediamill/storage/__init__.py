"""Object storage: a small interface (``base``) with a local-folder backend and an S3 backend.

The backends depend on the interface, never the other way round: this package's ``open_storage``
is the one place that knows them all.
"""

from pathlib import Path

from mediamill.storage.base import ObjectInfo, Storage, new_key
from mediamill.storage.local import LocalStorage

__all__ = ["ObjectInfo", "Storage", "new_key", "open_storage"]


def open_storage(url: str, *, s3_public_endpoint: str | None = None) -> Storage:
    """Open the backend a storage URL names: a path / file:// URL, or s3://bucket/prefix.

    ``s3_public_endpoint``: where presigned S3 links point (None = ``MEDIAMILL_S3_PUBLIC_ENDPOINT``).
    """
    if url.startswith("s3://"):
        from mediamill.storage.s3 import S3Storage  # boto3 is imported only when S3 is used

        storage = S3Storage.from_url(url)
        if s3_public_endpoint:
            storage.public_endpoint_url = s3_public_endpoint
        return storage
    path = url[len("file://"):] if url.startswith("file://") else url
    return LocalStorage(Path(path))
