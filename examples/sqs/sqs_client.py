"""The SQS client the example's producer and consumer share.

Against AWS it signs with the standard credential chain (environment, AWS_PROFILE, ~/.aws, a
role) like any AWS program. Against a local endpoint that speaks the SQS API (moto's server,
ElasticMQ), which checks no signature, it signs with placeholder credentials unless the
environment has keys: a replica started by docktor's processes backend sees only PATH, HOME,
LANG, LC_*, TZ and its service's `env`, never the worker's secrets.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit

import botocore.session
from botocore.config import Config

AWS_HOST = re.compile(r"(^|\.)amazonaws\.com(\.cn)?$")
DEFAULT_QUEUE_URL = "http://127.0.0.1:5000/123456789012/jobs"


def is_local(queue_url: str) -> bool:
    return not AWS_HOST.search(urlsplit(queue_url).hostname or "")


def client(queue_url: str, region: str) -> Any:
    parts = urlsplit(queue_url)
    keys: dict[str, str] = {}
    if is_local(queue_url) and "AWS_ACCESS_KEY_ID" not in os.environ:
        keys = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
    return botocore.session.Session().create_client(
        "sqs",
        region_name=region,
        endpoint_url=f"{parts.scheme}://{parts.netloc}",
        config=Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 1}),
        **keys,
    )


def ensure_queue(sqs: Any, queue_url: str) -> None:
    """On a local endpoint, create the queue if it is missing (CreateQueue is idempotent); on
    AWS the queue is infrastructure, made by whoever owns the account."""
    if is_local(queue_url):
        sqs.create_queue(QueueName=urlsplit(queue_url).path.rstrip("/").rsplit("/", 1)[-1])
