"""Many-row inserts (``store.bulk``) on both databases: every row arrives with its own values whether a column
differs between rows or not (on PostgreSQL a column with one value for all rows is sent once, not as an array),
ids come back in the rows' order, JSON and NULL survive."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mediamill.store import bulk
from mediamill.store.tables import job_events
from tests.helpers import BACKENDS, database_url, make_runtime


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    with database_url(request.param, tmp_path) as url:
        rt = make_runtime(tmp_path / "data", url)
        yield rt.engine
        rt.close()


def _rows(engine: sa.Engine, ids: list[int]) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(job_events.c.job_id, job_events.c.tenant_id, job_events.c.event_type, job_events.c.step_name,
                      job_events.c.data).where(job_events.c.id.in_(ids)).order_by(job_events.c.id))]


@pytest.mark.parametrize("rows", [
    [{"job_id": 7, "tenant_id": "t", "event_type": "status", "data": {"a": 1}}] * 3,  # every column the same
    [{"job_id": i, "tenant_id": "t", "event_type": "status", "step_name": None, "data": {"n": i}} for i in range(5)],
    [{"job_id": 1, "tenant_id": "a", "event_type": "x", "step_name": "s"},  # a key missing from a row is NULL
     {"job_id": 1, "tenant_id": "b", "event_type": "x"}],
    # strings a text array would quote or escape (PostgreSQL: an array of strings goes in binary) beside NULLs
    [{"job_id": i, "tenant_id": "t", "event_type": "status", "step_name": name, "data": None}
     for i, name in enumerate(['a "b", {c}', "back\\slash", None, "NULL", "", "é ✓ \u2028", " spaced "])],
], ids=["same", "varying", "sparse", "awkward-strings"])
def test_rows_arrive_as_given_with_ids_in_order(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        ids = bulk.insert_many_returning_ids(conn, job_events, rows)
        bulk.insert_many(conn, job_events, rows)  # (below COPY_MIN_ROWS on PostgreSQL: the same INSERT … SELECT)
    assert len(ids) == len(rows) and ids == sorted(ids)
    want = [(r["job_id"], r["tenant_id"], r["event_type"], r.get("step_name"), r.get("data")) for r in rows]
    assert _rows(engine, ids) == want
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(job_events)).scalar() == 2 * len(rows)
