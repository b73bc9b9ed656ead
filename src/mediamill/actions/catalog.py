"""The action catalogue: what every registered action is called, what it takes and how it fails.

Plain data for `mediamill actions`, ``GET /v1/actions`` and the dashboard's editor palette. The
parameter schema is the JSON Schema of the action's params model (names, types, defaults,
allowed values, bounds); ``params`` flattens it to one row per parameter for people.
"""

from __future__ import annotations

from typing import Any

from mediamill.actions.base import ActionSpec, load_actions, plugin_of

_NO_VALUE = object()


def describe_actions(*, family: str | None = None) -> list[dict[str, Any]]:
    """Every registered action (built-in and plug-in), by family then name."""
    specs = sorted(load_actions().values(), key=lambda s: (s.family, s.name))
    return [describe_action(s) for s in specs if family is None or s.family == family]


def describe_action(spec: ActionSpec) -> dict[str, Any]:
    schema = spec.params.model_json_schema()
    return {
        "name": spec.name,
        "family": spec.family,
        "description": spec.description,
        "params_schema": schema,
        "params": param_rows(schema),
        "errors": list(spec.errors),
        "isolated": spec.isolated,
        "idempotent": spec.idempotent,
        "fuse": spec.fuse,
        "plugin": plugin_of(spec.name),
    }


def param_rows(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per parameter: name, type, required, default, allowed values, bounds, description."""
    required = set(schema.get("required", []))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        prop = _resolve(prop, schema)
        variants = [_resolve(v, schema) for v in prop.get("anyOf", [prop])]
        concrete = [v for v in variants if v.get("type") != "null"] or variants
        rows.append({
            "name": name,
            "type": " | ".join(_type_of(v) for v in concrete) + (" | null" if len(concrete) < len(variants) else ""),
            "required": name in required,
            "default": prop.get("default"),
            "allowed": next((v["enum"] for v in [prop, *concrete] if "enum" in v), None),
            "bounds": _bounds([prop, *concrete]),
            "description": prop.get("description", ""),
        })
    return rows


def _resolve(prop: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref", "")
    if ref.startswith("#/$defs/"):
        return {**schema.get("$defs", {}).get(ref.split("/")[-1], {}), **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop


def _type_of(variant: dict[str, Any]) -> str:
    kind = variant.get("type", "any")
    if kind == "array":
        return f"list of {_type_of(variant.get('items', {}))}"
    return str(kind)


def _bounds(variants: list[dict[str, Any]]) -> str:
    marks = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"),
             ("minLength", "length ≥"), ("maxLength", "length ≤"), ("pattern", "matches"))
    out = []
    for key, mark in marks:
        value = next((v[key] for v in variants if key in v), _NO_VALUE)
        if value is not _NO_VALUE:
            out.append(f"{mark} {value}")
    return ", ".join(out)
