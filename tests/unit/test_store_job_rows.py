"""``store.job_rows.CLAIM_FIELDS`` is the job dict the store's reprocess and review reads return; the
claim in ``engine/transitions.py`` still reads its own copy of the list until its SQL moves into
``store/`` too. The two must name the same columns in the same order, or a job dict would differ
by the path that read it. (Once transitions uses the store's list, this test goes.)"""

from __future__ import annotations

from mediamill.engine import transitions
from mediamill.store import job_rows


def test_the_claim_columns_match_the_engines_copy() -> None:
    assert [c.name for c in job_rows.CLAIM_FIELDS] == [c.name for c in transitions.CLAIM_FIELDS]
