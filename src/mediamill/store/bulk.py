"""Many-row INSERTs. On PostgreSQL a binary ``COPY … FROM STDIN`` (the cheapest path for the client and the
server), or ``INSERT … SELECT FROM unnest(arrays)`` when new ids are wanted back; elsewhere the driver's
executemany."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection


@lru_cache(maxsize=256)
def _statement(table_name: str, columns: tuple[str, ...], types: tuple[str, ...], returning: str | None) -> str:
    params = ", ".join(f"%s::{t}[]" for t in types)
    cols = ", ".join(f'"{c}"' for c in columns)
    select = ", ".join(f'CAST("{c}" AS JSON)' if t == "TEXT_JSON" else f'"{c}"'
                       for c, t in zip(columns, types, strict=True))
    sql = f'INSERT INTO "{table_name}" ({cols}) SELECT {select} FROM unnest({params}) '
    if returning:  # insert in the rows' order, so the sequence hands out ids in that order
        sql += f'WITH ORDINALITY AS t({cols}, "_ord") ORDER BY "_ord" RETURNING "{returning}"'
    else:
        sql += f"AS t({cols})"
    return sql.replace("TEXT_JSON[]", "TEXT[]")


def _pg_type(column: sa.Column[Any], conn: Connection) -> str:
    if isinstance(column.type, sa.JSON):
        return "TEXT_JSON"
    return str(column.type.compile(dialect=conn.dialect))


def insert_many(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts of column → value; missing keys take NULL, not the column default)."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(table.insert(), list(rows))
        return
    if len(rows) < COPY_MIN_ROWS:
        _pg_insert(conn, table, rows, None)
        return
    _pg_copy(conn, table, rows)


#: Below this many rows one ``INSERT … unnest`` (one round trip, a plan the driver prepares after a few uses)
#: is cheaper than ``COPY`` (start, data and end: three round trips and no plan to reuse); above it COPY's
#: cheaper per-row encoding wins.
COPY_MIN_ROWS = 32


_COPY_TYPES = {sa.Integer: "int4", sa.BigInteger: "int8", sa.String: "text", sa.Text: "text", sa.DateTime: "timestamp",
               sa.Boolean: "bool", sa.Float: "float8", sa.Numeric: "numeric", sa.JSON: "json"}


def _copy_type(column: sa.Column[Any], conn: Connection) -> str:
    col_type = column.type.dialect_impl(conn.dialect) if hasattr(column.type, "dialect_impl") else column.type
    for klass in type(col_type).__mro__:
        if klass in _COPY_TYPES:
            return _COPY_TYPES[klass]
    raise TypeError(f"no COPY type for {column.name} ({column.type})")


def _pg_copy(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    from psycopg.types.json import Json

    names = sorted({k for r in rows for k in r})
    types = [_copy_type(table.c[n], conn) for n in names]
    json_cols = [i for i, t in enumerate(types) if t == "json"]
    cols = ", ".join(f'"{n}"' for n in names)
    raw: Any = conn.connection.dbapi_connection
    assert raw is not None
    with raw.cursor() as cur, cur.copy(f'COPY "{table.name}" ({cols}) FROM STDIN WITH (FORMAT BINARY)') as copy:
        copy.set_types(types)
        for r in rows:
            values = [r.get(n) for n in names]
            for i in json_cols:
                if values[i] is not None:
                    values[i] = Json(values[i])
            copy.write_row(values)


def insert_many_returning_ids(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` and return their new ids, in the rows' order."""
    if not rows:
        return []
    if conn.dialect.name != "postgresql":
        # One multi-row INSERT … RETURNING (the driver's batches of VALUES) instead of one statement a row, which
        # asking for RETURNING in parameter order costs on SQLite. SQLite inserts the VALUES rows in order and
        # gives each a rowid above every existing one, so the ids sorted are the ids of the rows in order.
        return sorted(int(i) for i in conn.execute(table.insert().returning(table.c.id), list(rows)).scalars())
    # ids come from one sequence in insertion order, which ORDER BY _ord fixed to the rows' order
    return sorted(int(i) for i in _pg_insert(conn, table, rows, "id"))


def _pg_insert(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]], returning: str | None) -> list[Any]:
    names = tuple(sorted({k for r in rows for k in r}))
    cols = [table.c[n] for n in names]
    types = tuple(_pg_type(c, conn) for c in cols)
    arrays = []
    for name, t in zip(names, types, strict=True):
        values = [r.get(name) for r in rows]
        if t == "TEXT_JSON":
            values = [None if v is None else json.dumps(v, default=str) for v in values]
        arrays.append(values)
    result = conn.exec_driver_sql(_statement(table.name, names, types, returning), tuple(arrays))
    return [r[0] for r in result] if returning else []


def in_ids(conn: Connection, column: sa.ColumnElement[Any], ids: Sequence[int]) -> sa.ColumnElement[bool]:
    """``column IN ids``; on PostgreSQL ``column = ANY(:array)``, one parameter whatever the count, so the
    statement text (and the driver's and server's cached plan) is the same for every batch."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == sa.any_(sa.bindparam(None, list(ids), type_=ARRAY(sa.BigInteger)))
    return column.in_(list(ids))
