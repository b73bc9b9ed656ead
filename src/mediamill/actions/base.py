"""What a step does: the action interface, the registry, and the ``@action`` decorator.

An action is a plain function ``fn(ctx: StepContext) -> StepResult``. It reads
``ctx.input_path`` (or an earlier step's output via ``ctx.source_path``), writes files into
``ctx.work_dir``, reports progress with ``ctx.progress(percent)`` and returns a
``StepResult``. It raises a ``MediamillError`` subclass to fail with a class; anything else
is classified ``internal``. Actions never touch the database or storage: the engine moves
files in and out and records outputs.

Fusion: actions declaring the same ``fuse`` key may be run as one unit by the group's
fuser (``register_fuser``) — e.g. three ``transcode_video`` steps become one ffmpeg process
with one decode, and a PDF's validate, text and thumbnail steps share one open of it (on the job inputs the
fuser names). The fuser returns one StepResult per step, so every step keeps its own execution record and
output; a fused run that fails is run again step by step, to find out which step failed.
"""

from __future__ import annotations

import difflib
import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mediamill.config import MediaLimits
from mediamill.media.sniff import accepts


@lru_cache(maxsize=1)
def default_limits() -> MediaLimits:
    """The limits from the environment, read once (reading settings is far too slow per step)."""
    return MediaLimits()


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class OutputFile:
    """A file a step produced, in ``ctx.work_dir``; the engine stores it and records a job_outputs row."""

    name: str  # unique within the job, e.g. "video_720p.mp4"
    path: Path
    mime_type: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class StoredOutput(OutputFile):
    """An earlier step's output as the engine stored it: its size and SHA-256 as measured while it was stored (a
    step that describes outputs need not read them again)."""

    bytes: int | None = None
    checksum: str | None = None


@dataclass
class StepResult:
    outputs: list[OutputFile] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # JSON-able facts (probe results, counts …)


@dataclass
class PriorStep:
    """What an earlier step of the same job produced (available to later steps and to `when:`)."""

    name: str
    action: str
    status: str
    data: dict[str, Any]
    outputs: list[OutputFile]  # StoredOutput when the engine stored them (a fused run's earlier steps: not yet)


@dataclass
class StepContext:
    input_path: Path
    input_mime: str
    work_dir: Path
    params: Any  # the action's validated params model instance
    step_name: str
    job: dict[str, Any] = field(default_factory=dict)  # id, job_code, priority, metadata, submitter
    previous: list[PriorStep] = field(default_factory=list)
    limits: MediaLimits = field(default_factory=lambda: default_limits())
    progress: Callable[[float], None] = lambda _pct: None
    timeout_seconds: float | None = None
    attempt: int = 0  # 0 on the first run of this step, 1 on the first retry …
    action: str = ""  # the action this step runs (fusers use it to tell steps apart)

    def source_path(self, mime_prefix: str) -> tuple[Path, str]:
        """The most recent primary output whose MIME starts with ``mime_prefix``, else the input.

        Lets chained steps work on their predecessor's result (resize → optimize → convert).
        """
        for prior in reversed(self.previous):
            if prior.status != "completed" or not prior.data.get("chainable", False):
                continue
            for out in prior.outputs:
                if out.mime_type.startswith(mime_prefix):
                    return out.path, out.mime_type
        return self.input_path, self.input_mime

    def prior_data(self, action: str) -> dict[str, Any] | None:
        for prior in reversed(self.previous):
            if prior.action == action and prior.status == "completed":
                return prior.data
        return None


ActionFn = Callable[[StepContext], StepResult]
Fuser = Callable[[Sequence[StepContext]], list[StepResult]]


@dataclass(frozen=True)
class ActionSpec:
    name: str
    fn: ActionFn
    params: type[BaseModel]
    family: str  # video | image | audio | document | analysis | test | generic
    errors: tuple[str, ...] = ("invalid_input", "internal")
    idempotent: bool = True
    isolated: bool = True  # False = cheap enough to run in the worker process itself
    fuse: str | None = None
    description: str = ""
    splittable: bool = False  # accepts ``parallel:`` (chunked encode on several workers)
    # False = never opens the job's input file (it works from params or earlier steps' results): a worker on
    # object storage then does not download the input for a job made only of such steps
    reads_input: bool = True
    # False = never opens earlier steps' output files (it lists or describes them: names, types, the size and
    # checksum they were stored with): a worker on object storage then does not download them for the step
    reads_outputs: bool = True

    def validate_params(self, raw: dict[str, Any] | None) -> BaseModel:
        return self.params.model_validate(raw or {})


