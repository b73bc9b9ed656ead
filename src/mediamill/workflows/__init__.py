"""Workflow definitions: the YAML format, validation with located messages, CEL conditions."""

from mediamill.workflows.loader import load_workflow_file, parse_workflow
from mediamill.workflows.models import StepDef, WorkflowDef

__all__ = ["StepDef", "WorkflowDef", "load_workflow_file", "parse_workflow"]
