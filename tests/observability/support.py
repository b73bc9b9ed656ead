"""Re-export of the notify tests' helpers (works whether or not ``tests`` itself is a package)."""

from __future__ import annotations

try:
    from ..notify.support import database, insert_job, insert_workflow, make_settings
except ImportError:  # tests/ is not a package: its sub-folders are top-level packages
    from notify.support import database, insert_job, insert_workflow, make_settings  # type: ignore[no-redef]

__all__ = ["database", "insert_job", "insert_workflow", "make_settings"]
