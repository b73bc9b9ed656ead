"""How CLI commands reach an installation."""

from __future__ import annotations

from mediamill.runtime import Runtime


def open_runtime() -> Runtime:
    """The runtime of an existing installation.

    Refuses (exit 2, through ``handle_errors``) when there is no database, so a command run from
    the wrong directory explains itself instead of creating a database nobody serves.
    """
    rt = Runtime()
    rt.require_database()
    return rt
