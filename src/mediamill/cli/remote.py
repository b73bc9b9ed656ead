"""Remote mode: the CLI talks to a mediamill server through the SDK instead of opening the database.

The server comes from (first match wins): ``--url``/``--api-key``, ``MEDIAMILL_URL``/
``MEDIAMILL_API_KEY``, a ``[remote]`` table in the config file (``MEDIAMILL_CONFIG`` or
``./mediamill.toml``), then the ``[remote]`` table that ``mediamill login`` writes to the user's
config file (``$XDG_CONFIG_HOME/mediamill/config.toml``, mode 0600). ``--local`` ignores them all.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediamill.errors import ConfigError

if TYPE_CHECKING:
    from mediamill.client import Client


@dataclass(frozen=True)
class Target:
    """Where remote commands go, and which setting said so."""

    url: str
    api_key: str | None
    source: str


class _State:
    url: str | None = None
    api_key: str | None = None
    local: bool = False
    client: Client | None = None


_state = _State()


def configure(*, url: str | None, api_key: str | None, local: bool) -> None:
    """Record the root options (``--url``, ``--api-key``, ``--local``; typer fills them from the environment)."""
    _state.url, _state.api_key, _state.local = url or None, api_key or None, local
    _state.client = None


def user_config_path() -> Path:
    """The per-user config file ``mediamill login`` writes."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mediamill" / "config.toml"


def _project_config() -> Path | None:
    named = os.environ.get("MEDIAMILL_CONFIG")
    if named:
        return Path(named)
    default = Path("mediamill.toml")
    return default if default.is_file() else None


def _remote_table(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    table = data.get("remote") or {}
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [remote] must be a table")
    return table


def target() -> Target | None:
    """The server remote commands talk to, or None for local mode."""
    if _state.local:
        return None
    if _state.url:
        key = _state.api_key or _key_for(_state.url)
        return Target(_state.url, key, "--url / MEDIAMILL_URL")
    for path, label in ((_project_config(), "config file"), (user_config_path(), "mediamill login")):
        table = _remote_table(path)
        if table.get("url"):
            return Target(str(table["url"]), _state.api_key or table.get("api_key"), f"{label} {path}")
    return None


def _key_for(url: str) -> str | None:
    """A key saved by ``mediamill login`` for this very URL (so ``--url`` alone works after a login)."""
    for path in (_project_config(), user_config_path()):
        table = _remote_table(path)
        if table.get("url", "").rstrip("/") == url.rstrip("/") and table.get("api_key"):
            return str(table["api_key"])
    return None


def client() -> Client | None:
    """The SDK client of the remote server, or None in local mode."""
    if _state.client is not None:
        return _state.client
    where = target()
    if where is None:
        return None
    from mediamill.client import Client

    try:
        _state.client = Client(where.url, where.api_key or "", timeout=60.0)
    except ValueError as exc:
        raise ConfigError(f"{exc} (from {where.source})") from None
    return _state.client


def save_login(url: str, api_key: str, path: Path | None = None) -> Path:
    """Write ``[remote] url, api_key`` to the user config file, readable by its owner only (0600).

    Other tables of the file are kept; the file is replaced atomically and never exists with
    looser permissions, not even for a moment.
    """
    path = path or user_config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    kept = ""
    if path.is_file():
        kept = _without_remote(path.read_text())
    text = f"[remote]\nurl = {_toml_str(url)}\napi_key = {_toml_str(api_key)}\n"
    if kept.strip():
        text += "\n" + kept.strip() + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)  # the umask cannot widen it, but a stricter one could have narrowed it oddly
    os.replace(tmp, path)
    return path


def _without_remote(text: str) -> str:
    """The file's text minus its ``[remote]`` table."""
    out, skipping = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            skipping = stripped == "[remote]"
        if not skipping:
            out.append(line)
    return "\n".join(out)


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
