"""S3 / MinIO bucket event notifications posted to ``/v1/sources/{id}/events``.

The body is the S3 event format (``{"Records": [{"eventName": "s3:ObjectCreated:Put", "s3":
{"bucket": {"name": …}, "object": {"key": …, "size": …, "eTag": …}}}]}``) as MinIO's webhook
target sends it, or that document wrapped by SNS (``Message``) or an EventBridge "Object Created"
event, as AWS delivers it over HTTPS. Each source has its own secret; a
request proves it knows it either way:

* ``Authorization: Bearer <secret>`` — MinIO's webhook ``auth_token``;
* ``Authorization: Basic …`` with the secret as the password — SNS, from an endpoint URL like
  ``https://sns:<secret>@host/v1/sources/1/events``;
* ``X-Mediamill-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with the secret>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import unquote_plus

from mediamill.errors import InvalidInput, Unauthorized
from mediamill.sources.backends import FileVersion, version_of

SIGNATURE_HEADER = "x-mediamill-signature"


def sign(secret: str, body: bytes) -> str:
    """The ``X-Mediamill-Signature`` value of a body (what a sender computes)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str | None, body: bytes, headers: Any) -> None:
    """Raise Unauthorized unless the request carries the source's secret or a valid signature of the body."""
    if not secret:
        raise Unauthorized("this source does not accept events")
    auth = headers.get("authorization") or ""
    if auth.lower().startswith("bearer ") and hmac.compare_digest(auth[7:].strip().encode(), secret.encode()):
        return
    if auth.lower().startswith("basic ") and hmac.compare_digest(_basic_password(auth[6:]), secret.encode()):
        return
    given = headers.get(SIGNATURE_HEADER) or ""
    if given and hmac.compare_digest(given.strip().encode(), sign(secret, body).encode()):
        return
    raise Unauthorized("the event is not signed with this source's secret")


def _basic_password(value: str) -> bytes:
    """The password of HTTP basic credentials (SNS puts the user:password of the endpoint URL there)."""
    try:
        return base64.b64decode(value.strip(), validate=True).partition(b":")[2]
    except (ValueError, binascii.Error):
        return b""


def subscription_url(document: Any) -> str | None:
    """An SNS subscription confirmation's SubscribeURL (an operator opens it; mediamill fetches no URL it is
    sent)."""
    if isinstance(document, dict) and document.get("Type") == "SubscriptionConfirmation":
        return str(document.get("SubscribeURL") or "") or None
    return None


def created_objects(document: Any, bucket: str) -> tuple[list[FileVersion], int]:
    """Object-created records of ``bucket`` as file versions, and how many records were ignored."""
    if not isinstance(document, dict):
        raise InvalidInput("expected an S3 event notification (a JSON object with Records)")
    document = _unwrap(document)
    records = document.get("Records")
    if records is None:
        return [], 0  # MinIO's and AWS's test events carry no records
    if not isinstance(records, list):
        raise InvalidInput("Records must be a list")
    found: list[FileVersion] = []
    ignored = 0
    for record in records:
        version = _version(record, bucket)
        if version is None:
            ignored += 1
        else:
            found.append(version)
    return found, ignored


def _unwrap(document: dict[str, Any]) -> dict[str, Any]:
    """AWS delivers through SNS (the S3 event is a JSON string in ``Message``) or EventBridge (``detail``)."""
    if document.get("Type") == "Notification" and isinstance(document.get("Message"), str):
        try:
            inner = json.loads(document["Message"])
        except ValueError:
            raise InvalidInput("the SNS Message is not JSON") from None
        return inner if isinstance(inner, dict) else {}
    detail = document.get("detail")
    if document.get("detail-type") == "Object Created" and isinstance(detail, dict):
        obj = detail.get("object") or {}
        return {"Records": [{"eventName": "ObjectCreated:EventBridge", "s3": {
            "bucket": detail.get("bucket") or {}, "object": {"key": obj.get("key"), "size": obj.get("size"),
                                                             "eTag": obj.get("etag")}}}]}
    return document


def _version(record: Any, bucket: str) -> FileVersion | None:
    if not isinstance(record, dict) or "ObjectCreated" not in str(record.get("eventName", "")):
        return None
    s3 = record.get("s3") or {}
    if (s3.get("bucket") or {}).get("name") != bucket:
        return None
    obj = s3.get("object") or {}
    key = obj.get("key")
    if not isinstance(key, str) or not key:
        return None
    size = obj.get("size")
    return version_of(unquote_plus(key), obj.get("eTag") or obj.get("etag"), int(size) if size is not None else None)
