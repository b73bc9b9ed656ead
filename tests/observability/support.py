"""Re-export of the notify tests' helpers used by the observability tests."""

from __future__ import annotations

from tests.notify.support import database, insert_job, insert_workflow, make_settings

__all__ = ["database", "insert_job", "insert_workflow", "make_settings"]
