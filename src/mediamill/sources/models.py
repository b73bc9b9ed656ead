"""What a source is: its JSON shape, validation, and the small templates sources and deliveries share."""

from __future__ import annotations

import fnmatch
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from mediamill.jsontypes import json_integer
from mediamill.workflows.naming import render_template

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
#: files no watcher should take: editors' and downloaders' temporary names
#: the location rules of :meth:`SourceSpec._location` in the OpenAPI schema, so a client (and a
#: schema-driven fuzzer) knows which bodies are valid before it sends one
_ABSOLUTE_OR_EMPTY = {"anyOf": [{"type": "null"}, {"type": "string", "pattern": "^(/|$)"}]}
LOCATION_SCHEMA: dict[str, Any] = {"oneOf": [
    {"properties": {"kind": {"const": "folder"}, "path": {"type": "string", "pattern": "^/"},
                    "url": {"type": "null"}, "done_dir": _ABSOLUTE_OR_EMPTY, "failed_dir": _ABSOLUTE_OR_EMPTY},
     "required": ["kind", "path"]},
    {"properties": {"kind": {"const": "bucket"}, "url": {"type": "string", "pattern": "^s3://[^/]"},
                    "path": {"type": "null"}},
     "required": ["kind", "url"]},
]}
#: integers as JSON Schema has them (``15.0`` is one, ``true`` is not), with their bounds
Priority = Annotated[int, Field(ge=0, le=100), Strict(False), BeforeValidator(json_integer)]
MaxQueue = Annotated[int, Field(gt=0, le=10_000_000), Strict(False), BeforeValidator(json_integer)]
TEMPORARY = ("*.part", "*.partial", "*.crdownload", "*.tmp", "*~", "*.swp", "*.filepart", "*.!qB")


class SourceSpec(BaseModel):
    """A source as the API and the CLI take it.

    ``folder`` sources name a ``path``; ``bucket`` sources a ``url`` (``s3://bucket/prefix``).
    ``patterns`` are globs matched against the file name (or, when they contain ``/``, the
    path relative to the source), case-insensitively. ``after`` says what happens to a file
    once its job is finished: ``keep`` it, ``move`` it to ``done_dir`` / ``failed_dir``, or
    ``delete`` it when the job succeeded.
    """

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=LOCATION_SCHEMA)

    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["folder", "bucket"]
    path: str | None = Field(default=None, max_length=4000, description="folder sources: the folder to watch")
    url: str | None = Field(default=None, max_length=4000, description="bucket sources: s3://bucket/prefix")
    patterns: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=50)
    recursive: bool = True
    after: Literal["keep", "move", "delete"] = "keep"
    done_dir: str | None = Field(default=None, max_length=4000,
                                 description='where "move" puts files of succeeded jobs (default: <path>/done)')
    failed_dir: str | None = Field(default=None, max_length=4000,
                                   description='where "move" puts files of failed jobs (default: <path>/failed)')
    workflow: str = Field(default="auto", max_length=50, description='a workflow code, or "auto" (routing rules)')
    priority: Priority | None = None
    metadata: dict[str, Any] = Field(default_factory=dict,
                                     description="job metadata; strings may use {name} {stem} {ext} {path} {dir} "
                                                 "{size} {source}")
    enabled: bool = True
    settle_seconds: float | None = Field(default=None, ge=0, le=3600,
                                         description="a file is taken once its size and mtime held this long")
    poll_seconds: float | None = Field(default=None, gt=0, le=86400,
                                       description="scan / listing interval (the fallback where no events arrive)")
    max_queue: MaxQueue | None = Field(default=None,
                                       description="stop taking files while the workflow's queue is this deep")
    polling: bool = Field(default=False, description="folder sources: never use file-system events "
                                                     "(network mounts that do not report changes)")

    @model_validator(mode="after")
    def _location(self) -> SourceSpec:
        if self.kind == "folder":
            if not self.path or self.url:
                raise ValueError('a folder source names "path" (and no "url")')
            if not Path(self.path).is_absolute():
                raise ValueError(f'"path" must be an absolute folder path, got {self.path!r}')
        else:
            if not self.url or self.path:
                raise ValueError('a bucket source names "url" (s3://bucket/prefix) and no "path"')
            bucket, _ = split_s3_url(self.url)
            if not bucket:
                raise ValueError(f'"url" must look like s3://bucket/prefix, got {self.url!r}')
        for d in (self.done_dir, self.failed_dir):
            if d and self.kind == "folder" and not Path(d).is_absolute():
                raise ValueError(f"done_dir / failed_dir must be absolute paths, got {d!r}")
        return self

    @property
    def location(self) -> str:
        return (self.path if self.kind == "folder" else self.url) or ""

    def config(self) -> dict[str, Any]:
        """Everything but name, kind, location and enabled (the ``sources.config`` column)."""
        return self.model_dump(exclude={"name", "kind", "path", "url", "enabled"})

    @classmethod
    def from_row(cls, row: Any) -> SourceSpec:
        loc = {"path": row["location"]} if row["kind"] == "folder" else {"url": row["location"]}
        return cls.model_validate({**(row["config"] or {}), "name": row["name"], "kind": row["kind"],
                                   "enabled": bool(row["enabled"]), **loc})

    def done_location(self) -> str:
        return self.done_dir or _join(self.location, "done")

    def failed_location(self) -> str:
        return self.failed_dir or _join(self.location, "failed")


