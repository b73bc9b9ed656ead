"""Client mistakes are 422 problem documents that name the field, never a 500 (property-based).

Each property draws hostile values for one field (Unicode digits that ``str.isdigit`` accepts
but ``int`` refuses, integers beyond every database and CEL range, malformed URLs that make
``urlsplit`` raise) and checks the answer is a located client error.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediamill.api.app import create_app
from mediamill.runtime import Runtime
from mediamill.store import tables
from tests.helpers import PG_URL

from .support import Keys, make_runtime, postgres_database

TUS = {"Tus-Resumable": "1.0.0"}
OCT = {"Content-Type": "application/offset+octet-stream"}
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

#: digits str.isdigit() accepts and int() refuses: superscripts, circled, fractions' friends
NON_DECIMAL_DIGITS = st.characters(categories=["No"]).filter(str.isdigit)
#: decimal digits of other scripts (int() accepts them; HTTP headers are ASCII)
FOREIGN_DECIMALS = st.characters(categories=["Nd"]).filter(lambda c: not c.isascii())
ODD_NUMBER = st.one_of(
    st.text(NON_DECIMAL_DIGITS, min_size=1, max_size=4),
    st.tuples(st.integers(0, 99), NON_DECIMAL_DIGITS).map(lambda t: f"{t[0]}{t[1]}"),
    st.text(FOREIGN_DECIMALS, min_size=1, max_size=3),
    st.just("9" * 5000),  # beyond Python's int() digit limit
)
MALFORMED_URLS = st.one_of(
    st.sampled_from(["http://[127.0.0.1]/", "http://[::1/", "http://a]b/", "http://[::1]]/", "https://[/",
                     "http://]/", "http://[v1.x]/", "http://[fe80::1%25eth0/"]),
    st.tuples(st.sampled_from(["http", "https"]), st.text("[]:ab1.", min_size=1, max_size=8))
    .map(lambda t: f"{t[0]}://{t[1]}/x").filter(lambda u: "[" in u or "]" in u),
)


@pytest.fixture
def app_client(rt: Runtime) -> Iterator[TestClient]:
    rt.settings.submit_rate_per_minute = 1_000_000  # hundreds of refused submits in a few seconds
    with TestClient(create_app(rt)) as c:
        yield c


def _located(res: object, field: str) -> None:
    status = res.status_code  # type: ignore[attr-defined]
    body = res.json()  # type: ignore[attr-defined]
    assert status == 422, (status, body)
    assert field in body["detail"], body
    assert any(e["loc"].endswith(field) for e in body.get("errors", [])), body


def test_unicode_digits_in_tus_headers_are_422(app_client: TestClient, keys: Keys) -> None:
    created = app_client.post("/v1/uploads", headers=Keys.h(keys.submitter, **TUS, **{"Upload-Length": "10"}))
    url = "/v1/uploads/" + created.headers["location"].rsplit("/", 1)[1]

    @FUZZ
    @given(value=ODD_NUMBER)
    def check(value: str) -> None:
        raw = value.encode()  # as a client sends it: UTF-8 bytes (servers read headers as Latin-1)
        res = app_client.post("/v1/uploads", headers={**Keys.h(keys.submitter, **TUS), "Upload-Length": raw})
        _located(res, "Upload-Length")
        res = app_client.patch(url, headers={**Keys.h(keys.submitter, **TUS, **OCT), "Upload-Offset": raw},
                               content=b"abc")
        _located(res, "Upload-Offset")

    check()
    assert app_client.head(url, headers=Keys.h(keys.submitter, **TUS)).headers["upload-offset"] == "0"


def test_unicode_digits_as_multipart_priority_are_422(app_client: TestClient, keys: Keys, rt: Runtime) -> None:
    @FUZZ
    @given(value=ODD_NUMBER)
    def check(value: str) -> None:
        res = app_client.post("/v1/jobs", headers=Keys.h(keys.submitter), data={"workflow": "WF-TEST-NOOP",
                              "priority": value}, files={"file": ("a.txt", io.BytesIO(b"hello"))})
        _located(res, "priority")

    check()
    assert _job_count(rt) == 0


def test_unicode_digits_in_last_event_id_never_500(app_client: TestClient, keys: Keys) -> None:
    job = app_client.post("/v1/jobs", headers=Keys.h(keys.submitter), data={"workflow": "WF-TEST-NOOP"},
                          files={"file": ("a.txt", io.BytesIO(b"hello"))}).json()
    with app_client.stream("GET", f"/v1/jobs/{job['id']}/events?after=999999",
                           headers={**Keys.h(keys.viewer), "Last-Event-ID": "1²".encode()}) as res:
        assert res.status_code == 422
        assert "last-event-id" in json.loads(res.read())["detail"].lower()


def _job_count(rt: Runtime) -> int:
    with rt.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(tables.workflow_jobs)).scalar() or 0)


HUGE = st.one_of(st.integers(min_value=2**63), st.integers(max_value=-(2**63) - 1), st.just(10**30))


def _routing_rule(rt: Runtime) -> None:
    with rt.engine.begin() as conn:
        conn.execute(tables.routing_rules.insert().values(
            tenant_id=None, position=1, condition="job.metadata.size > 5", workflow_code="WF-TEST-NOOP"))


def test_huge_integers_in_metadata_through_routing_are_422(app_client: TestClient, keys: Keys, rt: Runtime) -> None:
    _routing_rule(rt)

    @FUZZ
    @given(value=HUGE, nested=st.booleans())
    def check(value: int, nested: bool) -> None:
        metadata = {"deep": {"list": [1, {"size": value}]}} if nested else {"size": value}
        where = "metadata.deep.list.1.size" if nested else "metadata.size"
        res = app_client.post("/v1/jobs", headers=Keys.h(keys.submitter),
                              files={"file": ("a.txt", io.BytesIO(b"hello"))},
                              data={"workflow": "auto", "metadata": json.dumps(metadata)})
        _located(res, where)
        res = app_client.post("/v1/jobs", headers=Keys.h(keys.submitter),
                              json={"url": "https://example.com/a.txt", "workflow": "auto", "metadata": metadata})
        _located(res, where)

    check()
    assert _job_count(rt) == 0


def test_huge_integer_in_metadata_on_postgres(tmp_path: object) -> None:
    if not PG_URL:
        pytest.skip("MEDIAMILL_TEST_POSTGRES_URL is not set")
    with postgres_database() as url:
        rt = make_runtime(tmp_path / "data", url)  # type: ignore[operator]
        try:
            _routing_rule(rt)
            keys = Keys(rt)
            with TestClient(create_app(rt)) as c:
                res = c.post("/v1/jobs", headers=Keys.h(keys.submitter), files={"file": ("a.txt", io.BytesIO(b"x"))},
                             data={"workflow": "auto", "metadata": json.dumps({"size": 10**30})})
                _located(res, "metadata.size")
        finally:
            rt.close()


def test_malformed_urls_are_422_everywhere(app_client: TestClient, keys: Keys, rt: Runtime) -> None:
    @FUZZ
    @given(url=MALFORMED_URLS)
    def check(url: str) -> None:
        res = app_client.post("/v1/jobs", headers=Keys.h(keys.submitter), json={"url": url, "workflow": "WF-TEST-NOOP"})
        _located(res, "url")
        res = app_client.post("/v1/jobs", headers=Keys.h(keys.submitter),
                              json={"url": "https://example.com/a", "workflow": "WF-TEST-NOOP",
                                    "notify": {"webhook": url}})
        _located(res, "notify.webhook")
        res = app_client.post("/v1/jobs", headers=Keys.h(keys.submitter), data={"workflow": "WF-TEST-NOOP",
                              "notify": json.dumps({"webhook": url})}, files={"file": ("a.txt", io.BytesIO(b"x"))})
        _located(res, "notify.webhook")
        for kind, config in (("webhook", {"url": url}), ("slack", {"url": url})):
            res = app_client.post("/v1/channels", headers=Keys.h(keys.admin),
                                  json={"kind": kind, "name": "c", "config": config})
            _located(res, "config.url")

    check()
    assert _job_count(rt) == 0
