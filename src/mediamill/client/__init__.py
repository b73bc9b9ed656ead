"""mediamill's Python SDK: a typed client of the HTTP API (sync :class:`Client`, async :class:`AsyncClient`).

::

    from mediamill.client import Client

    with Client("http://127.0.0.1:8000", "mm_…") as mm:
        job = mm.submit("clip.mp4", workflow="WF-VIDEO-TRANSCODE")
        done = mm.wait(job.id, timeout=600)
        for out in done.outputs:
            mm.download(job.id, out.name, "outputs/")
"""

from mediamill.client._core import ENDPOINTS, RetryPolicy
from mediamill.client.aio import AsyncClient
from mediamill.client.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    MediamillClientError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    UnsupportedMediaTypeError,
    UploadError,
    WaitTimeout,
)
from mediamill.client.models import (
    Breaker,
    BreakerReset,
    DeadLetter,
    Event,
    Job,
    JobAccepted,
    JobPriority,
    JobSummary,
    Me,
    Output,
    ProgressEvent,
    Queue,
    StatusEvent,
    StatusResult,
    Step,
    StepEvent,
    Worker,
    Workflow,
    WorkflowActivation,
    WorkflowDefinition,
    WorkflowDiff,
    WorkflowSaved,
    WorkflowValidation,
    WorkflowVersion,
)
from mediamill.client.sync import Client

__all__ = [
    "ENDPOINTS", "APIConnectionError", "APIError", "AsyncClient", "AuthenticationError", "BadRequestError", "Breaker",
    "BreakerReset", "Client", "ConflictError", "DeadLetter", "Event", "Job", "JobAccepted", "JobPriority", "JobSummary",
    "Me", "MediamillClientError", "NotFoundError", "Output", "PayloadTooLargeError", "PermissionDeniedError",
    "ProgressEvent", "Queue", "RateLimitError", "RetryPolicy", "ServerError", "ServiceUnavailableError", "StatusEvent",
    "StatusResult", "Step", "StepEvent", "UnprocessableEntityError", "UnsupportedMediaTypeError", "UploadError",
    "WaitTimeout", "Worker", "Workflow", "WorkflowActivation", "WorkflowDefinition", "WorkflowDiff", "WorkflowSaved",
    "WorkflowValidation", "WorkflowVersion",
]
