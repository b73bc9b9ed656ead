"""The error tree in ``mediamill.errors``' docstring is the truth: every error class is in it once, with the
class, retry flag and HTTP status the class itself has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import mediamill.errors as errors
from mediamill.errors import (
    RETRYABLE_CLASSES,
    MediamillError,
    ToolFailed,
    classify_exception,
    error_for_class,
    is_retryable_class,
)

LINE = re.compile(r"^\s{4}(?P<indent>(?:[│ ] {3})*)(?:[├└]── )?(?P<name>[A-Z]\w+)\s+(?P<cls>\S+)\s+"
                  r"(?P<retried>yes|no|\(class\))\s+(?P<http>\d{3})\b")

CLASS = re.compile(r"^\s*class (?P<name>\w+)\((?P<bases>[^)]*)\)\s*:", re.MULTILINE)


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def _tree() -> dict[str, tuple[int, str, str, int]]:
    """name -> (depth, class, retried, http) from the docstring; a name twice is an error."""
    rows: dict[str, tuple[int, str, str, int]] = {}
    for line in (errors.__doc__ or "").splitlines():
        m = LINE.match(line)
        if m is None:
            continue
        assert m["name"] not in rows, f"{m['name']} is in the tree twice"
        depth = 0 if m["name"] == "MediamillError" else len(m["indent"]) // 4 + 1
        rows[m["name"]] = (depth, m["cls"], m["retried"], int(m["http"]))
    return rows


def _error_classes_in_source() -> dict[str, str]:
    """Every class under src/mediamill that derives from an error class, by name → file (read, not imported)."""
    root = Path(errors.__file__).parent
    defs = []
    for path in root.rglob("*.py"):
        for m in CLASS.finditer(path.read_text()):
            bases = {b.strip().rsplit(".", 1)[-1] for b in m["bases"].split(",")}
            defs.append((m["name"], bases, str(path.relative_to(root))))
    found = {"MediamillError": "errors.py"}
    grew = True
    while grew:
        grew = False
        for name, bases, where in defs:
            if name not in found and bases & set(found):
                found[name] = where
                grew = True
    return found


def test_every_error_class_is_in_the_tree_and_lives_in_errors_py() -> None:
    found = _error_classes_in_source()
    assert {name: where for name, where in found.items() if where != "errors.py"} == {}
    assert set(_tree()) == set(found)
    assert {c.__name__ for c in _subclasses(MediamillError) if c.__module__ == "mediamill.errors"} | \
        {"MediamillError"} == set(found)


@pytest.mark.parametrize("name", sorted(_tree()))
def test_the_tree_says_what_the_class_says(name: str) -> None:
    depth, cls_name, retried, http = _tree()[name]
    cls = getattr(errors, name)
    assert cls.http_status == http
    parent = [n for n, row in _tree().items() if row[0] == depth - 1 and issubclass(cls, getattr(errors, n))]
    if depth:
        assert cls.__bases__[0].__name__ in parent
    if cls is ToolFailed:
        assert (cls_name, retried) == ("(given)", "(class)")
        return
    assert cls.error_class == cls_name
    assert cls.retryable is (retried == "yes")


def test_an_error_class_means_one_thing() -> None:
    """No two classes declare the same ``error_class``; a subclass inherits it, and with it ``retryable``."""
    declared: dict[str, type[MediamillError]] = {}
    for cls in _subclasses(MediamillError):
        if "error_class" in vars(cls) and not cls.__module__.startswith("tests."):
            assert cls.error_class not in declared, f"{cls.__name__} and {declared[cls.error_class].__name__}"
            declared[cls.error_class] = cls
    for cls in _subclasses(MediamillError):
        if isinstance(vars(cls).get("error_class"), property):
            continue
        root = declared.get(cls.error_class)
        if root is not None and not cls.__module__.startswith("tests."):
            assert cls.retryable is root.retryable, cls


@pytest.mark.parametrize("name", sorted(errors._BY_CLASS))
def test_stored_class_lookup_agrees_with_the_errors(name: str) -> None:
    err = error_for_class(name, "x")
    assert err.error_class == name
    assert is_retryable_class(name) is err.retryable
    assert ToolFailed("x", error_class=name).retryable is err.retryable


def test_retryable_classes_are_derived_from_the_errors() -> None:
    assert frozenset({"transient", "timeout", "internal", "resource"}) == RETRYABLE_CLASSES


@pytest.mark.parametrize(("exc", "cls", "retryable"), [
    (OSError(28, "No space left on device"), "resource", True),
    (MemoryError(), "resource", True),
    (KeyError("x"), "internal", True),
    (errors.CorruptMedia("bad"), "invalid_input", False),
])
def test_classify_exception(exc: BaseException, cls: str, retryable: bool) -> None:
    err = classify_exception(exc)
    assert (err.error_class, err.retryable) == (cls, retryable)


def test_message_lengths_are_named() -> None:
    err = classify_exception(RuntimeError("y" * 5000))
    assert len(err.message) == errors.DETAIL_MESSAGE
    assert len(ToolFailed("x", stderr_tail="z" * 9000).stderr_tail) == errors.STDERR_TAIL


def test_a_child_reply_carries_the_errors_own_retryable() -> None:
    from mediamill.engine.child import error_payload
    from mediamill.engine.runner import _error_from

    for exc in (errors.TransientError("x"), errors.CorruptMedia("x"), errors.UrlRefused("x"), KeyError("k")):
        reply = error_payload(exc)
        assert _error_from(reply).retryable is classify_exception(exc).retryable
    assert ToolFailed("x", error_class="transient", retryable=False).retryable is False
