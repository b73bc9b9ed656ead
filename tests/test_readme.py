"""The README's two set-up commands stay true: CI runs the test command, and the serve command works."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    return [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("python3 -m venv")]


def test_readme_has_the_two_commands() -> None:
    serve, tests = _commands()
    assert serve.endswith("mediamill serve") and "-c requirements.lock" in serve
    assert "'.[test]'" in tests and tests.endswith("python -m pytest")
    assert (ROOT / "requirements.lock").is_file()


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "MEDIAMILL_TEST_POSTGRES_URL" in ci
    assert re.search(r"awk '/\^## Tests/", ci), "CI must take the test command from the README"
