"""The unit tier: no database and no child process. A test here that tries either fails at once,
so the tier stays fast (the whole of it runs in seconds) and runs anywhere."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import sqlalchemy


def _refuse(what: str) -> Any:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError(f"a unit test may not {what}: move it to an integration folder")
    return refuse


@pytest.fixture(autouse=True)
def _no_database_no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlalchemy, "create_engine", _refuse("open a database"))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("start a process"))
