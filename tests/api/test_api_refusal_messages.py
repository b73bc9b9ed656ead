"""A refused URL says how to allow it, and the README documents the settings a refusal points to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mediamill.config import Settings
from mediamill.netguard import UrlRefused, check_url

from .support import Keys

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_url_refusal_names_the_allowlist_setting(client: TestClient, keys: Keys) -> None:
    res = client.post("/v1/jobs", headers=Keys.h(keys.submitter), json={"url": "http://127.0.0.1/x.mp4"})
    assert res.status_code == 422
    assert "MEDIAMILL_URL_ALLOWLIST" in res.json()["detail"], res.json()
    with pytest.raises(UrlRefused, match="MEDIAMILL_URL_ALLOWLIST"):
        check_url("http://10.1.2.3/hook")
    assert check_url("http://10.1.2.3/hook", "10.0.0.0/8") == "http://10.1.2.3/hook"


@pytest.mark.parametrize("name", ["MEDIAMILL_CORS_ORIGINS", "MEDIAMILL_URL_ALLOWLIST"])
def test_readme_documents_the_setting(name: str) -> None:
    assert name.removeprefix("MEDIAMILL_").lower() in Settings.model_fields
    [row] = [line for line in README.splitlines() if line.startswith(f"| `{name}`")]
    assert len(re.findall(r"\|", row)) == 4 and len(row) > 80, row  # a table row that explains itself


def test_readme_says_browser_tus_clients_need_cors() -> None:
    [row] = [line for line in README.splitlines() if line.startswith("| `MEDIAMILL_CORS_ORIGINS`")]
    assert "Uppy" in row and "tus" in row
