"""Sources: folders and S3-compatible buckets whose new files become jobs, each exactly once.

``models`` (the JSON shape), ``backends`` (folder scan, bucket listing, copy into storage,
the ``after`` policy), ``intake`` (one source's loop), ``manager`` (election of one process per
source and its threads), ``notifications`` (signed S3/MinIO bucket events).
"""

from mediamill.sources.models import SourcePatch, SourceSpec

__all__ = ["SourcePatch", "SourceSpec"]
