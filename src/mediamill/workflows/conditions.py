"""`when:` conditions in CEL (via cel-python): compiled and type-checked at save, evaluated by the engine.

Type checking evaluates the expression once against typed sample values shaped like the
probe of the workflow's input type, so a misspelt ``input`` field, an unknown variable, an
operator applied to the wrong types or a non-bool result is refused when the workflow is
saved, not when a job reaches the step. ``job.metadata`` and ``steps`` are open maps whose
keys are only known at run time.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any

import celpy
from celpy import celtypes

logging.getLogger("celpy").setLevel(logging.CRITICAL)
logging.getLogger("Environment").setLevel(logging.CRITICAL)
logging.getLogger("Evaluator").setLevel(logging.CRITICAL)
logging.getLogger("NameContainer").setLevel(logging.CRITICAL)

_COMMON = {"mime": "", "size": 0, "filename": ""}
INPUT_SCHEMAS: dict[str, dict[str, Any]] = {
    "image": {"width": 0, "height": 0, "format": "", "has_alpha": False, "frames": 1, "mode": ""},
    "video": {"width": 0, "height": 0, "duration": 0.0, "fps": 0.0, "codec": "", "has_audio": False,
              "rotation": 0, "bitrate": 0},
    "audio": {"duration": 0.0, "sample_rate": 0, "channels": 0, "codec": "", "bitrate": 0},
    "document": {"pages": 0},
}
INPUT_SCHEMAS["video_analysis"] = INPUT_SCHEMAS["video"]


class ConditionError(ValueError):
    pass


def input_schema(workflow_type: str) -> dict[str, Any]:
    if workflow_type in INPUT_SCHEMAS:
        return {**_COMMON, **INPUT_SCHEMAS[workflow_type]}
    merged: dict[str, Any] = dict(_COMMON)
    for schema in INPUT_SCHEMAS.values():
        merged.update(schema)
    return merged


_ENV = celpy.Environment()


@lru_cache(maxsize=1024)
def compile_condition(expr: str) -> Any:
    """Parse a CEL expression into a runnable program (cached)."""
    try:
        return _ENV.program(_ENV.compile(expr))
    except celpy.CELParseError as exc:
        raise ConditionError(f"syntax error: {str(exc).splitlines()[0]}") from None


def to_cel(value: Any) -> Any:
    return celpy.json_to_cel(value)


def activation(*, input: dict[str, Any], job: dict[str, Any], steps: dict[str, Any],
               workflow_type: str) -> dict[str, Any]:
    """Variables of a condition; missing probe fields take typed defaults so conditions never crash on them."""
    full_input = {**input_schema(workflow_type), **{k: v for k, v in input.items() if v is not None}}
    return {"input": to_cel(full_input), "job": to_cel(job), "steps": to_cel(steps)}


def check_condition(expr: str, workflow_type: str, step_names: list[str]) -> None:
    """Raise ConditionError with a readable message when the expression is not a valid bool condition."""
    program = compile_condition(expr)
    sample = activation(
        input={}, workflow_type=workflow_type,
        job={"priority": 5, "metadata": {}, "submitter": "", "params": {}, "tenant": ""},
        steps={n: {"status": "completed", "data": {}} for n in step_names},
    )
    try:
        result = program.evaluate(sample)
    except celpy.CELEvalError as exc:
        _explain(exc, expr, workflow_type)
        return
    if isinstance(result, celpy.CELEvalError):
        _explain(result, expr, workflow_type)
        return
    if not isinstance(result, celtypes.BoolType):
        raise ConditionError(f"must be a bool expression, got {type(result).__name__.replace('Type', '').lower()}")


def _explain(exc: Exception, expr: str, workflow_type: str) -> None:
    text = str(exc.args[0]) if exc.args else str(exc)
    missing = re.search(r"no such member in mapping: '([^']+)'", text)
    if missing:
        field = missing.group(1)
        if re.search(rf"\binput\s*\.\s*{re.escape(field)}\b", expr):
            known = ", ".join(sorted(input_schema(workflow_type)))
            raise ConditionError(f"unknown field input.{field} (known: {known})")
        return  # job.metadata.* and steps.* are only known at run time
    undeclared = re.search(r"undeclared reference to '([^']+)'", text)
    if undeclared:
        raise ConditionError(f"unknown variable {undeclared.group(1)!r} (use input, job or steps)")
    if "no matching overload" in text:
        raise ConditionError("type error: operator or function applied to incompatible types")
    raise ConditionError(text.split("\n")[0][:200])


def evaluate_condition(expr: str, variables: dict[str, Any]) -> bool:
    """Evaluate at run time; an evaluation error raises ConditionError (the engine logs it)."""
    result = compile_condition(expr).evaluate(variables)
    if isinstance(result, celpy.CELEvalError):
        raise ConditionError(str(result.args[0]) if result.args else str(result))
    return bool(result)
