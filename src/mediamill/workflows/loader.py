"""Parse and validate workflow documents (YAML or JSON) with located error messages.

Messages look like ``steps[2].on_failure: expected stop|continue|retry, got 'skip'`` and,
when a file is named, are prefixed with it. Every problem found is reported, not only the
first; anything that is not a valid workflow raises ``WorkflowInvalid`` — never another
exception.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mediamill.actions.base import load_actions, params_error
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
    return f"{err['msg']}, got {got!r}" if not isinstance(got, dict | list) else err["msg"]


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


def _semantic_problems(wf: WorkflowDef) -> list[str]:
    actions = load_actions()
    problems: list[str] = []
    names: dict[str, int] = {}
    step_names = [s.name for s in wf.steps]
    for i, step in enumerate(wf.steps):
        where = f"steps[{i}]"
        if step.name in names:
            problems.append(f"{where}.name: duplicate step name {step.name!r} (also steps[{names[step.name]}])")
        names.setdefault(step.name, i)
        spec = actions.get(step.action)
        if spec is None:
            problems.append(f"{where}.action: unknown action {step.action!r}")
        else:
            problems.extend(f"{where}.{p}" for p in params_error(spec, step.params))
        if step.when:
            try:
                check_condition(step.when, wf.type, step_names[:i])
            except ConditionError as exc:
                problems.append(f"{where}.when: {exc}")
        for need in step.needs or []:
            if need not in step_names:
                problems.append(f"{where}.needs: unknown step {need!r}")
            elif need == step.name:
                problems.append(f"{where}.needs: a step cannot need itself")
    problems.extend(_cycle_problems(wf))
    return problems


def _cycle_problems(wf: WorkflowDef) -> list[str]:
    graph = {s.name: [n for n in (s.needs or []) if n != s.name] for s in wf.steps}
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
    try:
        wf = WorkflowDef.model_validate(data)
    except ValidationError as exc:
        raise WorkflowInvalid(_pydantic_problems(exc), source=source) from None
    problems = _semantic_problems(wf)
    if problems:
        raise WorkflowInvalid(problems, source=source)
    return wf


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
