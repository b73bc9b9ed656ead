"""A small renderer for the subset of Go templates the Helm chart uses, for machines without `helm`.

Supported: text and ``{{ }}`` actions with ``{{-``/``-}}`` trimming; ``if``/``else``/``end``;
``range $k, $v := PIPELINE`` and ``range $v := PIPELINE`` over maps (sorted keys, like Go) and
lists; variables (``$x``, ``$x.field``), the root ``$`` and ``.`` (the top-level context),
string and number literals, and the functions ``quote``, ``toYaml``, ``indent``, ``nindent``,
``default``, ``not``, ``eq``, ``add``, ``max``, ``lower``, ``printf`` (``%s``/``%d``), ``b64enc``, ``required``.
Anything else is an error, so the chart cannot drift outside what this renders faithfully.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.S)
_WORD = re.compile(r'"(?:\\.|[^"\\])*"|\S+')


class TemplateError(ValueError):
    """The template uses something this renderer does not support, or a value is missing."""


@dataclass
class _Node:
    kind: str  # text | action | if | range
    text: str = ""
    body: list[_Node] = field(default_factory=list)
    other: list[_Node] = field(default_factory=list)


def _tokens(source: str) -> Iterator[tuple[str, str]]:
    pos = 0
    pending_trim = False
    for m in _ACTION.finditer(source):
        text = source[pos:m.start()]
        if pending_trim:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        yield "text", text
        yield "action", m.group(2)
        pending_trim = bool(m.group(3))
        pos = m.end()
    tail = source[pos:]
    yield "text", tail.lstrip() if pending_trim else tail


def _parse(source: str) -> list[_Node]:
    root: list[_Node] = []
    stack: list[tuple[_Node | None, list[_Node]]] = [(None, root)]
    for kind, value in _tokens(source):
        target = stack[-1][1]
        if kind == "text":
            if value:
                target.append(_Node("text", value))
            continue
        if value.startswith("/*"):
            continue  # a comment
        word = value.split(None, 1)[0] if value else ""
        if word in ("if", "range"):
            node = _Node(word, value[len(word):].strip())
            target.append(node)
            stack.append((node, node.body))
        elif word == "else":
            owner = stack[-1][0]
            if owner is None or owner.kind != "if":
                raise TemplateError("else outside if")
            stack[-1] = (owner, owner.other)
        elif word == "end":
            if len(stack) == 1:
                raise TemplateError("end without a block")
            stack.pop()
        else:
            target.append(_Node("action", value))
    if len(stack) != 1:
        raise TemplateError("a block is not closed with {{ end }}")
    return root


def _truthy(value: Any) -> bool:
    return bool(value) if value is not None else False


def _to_yaml(value: Any) -> str:
    if value is None:
        return "null"
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=False).rstrip("\n").removesuffix("\n...")


def _quote(value: Any) -> str:
    return '"' + str(value if value is not None else "").replace("\\", "\\\\").replace('"', '\\"') + '"'


def _indent(width: Any, text: Any) -> str:
    pad = " " * int(width)
    return "\n".join(pad + line if line else line for line in str(text).split("\n"))


def _required(message: Any, value: Any) -> Any:
    if not _truthy(value):
        raise TemplateError(str(message))
    return value


_FUNCTIONS: dict[str, Any] = {
    "quote": lambda a: _quote(a[0]),
    "toYaml": lambda a: _to_yaml(a[0]),
    "indent": lambda a: _indent(a[0], a[1]),
    "nindent": lambda a: "\n" + _indent(a[0], a[1]),
    "default": lambda a: a[1] if _truthy(a[1]) else a[0],
    "not": lambda a: not _truthy(a[0]),
    "eq": lambda a: a[0] == a[1],
    "add": lambda a: sum(int(x) for x in a),
    "max": lambda a: max(int(x) for x in a),
    "lower": lambda a: str(a[0]).lower(),
    "b64enc": lambda a: base64.b64encode(str(a[0]).encode()).decode(),
    "printf": lambda a: str(a[0]).replace("%d", "%s") % tuple(a[1:]),
    "required": lambda a: _required(a[0], a[1]),
}


def _call(name: str, args: list[Any]) -> Any:
    function = _FUNCTIONS.get(name)
    if function is None:
        raise TemplateError(f"unsupported function {name!r}")
    return function(args)


class _Scope:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.vars: list[dict[str, Any]] = [{"$": root}]

    def lookup(self, term: str) -> Any:
        if term.startswith('"'):
            return json.loads(term)  # Go's escapes in a double-quoted string are JSON's for \" \\ \n
        if re.fullmatch(r"-?\d+", term):
            return int(term)
        if term in ("true", "false"):
            return term == "true"
        if term.startswith("$"):
            head, _, rest = term.partition(".")
            for frame in reversed(self.vars):
                if head in frame:
                    return _walk(frame[head], rest)
            raise TemplateError(f"undefined variable {head}")
        if term.startswith("."):
            return _walk(self.root, term[1:])
        raise TemplateError(f"unsupported term {term!r}")


def _walk(value: Any, path: str) -> Any:
    for part in [p for p in path.split(".") if p]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _eval(pipeline: str, scope: _Scope) -> Any:
    value: Any = None
    for i, command in enumerate(_split_pipes(pipeline)):
        words = _WORD.findall(command)
        if not words:
            raise TemplateError(f"empty command in {pipeline!r}")
        head, args = words[0], [scope.lookup(w) for w in words[1:]]
        if i > 0:
            args.append(value)
        if head[0] in '".$-0123456789' or head in ("true", "false"):
            if args:
                raise TemplateError(f"{head} takes no arguments")
            value = scope.lookup(head)
        else:
            value = _call(head, args)
    return value


def _split_pipes(pipeline: str) -> list[str]:
    parts, current, quoted, escaped = [], "", False, False
    for ch in pipeline:
        if ch == '"' and not escaped:
            quoted = not quoted
        escaped = ch == "\\" and not escaped
        if ch == "|" and not quoted:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return parts


def _render(nodes: list[_Node], scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "action":
            m = re.fullmatch(r"(\$\w+)\s*:=\s*(.+)", node.text)
            if m:
                scope.vars[-1][m.group(1)] = _eval(m.group(2), scope)
                continue
            value = _eval(node.text, scope)
            out.append("" if value is None else str(value).lower() if isinstance(value, bool) else str(value))
        elif node.kind == "if":
            _render(node.body if _truthy(_eval(node.text, scope)) else node.other, scope, out)
        elif node.kind == "range":
            _range(node, scope, out)


def _range(node: _Node, scope: _Scope, out: list[str]) -> None:
    m = re.fullmatch(r"(\$\w+)(?:\s*,\s*(\$\w+))?\s*:=\s*(.+)", node.text)
    if not m:
        raise TemplateError(f"range needs variables: {node.text!r}")
    collection = _eval(m.group(3), scope)
    items = (sorted(collection.items()) if isinstance(collection, dict)
             else list(enumerate(collection or [])))
    for key, value in items:
        frame = {m.group(1): value} if m.group(2) is None else {m.group(1): key, m.group(2): value}
        scope.vars.append(frame)
        try:
            _render(node.body, scope, out)
        finally:
            scope.vars.pop()


def render_template(source: str, context: dict[str, Any]) -> str:
    """Render one template with a Helm-like context (``Values``, ``Release``, ``Chart``)."""
    out: list[str] = []
    _render(_parse(source), _Scope(context), out)
    return "".join(out)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def render_chart(chart: Path, *, release: str = "mm", namespace: str = "default",
                 values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Render every template of ``chart`` (like ``helm template``) into a list of manifests."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    vals = _merge(yaml.safe_load((chart / "values.yaml").read_text()) or {}, values or {})
    context = {"Values": vals, "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
               "Chart": {"Name": meta["name"], "Version": meta["version"], "AppVersion": meta.get("appVersion", "")}}
    docs: list[dict[str, Any]] = []
    for path in sorted((chart / "templates").glob("*.yaml")):
        text = render_template(path.read_text(), context)
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs
