"""Imports every built-in action module so their ``@action`` decorators register."""

from mediamill.actions import testing  # noqa: F401
