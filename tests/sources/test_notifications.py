"""Bucket event documents: MinIO's webhook body, AWS through SNS and EventBridge; signatures."""

from __future__ import annotations

import base64
import json

import pytest

from mediamill.errors import InvalidInput, Unauthorized
from mediamill.sources.notifications import created_objects, sign, subscription_url, verify

S3_EVENT = {"Records": [
    {"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "up"},
                                                 "object": {"key": "in/my+clip%281%29.mov", "size": 5, "eTag": "e1"}}},
    {"eventName": "s3:ObjectRemoved:Delete", "s3": {"bucket": {"name": "up"}, "object": {"key": "in/old.mov"}}},
    {"eventName": "ObjectCreated:CompleteMultipartUpload",
     "s3": {"bucket": {"name": "other"}, "object": {"key": "in/x.mov", "size": 1}}},
]}


def test_minio_and_aws_documents() -> None:
    found, ignored = created_objects(S3_EVENT, "up")
    assert [(v.path, v.fingerprint, v.size) for v in found] == [("in/my clip(1).mov", "etag:e1", 5)]
    assert ignored == 2  # a deletion, and another bucket
    sns = {"Type": "Notification", "MessageId": "m", "Message": json.dumps(S3_EVENT)}
    assert [v.path for v in created_objects(sns, "up")[0]] == ["in/my clip(1).mov"]
    bridge = {"detail-type": "Object Created", "source": "aws.s3",
              "detail": {"bucket": {"name": "up"}, "object": {"key": "in/b.mp4", "size": 9, "etag": "e2"}}}
    assert [(v.path, v.etag) for v in created_objects(bridge, "up")[0]] == [("in/b.mp4", "e2")]
    assert created_objects({"Event": "s3:TestEvent"}, "up") == ([], 0)  # a test event carries no records
    with pytest.raises(InvalidInput):
        created_objects({"Records": "nope"}, "up")
    with pytest.raises(InvalidInput):
        created_objects([], "up")


def test_signatures() -> None:
    body = b'{"Records": []}'
    verify("s3cret", body, {"authorization": "Bearer s3cret"})
    verify("s3cret", body, {"x-mediamill-signature": sign("s3cret", body)})
    verify("s3cret", body, {"authorization": "Basic " + base64.b64encode(b"sns:s3cret").decode()})
    for headers in ({}, {"authorization": "Bearer s3cre"}, {"authorization": "Basic s3cret"},
                    {"x-mediamill-signature": sign("s3cret", body + b"\n")}, {"x-mediamill-signature": "sha256=00"},
                    {"authorization": "Basic " + base64.b64encode(b"sns:nope").decode()},
                    {"authorization": "Basic %%"}):
        with pytest.raises(Unauthorized):
            verify("s3cret", body, headers)
    with pytest.raises(Unauthorized):
        verify(None, body, {"authorization": "Bearer "})


def test_sns_subscription_confirmation_is_handed_to_the_operator() -> None:
    doc = {"Type": "SubscriptionConfirmation", "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=x"}
    assert subscription_url(doc) == doc["SubscribeURL"]
    assert subscription_url({"Records": []}) is None
