"""The json columns' text: the standard library's documents (``json.dumps(v, default=str)`` and ``json.dumps(v)``),
written by orjson."""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID

import pytest

from mediamill.statuses import JobStatus
from mediamill.store import jsontext


@dataclass
class Point:
    x: int


class Size(enum.IntEnum):
    SMALL = 1


class Ratio(float):
    """A float subclass, as numpy's float64 is."""


VALUES = [
    None, True, 0, -7, 2**63 - 1, 1.5, 1e16, "", "naïve ☃ \u0000 \n \"q\"", [], {}, [1, [2, {"a": None}]],
    {"status": "completed", "final": True, "outputs": [{"name": "a.jpg", "size": 3}], "ratio": 0.1},
    (1, 2), {1: "int key", 2.5: "float key", False: "bool key", None: "none key"},
    JobStatus.COMPLETED, Size.SMALL, 2**70, -(2**64), Ratio(1.5), {"r": [Ratio(0.25)]},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_the_documents_are_the_standard_library_s(value: object) -> None:
    assert json.loads(jsontext.dumps(value)) == json.loads(json.dumps(value, default=str))
    assert json.loads(jsontext.dumps_strict(value)) == json.loads(json.dumps(value))


@pytest.mark.parametrize("value", [datetime(2026, 11, 30, 16, 0, 0, 123456), datetime(2026, 1, 2, tzinfo=UTC),
                                   date(2026, 11, 30), Point(3), Decimal("1.10"), frozenset({3}),
                                   UUID(int=5), b"raw"], ids=repr)
def test_other_types_become_their_str_or_raise_as_before(value: object) -> None:
    doc = {"at": value, "list": [value]}
    assert json.loads(jsontext.dumps(doc)) == json.loads(json.dumps(doc, default=str))  # str(), not orjson's form
    if not isinstance(value, UUID):  # (orjson writes a UUID as its str(), the standard library refuses it)
        with pytest.raises(TypeError):
            jsontext.dumps_strict(doc)


def test_not_a_number_is_null_which_postgresql_accepts() -> None:
    assert json.loads(jsontext.dumps({"x": math.nan, "y": math.inf})) == {"x": None, "y": None}


def test_text_is_utf8_and_compact() -> None:
    assert jsontext.dumps({"name": "café", "n": [1, 2]}) == '{"name":"café","n":[1,2]}'
