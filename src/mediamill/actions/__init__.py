"""Step actions: one module per media family, one function per action."""

from mediamill.actions.base import (
    ActionSpec,
    OutputFile,
    PriorStep,
    StepContext,
    StepResult,
    action,
    get_action,
    load_actions,
    register_fuser,
)

__all__ = [
    "ActionSpec", "OutputFile", "PriorStep", "StepContext", "StepResult", "action", "get_action",
    "load_actions", "register_fuser",
]
