"""The import graph: ``store/`` is the one database boundary, and dependencies point inward.

The source files are parsed with :mod:`ast`, nothing is imported or run, so the test costs
milliseconds. Every import counts wherever it is written — at the top, inside a function, or
under ``if TYPE_CHECKING:``. Type-checking-only imports are not exempt: the handles a module
passes around are named through ``mediamill.store.db`` (``Engine``, ``Connection``), so no
module outside ``store/`` has a reason to name SQLAlchemy, even for its types.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "mediamill"

#: Packages that reach the database only through ``store/``'s named functions.
OUTSIDE_THE_STORE = ("engine", "api", "dashboard", "notify", "cli", "observability", "sources")

#: Modules that still import SQLAlchemy or ``store.tables`` themselves, until their SQL moves into
#: ``store/``. The list only shrinks: a module that no longer needs its place here fails the test
#: until it is taken off, and no module may be added.
PENDING: frozenset[str] = frozenset()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _from_target(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module of ``from X import …`` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_in(text: str, module: str, *, is_package: bool = False) -> frozenset[str]:
    """Every module ``text`` imports, anywhere in it. ``from a.b import c`` yields ``a.b`` and
    ``a.b.c`` (``c`` may be a submodule: ``from mediamill.store import tables``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(node, module, is_package)
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return frozenset(found)


@cache
def imports_of(path: Path) -> frozenset[str]:
    return imports_in(path.read_text(), module_name(path), is_package=path.name == "__init__.py")


def modules_of(*packages: str) -> dict[str, frozenset[str]]:
    """Module name → its imports, for every module of the given top-level packages of mediamill."""
    out = {}
    for package in packages:
        for path in sorted((PACKAGE / package).rglob("*.py")):
            out[module_name(path)] = imports_of(path)
    return out


def _is(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offending(packages: tuple[str, ...], *forbidden: str) -> dict[str, list[str]]:
    """Modules of ``packages`` that import any of ``forbidden`` (or a submodule of one), with what."""
    found = {}
    for module, imported in modules_of(*packages).items():
        bad = sorted(i for i in imported if _is(i, *forbidden))
        if bad:
            found[module] = bad
    return found


def test_the_scanner_sees_every_kind_of_import() -> None:
    """Top-level, relative, function-local and TYPE_CHECKING imports are all found."""
    text = (
        "from typing import TYPE_CHECKING\n"
        "import sqlalchemy as sa\n"
        "from ..store import tables as t\n"
        "from . import render\n"
        "if TYPE_CHECKING:\n"
        "    from sqlalchemy.engine import Engine\n"
        "def f():\n"
        "    from mediamill.store.tables import alerts\n"
    )
    seen = imports_in(text, "mediamill.notify.probe")
    assert {"sqlalchemy", "mediamill.store.tables", "mediamill.notify.render", "sqlalchemy.engine.Engine",
            "mediamill.store.tables.alerts"} <= seen
    assert "mediamill.api.routes.jobs" in imports_in("from .routes import jobs", "mediamill.api", is_package=True)
    assert offending(("notify",), "mediamill.notify.render")  # the real tree is read too


def test_only_the_store_talks_sqlalchemy() -> None:
    found = offending(OUTSIDE_THE_STORE, "sqlalchemy", "mediamill.store.tables")
    new = {m: what for m, what in found.items() if m not in PENDING}
    assert not new, f"move these statements into store/ (named functions there): {new}"


def test_pending_only_shrinks() -> None:
    found = offending(OUTSIDE_THE_STORE, "sqlalchemy", "mediamill.store.tables")
    done = sorted(PENDING - set(found))
    assert not done, f"these modules no longer import SQLAlchemy or store.tables: take them off PENDING: {done}"


def test_pending_lists_only_engine_and_api() -> None:
    assert all(_is(m, "mediamill.engine", "mediamill.api") for m in PENDING)


def test_the_engine_never_imports_the_web_or_its_callers() -> None:
    assert not offending(("engine",), "fastapi", "starlette", "mediamill.api", "mediamill.dashboard",
                         "mediamill.cli", "mediamill.notify", "mediamill.sources")


def test_actions_never_touch_the_database() -> None:
    """A step's child process imports only actions/ and media/: it cannot reach the database."""
    assert not offending(("actions",), "mediamill.store", "mediamill.engine", "mediamill.api", "sqlalchemy")


def test_media_imports_nothing_of_the_engine_store_or_api() -> None:
    assert not offending(("media",), "mediamill.engine", "mediamill.store", "mediamill.api", "mediamill.actions",
                         "sqlalchemy")


def test_the_store_imports_nothing_that_calls_it() -> None:
    assert not offending(("store",), "mediamill.engine", "mediamill.api", "mediamill.dashboard", "mediamill.notify",
                         "mediamill.cli", "mediamill.sources", "mediamill.observability", "fastapi")


def test_workflows_and_storage_stand_alone() -> None:
    assert not offending(("workflows", "storage"), "mediamill.engine", "mediamill.store", "mediamill.api",
                         "sqlalchemy")


def test_the_client_talks_http_only() -> None:
    """The SDK imports nothing of the server: only itself and the package version."""
    outside = {m: sorted(i for i in imported if _is(i, "mediamill") and not _is(i, "mediamill.client")
                         and i not in ("mediamill", "mediamill.__version__"))
               for m, imported in modules_of("client").items()}
    assert not {m: what for m, what in outside.items() if what}


def test_the_loop_runner_imports_nothing_that_runs_on_it() -> None:
    """``loops.py`` sits below the engine, the notifier and the API, which all run their loops on it."""
    imported = imports_of(PACKAGE / "loops.py")
    mine = sorted(i for i in imported if _is(i, "mediamill"))
    assert not [i for i in mine if not _is(i, "mediamill.store.connections")], mine


#: What runs a claimed job: built from ``engine.services.RunServices``, never from the worker that claimed it.
RUN_SIDE = ("mediamill.engine.runner", "mediamill.engine.inline", "mediamill.engine.delivery",
            "mediamill.engine.segments", "mediamill.engine.services", "mediamill.engine.outcomes")


def test_a_job_s_run_never_reaches_back_into_its_worker() -> None:
    """The run side imports neither the worker nor its roles (not even for a type), so the runner ↔ worker
    cycle cannot come back: a runner is built from a frozen set of services, and tests build one without a
    worker."""
    engine = modules_of("engine")
    assert set(RUN_SIDE) <= set(engine)
    back = {m: sorted(i for i in engine[m] if _is(i, "mediamill.engine.worker", "mediamill.engine.roles"))
            for m in RUN_SIDE}
    assert not {m: what for m, what in back.items() if what}, back


def test_what_the_runner_calls_never_imports_the_runner() -> None:
    """The fast path, deliveries and chunked encodes see a run as ``services.RunningJob`` (and take plain
    values), so none of them imports the runner that calls them: no cycle through the runner either."""
    engine = modules_of("engine")
    called = [m for m in RUN_SIDE if m != "mediamill.engine.runner"]
    back = {m: sorted(i for i in engine[m] if _is(i, "mediamill.engine.runner")) for m in called}
    assert not {m: what for m, what in back.items() if what}, back
