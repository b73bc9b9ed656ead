"""Imports every built-in action module so their ``@action`` decorators register."""

from mediamill.actions import (  # noqa: F401
    analysis,
    audio,
    deliver,
    document,
    finalize,
    http,
    image,
    testing,
    video,
)
