"""JSON-exact field types for request bodies: what JSON Schema says a value is, pydantic accepts.

JSON Schema calls ``15.0`` an integer and ``true`` a boolean, never ``1``; pydantic's lax mode
would take ``"15"`` or ``1`` for those, its strict mode would refuse ``15.0``. These types sit
between: a schema-valid body is accepted, a schema-invalid one refused.
"""

from __future__ import annotations

from typing import Any


def json_integer(value: Any) -> Any:
    """A JSON number with no fraction: ``15`` and ``15.0`` (both integers in JSON Schema), not
    ``true`` or ``"15"``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    return value