class SourcePatch(BaseModel):
    """A change to a source: any field of :class:`SourceSpec` but ``kind``, with the same limits.

    A change whose fields are each valid but that does not fit the source as it is (a ``url``
    for a folder source, a relative ``done_dir``) is a conflict with the stored source (409).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    path: str | None = Field(default=None, max_length=4000)
    url: str | None = Field(default=None, max_length=4000)
    patterns: list[str] | None = Field(default=None, min_length=1, max_length=50)
    recursive: bool | None = None
    after: Literal["keep", "move", "delete"] | None = None
    done_dir: str | None = Field(default=None, max_length=4000)
    failed_dir: str | None = Field(default=None, max_length=4000)
    workflow: str | None = Field(default=None, max_length=50)
    priority: Priority | None = None
    metadata: dict[str, Any] | None = None
    enabled: bool | None = None
    settle_seconds: float | None = Field(default=None, ge=0, le=3600)
    poll_seconds: float | None = Field(default=None, gt=0, le=86400)
    max_queue: MaxQueue | None = None
    polling: bool | None = None


def _join(location: str, leaf: str) -> str:
    return location.rstrip("/") + "/" + leaf


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → (``bucket``, ``some/prefix/``); the prefix ends with / unless empty."""
    if not url.startswith("s3://"):
        return "", ""
    bucket, _, prefix = url[len("s3://"):].partition("/")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


def matches(patterns: list[str], relative: str) -> bool:
    """Does a file (path relative to the source, with /) match one of the globs? Hidden and temporary
    files never do: they are what copy tools write before the real name appears."""
    name = PurePosixPath(relative).name
    if any(part.startswith(".") for part in PurePosixPath(relative).parts):
        return False
    low_name, low_rel = name.lower(), relative.lower()
    if any(fnmatch.fnmatchcase(low_name, t.lower()) for t in TEMPORARY):
        return False
    return any(fnmatch.fnmatchcase(low_rel if "/" in p else low_name, p.lower()) for p in patterns)


def file_fields(relative: str, *, size: int | None, source: str) -> dict[str, Any]:
    """The names a metadata or delivery template may use for a source file."""
    p = PurePosixPath(relative)
    return {"name": p.name, "stem": p.stem, "ext": p.suffix.lstrip("."), "path": relative,
            "dir": "" if str(p.parent) == "." else str(p.parent), "size": size, "source": source}


def render_metadata(template: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """The job metadata of a source file: string values rendered, everything else as given."""
    out: dict[str, Any] = {}
    for key, value in template.items():
        if isinstance(value, str):
            out[key] = render_template(value, fields, strict=False)
        elif isinstance(value, dict):
            out[key] = render_metadata(value, fields)
        else:
            out[key] = value
    return out
