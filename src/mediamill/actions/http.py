"""http_request: call an external service with the job's facts (a generic integration step).

The URL goes through the SSRF guard (``mediamill.netguard``): private and loopback addresses
are refused unless ``MEDIAMILL_URL_ALLOWLIST`` names them, and every connection is checked at
dial time. 5xx/429 and network failures are ``transient`` (retried with ``on_failure: retry``);
other 4xx are ``invalid_input``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mediamill.actions.base import StepContext, StepResult, action
from mediamill.config import load_settings
from mediamill.errors import InvalidInput, StepTimeout, TransientError
from mediamill.netguard import UnresolvableHost, check_url, guarded_client

_MAX_BODY = 64 * 1024  # what we keep of the response in the step's data


class HttpRequestParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=8, max_length=2048)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=10.0, gt=0, le=300)
    include_steps: bool = Field(default=True, description="send earlier steps' data and output names")

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


def _payload(ctx: StepContext) -> dict[str, Any]:
    body: dict[str, Any] = {"job": ctx.job, "step": ctx.step_name}
    if ctx.params.include_steps:
        body["steps"] = [{"name": p.name, "action": p.action, "status": p.status, "data": p.data,
                          "outputs": [{"name": o.name, "mime_type": o.mime_type, "metadata": o.metadata}
                                      for o in p.outputs]} for p in ctx.previous]
    return body


def _classify(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    reason = f"{response.request.method} {response.request.url.host} answered {status}"
    if status >= 500 or status in (408, 425, 429):
        raise TransientError(reason)
    raise InvalidInput(reason)


def _send(ctx: StepContext, allowlist: str, proxy: str | None) -> httpx.Response:
    p: HttpRequestParams = ctx.params
    body = json.dumps(_payload(ctx), default=str)
    headers = {"content-type": "application/json", "user-agent": "mediamill", **p.headers}
    with guarded_client(allowlist, timeout=p.timeout, proxy=proxy) as client:
        if p.method in ("GET", "DELETE"):
            params = {"job_id": str(ctx.job.get("id", "")), "job_code": str(ctx.job.get("job_code", ""))}
            return client.request(p.method, p.url, headers=headers, params=params)
        return client.request(p.method, p.url, headers=headers, content=body)


@action("http_request", params=HttpRequestParams, family="generic", idempotent=False,
        errors=("invalid_input", "transient", "timeout"), reads_input=False, reads_outputs=False)
def http_request(ctx: StepContext) -> StepResult:
    """Send the job's metadata to a URL (GET query or JSON body); non-2xx fails with a class."""
    settings = load_settings()
    allowlist = settings.url_allowlist
    try:
        check_url(ctx.params.url, allowlist)
        response = _send(ctx, allowlist, settings.outbound_proxy or None)
    except UnresolvableHost as exc:
        raise TransientError(exc.message) from exc
    except httpx.TimeoutException as exc:
        raise StepTimeout(f"no answer from {httpx.URL(ctx.params.url).host} within {ctx.params.timeout} s") from exc
    except httpx.TransportError as exc:
        raise TransientError(f"cannot reach {httpx.URL(ctx.params.url).host}: {type(exc).__name__}") from exc
    _classify(response)
    data: dict[str, Any] = {"status_code": response.status_code, "elapsed_ms":
                            round(response.elapsed.total_seconds() * 1000, 1)}
    text = response.text[:_MAX_BODY]
    try:
        data["response"] = json.loads(text)
    except ValueError:
        data["response_text"] = text
    ctx.progress(100.0)
    return StepResult(data=data)
