"""`when:` conditions in CEL (via cel-python): compiled and type-checked at save, evaluated by the engine.

Type checking evaluates the expression once against typed sample values shaped like the
probe of the workflow's input type, so a misspelt ``input`` field, an unknown variable, an
operator applied to the wrong types or a non-bool result is refused when the workflow is
saved, not when a job reaches the step. ``job.metadata`` and ``steps`` are open maps whose
keys are only known at run time.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

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
    """A condition that does not parse, type-check or evaluate; ``line``/``column`` locate a syntax error."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column

    @property
    def position(self) -> dict[str, int] | None:
        """Where the expression went wrong (1-based), when the parser said."""
        if self.line is None or self.column is None:
            return None
        return {"line": self.line, "column": self.column}


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
    except CELParseError as exc:
        line, column = getattr(exc, "line", None), getattr(exc, "column", None)
        where = f" at line {line}, column {column}" if line and column else ""
        raise ConditionError(f"syntax error{where}: {str(exc).splitlines()[0]}", line=line, column=column) from None


_INT64 = 2**63


def to_cel(value: Any) -> Any:
    """JSON-like data as CEL values; integers beyond 64 bits (CEL's int) become doubles instead of failing."""
    try:
        return json_to_cel(value)
    except (ValueError, OverflowError):
        return json_to_cel(_fit_ints(value))


def _fit_ints(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else float(value)
    if isinstance(value, dict):
        return {k: _fit_ints(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_fit_ints(v) for v in value]
    return value


@dataclass(frozen=True)
class JobFacts:
    """What a condition may ask about a job: the submission's facts, known before anything runs, and — once the
    input was probed — the probe's fields. A routing rule sees a submission (no ``id`` yet); a step's ``when:``
    sees a job row (:meth:`of_job`)."""

    tenant: str
    mime: str = ""
    size: int = 0
    filename: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    submitter: str = ""
    priority: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None
    probe: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of_job(cls, job: Mapping[str, Any]) -> JobFacts:
        """The facts of a ``workflow_jobs`` row (its probe is the JSON text of ``input_metadata``, when probed)."""
        probe = json.loads(job["input_metadata"]) if job.get("input_metadata") else {}
        return cls(tenant=job["tenant_id"], mime=job.get("input_mime") or "", size=job.get("input_size") or 0,
                   filename=job.get("input_filename") or "", metadata=job.get("job_metadata") or {},
                   submitter=job.get("submitted_by") or "", priority=job.get("priority"),
                   params=job.get("params") or {}, id=job.get("id"), probe=probe)


def condition_variables(facts: JobFacts, *, workflow_type: str | None = None,
                        steps: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The one builder of a condition's variables: ``input``, ``job`` and (for a step's ``when:``) ``steps``.

    With ``workflow_type`` (a step's ``when:``) ``input`` holds the probe's fields over typed defaults
    of that type, so a condition never crashes on a field the probe did not report; without it (a
    routing rule, before any workflow is chosen) ``input`` holds the submission's facts and the file
    name's ``extension``. Either way ``mime``, ``size`` and ``filename`` come from the job when the
    probe did not say them."""
    known = {"mime": facts.mime, "size": facts.size, "filename": facts.filename}
    job: dict[str, Any] = {"priority": facts.priority if facts.priority is not None else -1,
                           "metadata": dict(facts.metadata or {}), "submitter": facts.submitter,
                           "params": dict(facts.params or {}), "tenant": facts.tenant}
    if facts.id is not None:
        job["id"] = facts.id
    if workflow_type is None:
        ext = facts.filename.rsplit(".", 1)[-1].lower() if "." in facts.filename else ""
        return {"input": to_cel({**known, "extension": ext}), "job": to_cel(job)}
    probe = {k: v for k, v in {**known, **facts.probe}.items() if v is not None}
    return {"input": to_cel({**input_schema(workflow_type), **probe}), "job": to_cel(job),
            "steps": to_cel(dict(steps or {}))}


def check_condition(expr: str, workflow_type: str, step_names: list[str]) -> None:
    """Raise ConditionError with a readable message when the expression is not a valid bool condition."""
    program = compile_condition(expr)
    sample = condition_variables(JobFacts(tenant="", priority=5), workflow_type=workflow_type,
                                 steps={n: {"status": "completed", "data": {}} for n in step_names})
    try:
        result = program.evaluate(sample)
    except CELEvalError as exc:
        _explain(exc, expr, workflow_type)
        return
    if isinstance(result, CELEvalError):
        _explain(result, expr, workflow_type)
        return
    if not isinstance(result, celtypes.BoolType):
        raise ConditionError(f"must be a bool expression, got {type(result).__name__.replace('Type', '').lower()}")


def _explain(exc: Exception, expr: str, workflow_type: str, fields: dict[str, Any] | None = None) -> None:
    text = str(exc.args[0]) if exc.args else str(exc)
    missing = re.search(r"no such member in mapping: '([^']+)'", text)
    if missing:
        field = missing.group(1)
        if re.search(rf"\binput\s*\.\s*{re.escape(field)}\b", expr):
            known = ", ".join(sorted(fields if fields is not None else input_schema(workflow_type)))
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
    try:
        result = compile_condition(expr).evaluate(variables)
    except CELEvalError as exc:  # raised, not returned, for a missing map key
        raise ConditionError(str(exc.args[0]) if exc.args else str(exc)) from None
    if isinstance(result, CELEvalError):
        raise ConditionError(str(result.args[0]) if result.args else str(result))
    return bool(result)


# ------------------------------------------------------------------------------ routing rules
#: What a routing rule knows of the input: the facts read at submission (nothing is probed yet).
ROUTING_INPUT: dict[str, Any] = {"mime": "", "size": 0, "filename": "", "extension": ""}


def routing_variables(*, mime: str, size: int, filename: str, metadata: dict[str, Any], tenant: str,
                      submitter: str = "", priority: int | None = None,
                      params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The variables of a routing condition: ``input`` (submission facts) and ``job``."""
    return condition_variables(JobFacts(tenant=tenant, mime=mime, size=size, filename=filename, metadata=metadata,
                                        submitter=submitter, priority=priority, params=params or {}))


def check_routing_condition(expr: str) -> None:
    """Like ``check_condition`` for a routing rule: only submission facts exist, no ``steps``."""
    try:
        program = compile_condition(expr)
    except ConditionError:
        raise
    except Exception as exc:  # the parser can fail in other ways on hostile input (nesting depth …)
        raise ConditionError(f"invalid expression ({type(exc).__name__})") from None
    sample = routing_variables(mime="", size=0, filename="", metadata={}, tenant="")
    try:
        result = program.evaluate(sample)
    except CELEvalError as exc:
        _explain(exc, expr, "generic", ROUTING_INPUT)
        return
    except Exception as exc:
        raise ConditionError(f"invalid expression ({type(exc).__name__})") from None
    if isinstance(result, CELEvalError):
        _explain(result, expr, "generic", ROUTING_INPUT)
        return
    if not isinstance(result, celtypes.BoolType):
        raise ConditionError(f"must be a bool expression, got {type(result).__name__.replace('Type', '').lower()}")
