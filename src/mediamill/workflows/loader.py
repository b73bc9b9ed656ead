"""Parse and validate workflow documents (YAML or JSON) with located error messages.

Messages look like ``steps[2].on_failure: expected stop|continue|retry, got 'skip'`` and,
when a file is named, are prefixed with it. Every problem is reported in one pass, not only the
first: structural ones (the models) together with the rest (unknown actions and parameters, with a
"did you mean", conditions, needs), in document order. Anything that is not a valid workflow raises
``WorkflowInvalid`` — never another exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mediamill.actions.base import load_actions, params_error, unknown_action_message
from mediamill.errors import WorkflowInvalid
from mediamill.workflows.conditions import ConditionError, check_condition
from mediamill.workflows.models import WorkflowDef

MAX_DOCUMENT_BYTES = 1024 * 1024


def _loc(parts: tuple[Any, ...]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "(document)"


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    got = err.get("input")
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        options = "|".join(o.strip().strip("'") for o in expected.replace(" or ", ",").split(","))
        return f"expected {options}, got {got!r}"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{msg}, got {got!r}" if not isinstance(got, dict | list) else msg


def _pydantic_problems(exc: ValidationError) -> list[str]:
    return [f"{_loc(tuple(e['loc']))}: {_message(dict(e))}" for e in exc.errors()]


def _parse_text(text: str) -> Any:
    if len(text.encode("utf-8", "replace")) > MAX_DOCUMENT_BYTES:
        raise WorkflowInvalid([f"document larger than {MAX_DOCUMENT_BYTES} bytes"])
    try:
        return yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        raise WorkflowInvalid([f"{where}invalid YAML: {problem}"]) from None
    except (ValueError, RecursionError) as exc:
        raise WorkflowInvalid([f"invalid YAML: {exc}"]) from None


@dataclass(frozen=True)
class _RawStep:
    """What can be read of one step even when the document as a whole does not validate."""

    where: str
    name: str | None
    action: str | None
    params: dict[str, Any] | None
    when: str | None
    needs: list[str]
    parallel: bool = False  # the step sets ``parallel:``


def _raw_steps(data: dict[str, Any]) -> list[_RawStep]:
    steps = data.get("steps")
    out: list[_RawStep] = []
    for i, raw in enumerate(steps if isinstance(steps, list) else []):
        if not isinstance(raw, dict):
            continue
        params = raw.get("params", {})
        needs = raw.get("needs")
        out.append(_RawStep(
            where=f"steps[{i}]", name=_text(raw.get("name")), action=_text(raw.get("action")),
            params=(params or {}) if isinstance(params, dict | None) else None, when=_text(raw.get("when")),
            needs=[n for n in needs if isinstance(n, str)] if isinstance(needs, list) else [],
            parallel=raw.get("parallel") is not None))
    return out


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _semantic_problems(data: dict[str, Any]) -> list[str]:
    """Problems the models cannot see: actions, their params, names, conditions, needs.

    Read from the raw document so they are reported together with the structural problems
    (a bad ``on_failure`` must not hide an unknown action three steps further).
    """
    steps = _raw_steps(data)
    problems: list[str] = []
    seen: dict[str, str] = {}
    for step in steps:
        if step.name is not None and step.name in seen:
            problems.append(f"{step.where}.name: duplicate step name {step.name!r} (also {seen[step.name]})")
        if step.name is not None:
            seen.setdefault(step.name, step.where)
        problems.extend(_action_problems(step))
    problems.extend(_flow_problems(steps, data.get("type")))
    problems.extend(_cycle_problems(steps))
    return problems


def _action_problems(step: _RawStep) -> list[str]:
    if step.action is None:
        return []  # missing or not a string: the model reports it
    actions = load_actions()
    spec = actions.get(step.action)
    if spec is None:
        return [f"{step.where}.action: {unknown_action_message(step.action, actions)}"]
    problems = []
    if step.parallel and not spec.splittable:
        splittable = sorted(name for name, s in actions.items() if s.splittable)
        problems.append(f"{step.where}.parallel: {step.action} cannot be split; parallel: is for "
                        f"{', '.join(splittable)}")
    if step.params is None:
        return problems  # not a mapping: the model reports it
    return problems + [f"{step.where}.{p}" for p in params_error(spec, step.params)]


def _flow_problems(steps: list[_RawStep], workflow_type: Any) -> list[str]:
    problems: list[str] = []
    names = [s.name for s in steps if s.name is not None]
    for i, step in enumerate(steps):
        if step.when and isinstance(workflow_type, str):
            try:
                check_condition(step.when, workflow_type, [s.name for s in steps[:i] if s.name is not None])
            except ConditionError as exc:
                problems.append(f"{step.where}.when: {exc}")
        for need in step.needs:
            if need not in names:
                problems.append(f"{step.where}.needs: unknown step {need!r}")
            elif need == step.name:
                problems.append(f"{step.where}.needs: a step cannot need itself")
    return problems


def _cycle_problems(steps: list[_RawStep]) -> list[str]:
    graph = {s.name: [n for n in s.needs if n != s.name] for s in steps if s.name is not None}
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in graph.get(node, []):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if state.get(nxt) is None and (cycle := visit(nxt, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for name in graph:
        if state.get(name) is None and (cycle := visit(name, [])):
            start = cycle.index(cycle[-1])
            return [f"steps: cycle in needs: {' -> '.join(cycle[start:])}"]
    return []


def validate_document(data: Any, *, source: str | None = None) -> WorkflowDef:
    """Validate an already-parsed document (dict from YAML or JSON)."""
    if not isinstance(data, dict):
        raise WorkflowInvalid([f"(document): expected a mapping with code, name, type, steps; "
                               f"got {type(data).__name__}"], source=source)
    problems: list[str] = []
    wf: WorkflowDef | None = None
    try:
        wf = WorkflowDef.model_validate(data)
    except ValidationError as exc:
        problems = _pydantic_problems(exc)
    problems += [p for p in _semantic_problems(data) if p not in problems]
    if problems or wf is None:
        raise WorkflowInvalid(sorted(problems, key=_document_order), source=source)
    return wf


def _document_order(problem: str) -> int:
    """Problems of step N come after the document's own fields and before those of step N+1 (a stable sort)."""
    match = re.match(r"steps\[(\d+)\]", problem)
    return int(match.group(1)) + 1 if match else 0


def parse_workflow(text: str, *, source: str | None = None) -> WorkflowDef:
    """Parse YAML/JSON text into a validated WorkflowDef or raise WorkflowInvalid."""
    try:
        data = _parse_text(text)
    except WorkflowInvalid as exc:
        raise WorkflowInvalid(exc.problems, source=source) from None
    return validate_document(data, source=source)


def load_workflow_file(path: Path) -> WorkflowDef:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowInvalid([f"cannot read: {exc}"], source=str(path)) from None
    return parse_workflow(text, source=str(path))


def workflow_files(path: Path) -> list[Path]:
    """A file, or every *.yaml / *.yml / *.json file of a directory (sorted)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json") and p.is_file())
    return [path]


def dump_yaml(wf: WorkflowDef) -> str:
    return yaml.safe_dump(wf.model_dump(mode="json", exclude_none=True, exclude_defaults=False),
                          sort_keys=False, allow_unicode=True)


def dump_json(wf: WorkflowDef) -> str:
    return json.dumps(wf.model_dump(mode="json", exclude_none=True), indent=2)
