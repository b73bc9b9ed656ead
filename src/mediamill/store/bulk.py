"""Many-row INSERTs. On PostgreSQL a binary ``COPY … FROM STDIN`` (the cheapest path for the client and the
server), or ``INSERT … SELECT FROM unnest(arrays)`` when new ids are wanted back; elsewhere the driver's
executemany."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store import jsontext


@lru_cache(maxsize=256)
def _statement(table_name: str, columns: tuple[str, ...], types: tuple[str, ...], returning: tuple[str, ...],
               same: tuple[bool, ...], where: str = "", binary: frozenset[str] = frozenset()) -> str:
    """``INSERT … SELECT`` of rows given as one array a column (``unnest``), but a column whose value is the same
    in every row as one value (``same``): a batch of one workflow's jobs differs in a column or two, and an
    array costs the client an encoding and the server a decoding per row. ``where``: a condition (SQL) the rows
    go in under, all or none. ``binary``: the columns whose array goes in binary (of strings: the driver then
    looks at no string for characters to quote)."""
    varying = [(c, t) for c, t, s in zip(columns, types, same, strict=True) if not s]
    select = []
    for c, t, s in zip(columns, types, same, strict=True):
        value = f"%s::{t.replace('TEXT_JSON', 'TEXT')}" if s else f'"{c}"'
        select.append(f"CAST({value} AS JSON)" if t == "TEXT_JSON" else value)
    cols = ", ".join(f'"{c}"' for c in columns)
    sql = f'INSERT INTO "{table_name}" ({cols}) SELECT {", ".join(select)} FROM '
    if varying:
        arrays = ", ".join(f"%{'b' if c in binary else 's'}::{t}[]" for c, t in varying).replace("TEXT_JSON[]",
                                                                                                   "TEXT[]")
        names = "".join(f'"{c}", ' for c, _t in varying)
        sql += f'unnest({arrays}) WITH ORDINALITY AS t({names}"_ord")'
    else:
        sql += 'generate_series(1, %s) AS t("_ord")'
    if where:
        sql += f" WHERE {where}"
    if returning:  # insert in the rows' order, so the sequence hands out ids in that order
        sql += ' ORDER BY "_ord" RETURNING ' + ", ".join(f'"{c}"' for c in returning)
    return sql


@lru_cache(maxsize=256)
def _pg_types(table: sa.Table, names: tuple[str, ...], dialect: sa.Dialect) -> tuple[str, ...]:
    """The PostgreSQL type of each column (``TEXT_JSON``: a JSON column, sent as text)."""
    return tuple("TEXT_JSON" if isinstance(table.c[n].type, sa.JSON) else str(table.c[n].type.compile(dialect=dialect))
                 for n in names)


def _filled(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with every key any of them has (an executemany needs the same parameters in each)."""
    names = {k for r in rows for k in r}
    return [r if len(r) == len(names) else {k: r.get(k) for k in names} for r in rows]


def insert_many(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts of column → value; missing keys take NULL, not the column default)."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(table.insert(), _filled(rows))
        return
    if len(rows) < COPY_MIN_ROWS:
        conn.exec_driver_sql(*unnest_insert(conn.dialect, table, rows))
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
                    values[i] = Json(values[i], dumps=jsontext.dumps_strict)
            copy.write_row(values)


