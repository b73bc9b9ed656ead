"""Where a job submitted without a workflow goes — one decision used by submit and by ``explain``.

Order: the tenant's enabled routing rules by position (the first whose condition holds and whose
workflow accepts the input wins); else the single active workflow that accepts the sniffed type;
else the review queue, never dropped. Every evaluated condition is kept, so the job's ``routing``
event shows why it went where it went.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mediamill.errors import SHORT_MESSAGE, Conflict, InvalidCondition, InvalidInput, NotFound
from mediamill.media.sniff import accepts, canonical
from mediamill.store import routing_repo, workflow_repo
from mediamill.store.db import Connection
from mediamill.store.routing_repo import REVIEW_CODE, REVIEW_QUEUE, tenant_rules, visible_workflows
from mediamill.workflows.conditions import (
    ConditionError,
    check_routing_condition,
    evaluate_condition,
    routing_variables,
)

__all__ = ["REVIEW_CODE", "REVIEW_QUEUE", "RoutingDecision", "RoutingFacts", "ambiguity_warnings", "candidates_for",
           "decide", "validate_rule", "visible_workflows"]


@dataclass(frozen=True)
class RoutingFacts:
    """What routing knows about a submission (nothing is probed yet)."""

    mime: str | None
    size: int | None
    filename: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    submitter: str | None = None
    priority: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RoutingDecision:
    """The outcome: ``decision`` is how (``rule`` | ``type`` | ``review``), ``workflow`` where."""

    decision: str
    workflow: str
    reason: str
    candidates: list[str]
    rule: str | None = None
    rule_id: int | None = None
    version: int | None = None  # a rule's version pin
    evaluated: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The public ``routing`` object of a job and of the 202 answer."""
        return {"decision": self.decision, "workflow": self.workflow, "rule": self.rule, "reason": self.reason,
                "candidates": self.candidates}

    def event(self) -> dict[str, Any]:
        """The ``routing`` event: the decision plus every condition evaluated on the way."""
        return {**self.as_dict(), "rule_id": self.rule_id, "version": self.version, "evaluated": self.evaluated}


def candidates_for(conn: Connection, tenant_id: str, mime: str | None) -> list[str]:
    """Active workflows of the tenant that name the type explicitly (``*/*`` catch-alls do not count)."""
    if not mime:
        return []
    return [code for code in visible_workflows(conn, tenant_id) if _accepts(conn, code, mime)]


def _accepts(conn: Connection, code: str, mime: str) -> bool:
    wf = workflow_repo.current_workflow(conn, code).definition
    return "*/*" not in wf.input_types and accepts(wf.input_types, mime)


def decide(conn: Connection, *, tenant_id: str, facts: RoutingFacts) -> RoutingDecision:
    """Route one submission (see the module docstring for the order)."""
    variables = routing_variables(mime=facts.mime or "", size=facts.size or 0, filename=facts.filename or "",
                                  metadata=facts.metadata, tenant=tenant_id, submitter=facts.submitter or "",
                                  priority=facts.priority, params=facts.params)
    visible = set(visible_workflows(conn, tenant_id))
    evaluated: list[dict[str, Any]] = []
    for rule in tenant_rules(conn, tenant_id):
        outcome = _evaluate(conn, rule, variables, visible, facts.mime)
        evaluated.append(outcome)
        if outcome["result"] is True and "skipped" not in outcome:
            return RoutingDecision("rule", rule["workflow_code"], f"rule {_rule_name(rule)!r} matched",
                                   candidates_for(conn, tenant_id, facts.mime), rule=_rule_name(rule),
                                   rule_id=rule["id"], version=rule["version"], evaluated=evaluated)
    return _by_type(conn, tenant_id, facts.mime, evaluated)


def _rule_name(rule: dict[str, Any]) -> str:
    return str(rule["name"] or f"rule-{rule['id']}")


