"""Compare the SDK (its endpoint table and models) with an OpenAPI document; every disagreement is
one line of the returned list."""

from __future__ import annotations

from typing import Any

from mediamill.client import _core
from mediamill.client import models as m

LOOSE = {"Loose"}  # a documented "any object": nothing to compare


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def response_schema_name(doc: dict[str, Any], operation: dict[str, Any]) -> str | None:
    """The named schema an operation's JSON answer (or each of its ``items``) uses, if any."""
    for code, response in operation.get("responses", {}).items():
        if not code.startswith("2"):
            continue
        schema = response.get("content", {}).get("application/json", {}).get("schema", {})
        name = _ref_name(schema)
        if name is None:
            return None
        component = doc["components"]["schemas"].get(name, {})
        inner = component.get("properties", {}).get("items", {}).get("items", {})
        if component.get("properties", {}).get("items", {}).get("type") == "array" and _ref_name(inner):
            name = _ref_name(inner)
        return None if name in LOOSE else name
    return None


def _types(schema: dict[str, Any]) -> frozenset[str]:
    """A property's types: JSON types, ``$Name`` for references, ``null`` when nullable."""
    if "anyOf" in schema or "oneOf" in schema:
        out: set[str] = set()
        for option in schema.get("anyOf", schema.get("oneOf", [])):
            out |= _types(option)
        return frozenset(out)
    name = _ref_name(schema)
    if name:
        return frozenset({f"${name}"})
    kind = schema.get("type")
    if isinstance(kind, list):
        return frozenset(kind)
    if kind == "array":
        return frozenset({"array"} | {f"array of {t}" for t in _types(schema.get("items", {}))})
    return frozenset({kind}) if kind else frozenset({"any"})


def model_problems(doc: dict[str, Any], model: type[m.Model]) -> list[str]:
    """How a model and the component it mirrors differ (fields, required fields, types)."""
    name = model.__schema__
    assert name is not None
    component = doc.get("components", {}).get("schemas", {}).get(name)
    if component is None:
        return [f"{model.__name__}: the document has no schema {name}"]
    ours = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    problems: list[str] = []
    theirs_props, ours_props = component.get("properties", {}), ours.get("properties", {})
    for field in sorted(set(theirs_props) - set(ours_props)):
        problems.append(f"{model.__name__}: {name}.{field} is not in the SDK model")
    for field in sorted(set(ours_props) - set(theirs_props)):
        problems.append(f"{model.__name__}: field {field} is not in {name}")
    if set(component.get("required", [])) != set(ours.get("required", [])):
        problems.append(f"{model.__name__}: required {sorted(ours.get('required', []))} != "
                        f"{name} required {sorted(component.get('required', []))}")
    for field in sorted(set(theirs_props) & set(ours_props)):
        t_ours = _types(ours_props[field])
        t_theirs = {t if not t.startswith("$") else f"${_alias(t[1:])}" for t in _types(theirs_props[field])}
        if t_ours != t_theirs:
            problems.append(f"{model.__name__}.{field}: {sorted(t_ours)} != {name}.{field}: {sorted(t_theirs)}")
    return problems


def _alias(schema_name: str) -> str:
    """The SDK model name that mirrors a document schema (``JobLinks`` is ``JobLinks``…)."""
    for model in _mirrored_models():
        if model.__schema__ == schema_name:
            return model.__name__
    return schema_name


def _mirrored_models() -> list[type[m.Model]]:
    return [obj for obj in vars(m).values()
            if isinstance(obj, type) and issubclass(obj, m.Model) and obj.__schema__ is not None]


def drift(doc: dict[str, Any]) -> list[str]:
    """Every way the SDK and the document disagree."""
    problems: list[str] = []
    for key, endpoint in _core.ENDPOINTS.items():
        operation = doc.get("paths", {}).get(endpoint.path, {}).get(endpoint.method.lower())
        if operation is None:
            if not endpoint.pending:
                problems.append(f"{key}: {endpoint.method} {endpoint.path} is not in the document")
            continue
        params = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
        problems.extend(f"{key}: query parameter {q!r} is not documented" for q in endpoint.query if q not in params)
        documented = response_schema_name(doc, operation)
        mirrored = endpoint.model.__schema__ if endpoint.model is not None else None
        if documented != mirrored:
            problems.append(f"{key}: the document answers with schema {documented}, "
                            f"the SDK reads {endpoint.model.__name__ if endpoint.model else 'untyped JSON'} "
                            f"(mirroring {mirrored})")
    for model in _mirrored_models():
        problems.extend(model_problems(doc, model))
    submit = doc.get("components", {}).get("schemas", {}).get("JobSubmit", {}).get("properties", {})
    problems.extend(f"submit: JobSubmit has no field {f!r}" for f in _core.SUBMIT_FIELDS if f not in submit)
    return problems
