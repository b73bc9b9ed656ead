"""JSON text for the database's ``json`` columns, written by orjson (about ten times quicker than the standard
library's encoder, which was a tenth of a worker's CPU in a drain of in-memory jobs: every job's events, its
step's output and its outbox payload are encoded).

The documents are the standard library's: ``dumps(value)`` is ``json.dumps(value, default=str)`` and
``dumps_strict(value)`` is ``json.dumps(value)`` (what an unsupported type raises, it raises), up to spacing, the
escaping of non-ASCII text (kept as UTF-8: the database's encoding is UTF-8, as every text column already needs)
and a NaN or infinity (``null``, which PostgreSQL's ``json`` accepts, instead of ``NaN``, which it refuses).
Dates, times and dataclasses go through ``str()`` as before, a float subclass is a number as before, and what
orjson cannot encode (an integer beyond 64 bits, a key of an odd type) is left to the standard library. Where
they differ: a plain ``Enum`` member (not a ``StrEnum`` or ``IntEnum``, which both write as their value) is
written as its value, not its ``str()``, and ``dumps_strict`` also takes a UUID or an ``Enum``.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# dates, times and dataclasses as the standard library has them (str() and an error, not orjson's own form)
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _default(value: Any) -> Any:
    return float(value) if isinstance(value, float) else str(value)  # (a float subclass: orjson leaves it to us)


def _strict(value: Any) -> Any:
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    """``json.dumps(value, default=str)``: anything else becomes its ``str()``."""
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS).decode()
    except TypeError:  # (orjson.JSONEncodeError is one) an integer beyond 64 bits, a key of an odd type
        return json.dumps(value, default=str)


def dumps_strict(value: Any) -> str:
    """``json.dumps(value)``: a value of a type JSON has no form for raises ``TypeError``."""
    try:
        return orjson.dumps(value, default=_strict, option=_OPTIONS).decode()
    except TypeError:
        return json.dumps(value)
