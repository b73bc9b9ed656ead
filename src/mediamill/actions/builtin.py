"""Imports every built-in action module so their ``@action`` decorators register."""

from mediamill.actions import (  # noqa: F401
    audio,
    document,
    image,
    testing,
    video,
)