def _evaluate(conn: Connection, rule: dict[str, Any], variables: dict[str, Any], visible: set[str],
              mime: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"rule": _rule_name(rule), "id": rule["id"], "condition": rule["condition"],
                           "workflow": rule["workflow_code"]}
    try:
        out["result"] = evaluate_condition(rule["condition"], variables)
    except ConditionError as exc:
        out.update(result=None, error=str(exc)[:SHORT_MESSAGE])
        return out
    except Exception as exc:  # a rule must never fail a submission: it just does not match
        out.update(result=None, error=f"{type(exc).__name__}: {exc}"[:SHORT_MESSAGE])
        return out
    if out["result"] and rule["workflow_code"] not in visible:
        out["skipped"] = f"{rule['workflow_code']} is not an active workflow"
    elif out["result"] and mime and not _accepts_loose(conn, rule["workflow_code"], mime):
        out["skipped"] = f"{rule['workflow_code']} does not accept {canonical(mime)}"
    return out


def _accepts_loose(conn: Connection, code: str, mime: str) -> bool:
    return accepts(workflow_repo.current_workflow(conn, code).definition.input_types, mime)


def _by_type(conn: Connection, tenant_id: str, mime: str | None, evaluated: list[dict[str, Any]]) -> RoutingDecision:
    candidates = candidates_for(conn, tenant_id, mime)
    kind = canonical(mime) if mime else "an unknown type (not sniffed yet)"
    no_rule = "no routing rule matched" if evaluated else "no routing rules"
    if len(candidates) == 1:
        return RoutingDecision("type", candidates[0], f"{no_rule}; {candidates[0]} is the only workflow "
                               f"accepting {kind}", candidates, evaluated=evaluated)
    if candidates:
        reason = (f"{no_rule}; {len(candidates)} workflows accept {kind}: {', '.join(candidates)} — "
                  f"route the job, or add a rule that chooses")
    else:
        reason = f"{no_rule}; no workflow accepts {kind}"
    return RoutingDecision("review", REVIEW_CODE, reason, candidates, evaluated=evaluated)


def validate_rule(conn: Connection, tenant_id: str, values: dict[str, Any], rule_id: int | None = None) -> None:
    """Check a rule (or the changed fields of one) before it is saved: condition, workflow, version, name."""
    if values.get("condition") is not None:
        try:
            check_routing_condition(values["condition"])
        except ConditionError as exc:
            raise InvalidCondition(str(exc), position=exc.position) from None
    if values.get("workflow") is not None:
        if values["workflow"] not in visible_workflows(conn, tenant_id):
            raise InvalidInput(f"workflow: no active workflow {values['workflow']!r}")
        if values.get("version") is not None:
            try:
                workflow_repo.get_workflow(conn, values["workflow"], values["version"])
            except NotFound as exc:
                raise InvalidInput(f"version: {exc.message}") from None
    if values.get("name") and routing_repo.name_taken(conn, tenant_id, values["name"], rule_id):
        raise Conflict(f"a routing rule named {values['name']!r} exists")


def ambiguity_warnings(conn: Connection, code: str, tenant_id: str | None) -> list[str]:
    """After saving ``code``: the types it accepts that now have several candidates and no rule for them.

    Each warning names the rule to add, so submissions without a workflow do not land in review."""
    wf = workflow_repo.current_workflow(conn, code).definition
    if "*/*" in wf.input_types or code == REVIEW_CODE:
        return []
    tenant = tenant_id or "default"
    warnings = []
    for mime in wf.input_types:
        sample = mime.replace("/*", "/x-any")
        others = [c for c in candidates_for(conn, tenant, sample) if c != code]
        if not others or _ruled(conn, tenant, sample):
            continue
        family = mime.split("/")[0]
        test = f"input.mime.startsWith('{family}/')" if mime.endswith("/*") else f"input.mime == '{mime}'"
        warnings.append(
            f"{mime} is now accepted by {code} and {', '.join(others)}: submissions without a workflow will wait "
            f"in review. Add a rule, e.g. mediamill routes add --name {family}-default "
            f"--condition \"{test}\" --workflow {code}")
    return warnings


def _ruled(conn: Connection, tenant_id: str, mime: str) -> bool:
    """Does an enabled rule send a plain submission of this type somewhere?"""
    decision = decide(conn, tenant_id=tenant_id, facts=RoutingFacts(mime=mime, size=0, filename=""))
    return decision.decision == "rule"