_ACTIONS: dict[str, ActionSpec] = {}
_FUSERS: dict[str, Fuser] = {}
_FUSER_INPUTS: dict[str, list[str]] = {}  # fuse key -> the job inputs it runs on
_PLUGINS: dict[str, dict[str, str]] = {}  # action name -> the entry point that registered it
_loaded = False


def action(
    name: str,
    *,
    params: type[BaseModel] = NoParams,
    family: str = "generic",
    errors: Sequence[str] = ("invalid_input", "internal"),
    idempotent: bool = True,
    isolated: bool = True,
    fuse: str | None = None,
    splittable: bool = False,
    reads_input: bool = True,
    reads_outputs: bool = True,
) -> Callable[[ActionFn], ActionFn]:
    """Register a step action. Users' packages can do the same and expose a ``mediamill.actions``
    entry point pointing at the module that holds their decorated functions."""

    def register(fn: ActionFn) -> ActionFn:
        _ACTIONS[name] = ActionSpec(
            name=name, fn=fn, params=params, family=family, errors=tuple(errors),
            idempotent=idempotent, isolated=isolated, fuse=fuse, splittable=splittable, reads_input=reads_input,
            reads_outputs=reads_outputs, description=(fn.__doc__ or "").strip().split("\n")[0],
        )
        return fn

    return register


def register_fuser(key: str, *, inputs: tuple[str, ...] = ("*/*",)) -> Callable[[Fuser], Fuser]:
    """Register the fuser of the steps whose actions declare ``fuse=key``. ``inputs``: the job inputs (sniffed
    MIME types; ``*/*``, ``image/*`` or exact types) on which the steps run as one unit; on any other they run
    one by one — where a fused run would gain little, and one failed step would have the whole run done again
    step by step."""

    def register(fn: Fuser) -> Fuser:
        _FUSERS[key] = fn
        _FUSER_INPUTS[key] = list(inputs)
        return fn

    return register


def fuses(key: str, input_mime: str | None) -> bool:
    """Whether steps of fuse key ``key`` run as one unit on a job whose input is ``input_mime``."""
    load_actions()
    return key in _FUSERS and accepts(_FUSER_INPUTS[key], input_mime or "")


def load_actions() -> dict[str, ActionSpec]:
    """Import the built-in action modules and every ``mediamill.actions`` entry point (once)."""
    global _loaded
    if not _loaded:
        _loaded = True
        import mediamill.actions.builtin  # noqa: F401  (registers by import)

        for ep in importlib.metadata.entry_points(group="mediamill.actions"):
            before = set(_ACTIONS)
            ep.load()
            origin = {"package": ep.dist.name if ep.dist else "", "entry_point": f"{ep.name} = {ep.value}"}
            _PLUGINS.update(dict.fromkeys(set(_ACTIONS) - before, origin))
    return _ACTIONS


def plugin_of(name: str) -> dict[str, str] | None:
    """The package and entry point that registered an action; None for built-in actions."""
    load_actions()
    return _PLUGINS.get(name)


def get_action(name: str) -> ActionSpec | None:
    return load_actions().get(name)


def get_fuser(key: str) -> Fuser | None:
    load_actions()
    return _FUSERS.get(key)


def params_error(spec: ActionSpec, raw: dict[str, Any] | None) -> list[str]:
    """Located problems with a step's params ([] when valid), every one of them, each actionable."""
    try:
        spec.validate_params(raw)
        return []
    except ValidationError as exc:
        return [_param_problem(spec, dict(err)) for err in exc.errors()]


def _param_problem(spec: ActionSpec, err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    where = f"params.{loc}" if loc else "params"
    valid = list(spec.params.model_fields)
    if err["type"] == "extra_forbidden":
        name = str(err["loc"][-1])
        hint = did_you_mean(name, valid)
        listing = f"{spec.name} takes {', '.join(valid)}" if valid else f"{spec.name} takes no parameters"
        return f"{where}: unknown parameter{hint}; {listing}"
    if err["type"] == "literal_error":
        return f"{where}: expected {err['ctx']['expected'].replace(' or ', ', ')}, got {err['input']!r}"
    got = err.get("input")
    shown = f", got {got!r}" if err["type"] != "missing" and not isinstance(got, dict | list) else ""
    return f"{where}: {err['msg']}{shown}"


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or nothing when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_action_message(name: str, actions: dict[str, ActionSpec]) -> str:
    return f"unknown action {name!r}{did_you_mean(name, sorted(actions))}; `mediamill actions` lists them all"
