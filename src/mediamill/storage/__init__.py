"""Object storage: a small interface with a local-folder backend and an S3 backend."""

from mediamill.storage.base import ObjectInfo, Storage, new_key, open_storage

__all__ = ["ObjectInfo", "Storage", "new_key", "open_storage"]
