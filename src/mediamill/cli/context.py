"""How CLI commands reach an installation."""

from __future__ import annotations

from mediamill.errors import ConfigError
from mediamill.runtime import Runtime


def open_runtime() -> Runtime:
    """The runtime of an existing installation.

    Refuses (exit 2, through ``handle_errors``) when there is no database, so a command run from
    the wrong directory explains itself instead of creating a database nobody serves.
    """
    rt = Runtime()
    try:
        rt.require_database()
    except ConfigError as exc:  # maybe the user meant a server: say how to reach one
        raise ConfigError(f"{exc.message} To work with a server instead: `mediamill login URL` "
                          "(or set MEDIAMILL_URL and MEDIAMILL_API_KEY).") from None
    return rt