def insert_many_returning_ids(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` and return their new ids, in the rows' order."""
    if not rows:
        return []
    if conn.dialect.name != "postgresql":
        # One multi-row INSERT … RETURNING (the driver's batches of VALUES) instead of one statement a row, which
        # asking for RETURNING in parameter order costs on SQLite. SQLite inserts the VALUES rows in order and
        # gives each a rowid above every existing one, so the ids sorted are the ids of the rows in order.
        return sorted(int(i) for i in conn.execute(table.insert().returning(table.c.id), _filled(rows)).scalars())
    # ids come from one sequence in insertion order, which ORDER BY _ord fixed to the rows' order
    return sorted(int(r[0]) for r in conn.exec_driver_sql(*unnest_insert(conn.dialect, table, rows, ("id",))))


def unnest_insert(dialect: sa.Dialect, table: sa.Table, rows: Sequence[dict[str, Any]],
                  returning: tuple[str, ...] = ()) -> tuple[str, tuple[Any, ...]]:
    """The ``INSERT … SELECT FROM unnest`` of ``rows`` (PostgreSQL; missing keys take NULL) and its parameters;
    it inserts in the rows' order and returns the ``returning`` columns of each (a caller may build on it in a
    ``WITH``)."""
    return unnest_insert_columns(dialect, table, {}, _columns(rows), returning)


def unnest_insert_columns(dialect: sa.Dialect, table: sa.Table, same: Mapping[str, Any],
                          columns: Mapping[str, Sequence[Any]], returning: tuple[str, ...] = (), where: str = "",
                          where_params: tuple[Any, ...] = ()) -> tuple[str, tuple[Any, ...]]:
    """:func:`unnest_insert` of rows given as columns: ``same``, the values every row has; ``columns``, each
    column's values, one a row (at least one column; rows built as columns skip a dict a row). ``where`` (with
    ``%s`` placeholders for ``where_params``): a condition the rows go in under, all or none (the facts a caller
    assumed, checked in the same statement)."""
    n = len(next(iter(columns.values())))
    values_of = {**{k: (v,) for k, v in same.items()}, **columns}
    names = tuple(sorted(values_of))
    types = _pg_types(table, names, dialect)
    alike = tuple(name in same or _all_same(values_of[name]) for name in names)
    scalars, arrays, binary = [], [], set()
    for name, t, s in zip(names, types, alike, strict=True):
        values = values_of[name]
        if t == "TEXT_JSON":  # (a value the same in every row is encoded once)
            if s:
                scalars.append(None if values[0] is None else jsontext.dumps(values[0]))
                continue
            values = [None if v is None else jsontext.dumps(v) for v in values]
        if s:
            scalars.append(values[0])
            continue
        arrays.append(list(values))
        if _strings(values):
            binary.add(name)
    # placeholders in the statement's order: the select list's single values, then the arrays (or the count), then
    # the condition's
    params = (*scalars, *arrays, *where_params) if arrays else (*scalars, n, *where_params)
    return _statement(table.name, names, types, returning, alike, where, frozenset(binary)), params


def _strings(values: Sequence[Any]) -> bool:
    """Every value a string or None, and one at least a string."""
    kinds = set(map(type, values))
    return str in kinds and kinds <= {str, type(None)}


def _columns(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """Each column's values, in the rows' order, for every key any row has (a missing key: None). Rows with the
    same keys — a batch built by one function — are read a row at a time by one ``itemgetter`` and turned into
    columns by ``zip``, both in C."""
    keys = rows[0].keys()
    if not all(r.keys() == keys for r in rows):
        return {n: tuple(r.get(n) for r in rows) for n in {k for r in rows for k in r}}
    if len(keys) == 1:
        [name] = keys
        return {name: tuple(r[name] for r in rows)}
    names = tuple(keys)
    return dict(zip(names, zip(*map(operator.itemgetter(*names), rows), strict=True), strict=True))


def _all_same(values: Sequence[Any]) -> bool:
    """Every value equal to the first and of its type (``1`` is not ``True``)."""
    first = values[0]
    return values.count(first) == len(values) and set(map(type, values)) == {type(first)}


def in_ids(conn: Connection, column: sa.ColumnElement[Any], ids: Sequence[int]) -> sa.ColumnElement[bool]:
    """``column IN ids``; on PostgreSQL ``column = ANY(:array)``, one parameter whatever the count, so the
    statement text (and the driver's and server's cached plan) is the same for every batch."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == sa.any_(sa.bindparam(None, list(ids), type_=ARRAY(sa.BigInteger)))
    return column.in_(list(ids))
