"""deliver: copy a finished job's outputs to the workflow's ``deliver:`` destination.

Declared here so workflows can name it and validation knows it; the engine runs it itself
(``mediamill.engine.delivery``), because delivering needs storage and the job's output records,
which actions never touch.
"""

from __future__ import annotations

from mediamill.actions.base import StepContext, StepResult, action
from mediamill.errors import InternalError
from mediamill.workflows.models import DELIVER_ACTION


@action(DELIVER_ACTION, family="generic", isolated=False, errors=("transient", "invalid_input"))
def deliver(ctx: StepContext) -> StepResult:
    """Copy the job's outputs to the workflow's deliver: destination (run by the engine)."""
    raise InternalError("the deliver step is run by the engine, not as an action")
