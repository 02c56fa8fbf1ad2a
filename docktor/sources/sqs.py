"""Queue metrics from an Amazon SQS queue (`kind: sqs`).

One sample is one GetQueueAttributes call. What each metric is, in SQS's terms:

- queue.backlog      ApproximateNumberOfMessages: visible, waiting for a consumer
- queue.ack_pending  ApproximateNumberOfMessagesNotVisible: received by a consumer, not yet
                     deleted (in flight, within their visibility timeout)
- queue.delayed      ApproximateNumberOfMessagesDelayed: sent with a delay not yet over

SQS keeps no counter of messages sent or deleted (CloudWatch has them, per minute and minutes
late), so this source derives no rates: queue.rate_in and queue.rate_out are absent, and the
target policy sizes the pool from the backlog alone (the loader turns rate tracking off for
such a kind; docs/plugins.md).

Credentials come from the worker's standard AWS chain (environment, the `profile` the block
names in the worker's ~/.aws files, container or instance role): the block, which travels in
workflow history, names no key. Requests go to the host of `queue_url`, so a local endpoint
that speaks the SQS API (moto's server, ElasticMQ) needs nothing else.

botocore's client runs in a thread: it is blocking, and thread-safe once made. One client per
endpoint, region and profile for the worker's life, shared by every service that names them,
keeps its HTTPS connections open between samples.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Literal
from urllib.parse import urlsplit

import botocore.session
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from pydantic import Field, field_validator

from docktor.plan import ServicePlan
from docktor.sources.base import MetricConfigError, MetricUnavailable, queue_block
from docktor.spec import QueueSpec
from docktor.text import redact, source_error

log = logging.getLogger(__name__)

# metric -> the queue attribute it reads
ATTRIBUTES = {
    "queue.backlog": "ApproximateNumberOfMessages",
    "queue.ack_pending": "ApproximateNumberOfMessagesNotVisible",
    "queue.delayed": "ApproximateNumberOfMessagesDelayed",
}
GAUGES = tuple(ATTRIBUTES)

# Short on purpose, as for NATS and Redis: an unreachable endpoint must become MetricUnavailable
# well inside the observe activity's timeout, and the loop retries at its next interval anyway.
# No retries inside botocore for the same reason (its default would retry throttling for
# seconds).
CONNECT_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 3.0
# HTTP connections a client keeps per endpoint: a sample is one small request, and services
# sampled at the same moment share them.
POOL_SIZE = 4

# Error codes of the SQS API (its JSON and query protocols name some differently).
MISSING_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
BAD_CREDENTIALS = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "InvalidSecurity",
    "AuthFailure",
}
DENIED = {"AccessDenied", "AccessDeniedException"}
BAD_URL = {"InvalidAddress", "InvalidParameterValue", "InvalidAttributeName"}

# `sqs.<region>.amazonaws.com` (also sqs-fips., .amazonaws.com.cn) and the legacy
# `<region>.queue.amazonaws.com`; `queue.amazonaws.com` alone is us-east-1.
_AWS_HOST = re.compile(
    r"^(?:sqs(?:-fips)?\.(?P<region>[a-z0-9-]+)|(?:(?P<legacy>[a-z0-9-]+)\.)?queue)"
    r"\.amazonaws\.com(?:\.cn)?$"
)
_REGION = r"^[a-z0-9]+(-[a-z0-9]+)*$"
_PROFILE = r"^[A-Za-z0-9_.+@-]+$"


class SqsQueueSpec(QueueSpec):
    """`queue: {kind: sqs, queue_url, region, profile}`: an SQS queue (standard or FIFO) whose
    consumers are the scaled replicas.

    `region` signs the requests; unset, the region of an AWS queue URL, else the worker's AWS
    configuration (AWS_DEFAULT_REGION, its profile). `profile` names a profile of the worker's AWS
    config and credentials files; unset, the worker's standard chain (AWS_PROFILE, the
    environment, a container or instance role).
    """

    kind: Literal["sqs"] = "sqs"
    queue_url: str = Field(min_length=1)
    region: str | None = Field(default=None, pattern=_REGION, max_length=64)
    profile: str | None = Field(default=None, pattern=_PROFILE, max_length=128)

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: str) -> str:
        example = "e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/jobs"
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            raise ValueError(f"not a URL ({example})") from None
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"must be an https:// (or http://) queue URL, {example}")
        if "@" in parts.netloc:
            # A key in the URL would travel in workflow history: the worker's AWS chain signs.
            raise ValueError(
                "holds credentials; leave them out (the worker signs with its AWS credential "
                "chain: environment, profile or role)"
            )
        if parts.query or parts.fragment or len(parts.path.strip("/").split("/")) != 2:
            raise ValueError(f"must be the queue's URL, /<account>/<queue name>, {example}")
        return value

    def endpoint(self) -> str:
        """Where requests go: the queue URL's scheme and host."""
        parts = urlsplit(self.queue_url)
        return f"{parts.scheme}://{parts.netloc}"

    def url_region(self) -> str | None:
        """The region an AWS queue URL names, None for any other host."""
        match = _AWS_HOST.match(urlsplit(self.queue_url).hostname or "")
        if match is None:
            return None
        return match["region"] or match["legacy"] or "us-east-1"

    def queue_name(self) -> str:
        return urlsplit(self.queue_url).path.rstrip("/").rsplit("/", 1)[-1]


class SqsMetricSource:
    """MetricSource for an SQS queue: its visible, in-flight and delayed message counts."""

    config_model = SqsQueueSpec
    provides = GAUGES
    rates: dict[str, str] = {}

    def __init__(
        self,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        request_timeout: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self._clients: dict[tuple[str, str, str | None], BaseClient] = {}
        # Held while a client is made (in a thread: it reads the worker's AWS files): two
        # services sampled at once would otherwise each make one, and one would leak.
        self._lock = asyncio.Lock()

    @property
    def clients(self) -> dict[tuple[str, str, str | None], BaseClient]:
        """The pool ((endpoint, region, profile) -> client), read-only by convention; tests
        assert on it."""
        return self._clients

    async def sample(self, spec: ServicePlan) -> tuple[dict[str, float], dict[str, float]]:
        attributes = await self._attributes(_queue(spec))
        gauges: dict[str, float] = {}
        for metric, name in ATTRIBUTES.items():
            value = attributes.get(name)
            if value is None:
                continue  # an endpoint that lacks one: not observed, rather than a made-up 0
            try:
                gauges[metric] = float(value)
            except (TypeError, ValueError):
                continue
        return gauges, {}

    async def validate(self, spec: ServicePlan) -> None:
        await self._attributes(_queue(spec))

    async def close(self) -> None:
        async with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            try:
                client.close()
            except Exception as exc:  # a connection that is already gone needs no goodbye
                log.debug("sqs close: %s", exc)

    # ---- internals ---------------------------------------------------------------------------

    async def _attributes(self, queue: SqsQueueSpec) -> dict[str, Any]:
        client = await self._client(queue)
        try:
            reply = await asyncio.to_thread(
                client.get_queue_attributes,
                QueueUrl=queue.queue_url,
                AttributeNames=list(ATTRIBUTES.values()),
            )
        except Exception as exc:
            raise self._failed(queue, exc) from exc
        attributes = reply.get("Attributes")
        return attributes if isinstance(attributes, dict) else {}

    async def _client(self, queue: SqsQueueSpec) -> BaseClient:
        region = queue.region or queue.url_region()
        key = (queue.endpoint(), region or "", queue.profile)
        async with self._lock:
            client = self._clients.get(key)
            if client is None:
                try:
                    client = await asyncio.to_thread(self._make_client, queue, region)
                except Exception as exc:
                    raise self._failed(queue, exc) from exc
                self._clients[key] = client
            return client

    def _make_client(self, queue: SqsQueueSpec, region: str | None) -> BaseClient:
        session = botocore.session.Session(profile=queue.profile)
        region = region or session.get_config_variable("region")
        if not region:
            raise MetricConfigError(
                f"queue.region: {_where(queue)} names no region and the worker's AWS "
                "configuration sets none; set region in the queue block"
            )
        config = Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.request_timeout,
            retries={"total_max_attempts": 1},
            max_pool_connections=POOL_SIZE,
            user_agent_extra="docktor",
        )
        return session.create_client(
            "sqs", region_name=region, endpoint_url=queue.endpoint(), config=config
        )

    def _failed(self, queue: SqsQueueSpec, exc: Exception) -> Exception:
        """The error an exception of botocore's (or of making the client) becomes: a config
        error where no retry can help, MetricUnavailable where the next try may work."""
        if isinstance(exc, MetricConfigError | MetricUnavailable):
            return exc
        where = _where(queue)
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "")
            query_code = str(error.get("QueryErrorCode") or "")
            said = source_error(str(error.get("Message") or code or exc))
            if code in MISSING_QUEUE or query_code in MISSING_QUEUE:
                return MetricConfigError(f"queue '{queue.queue_name()}' not found at {where}")
            if code in BAD_CREDENTIALS:
                return MetricConfigError(
                    f"{where}: the worker's AWS credentials were refused ({code}: {said})"
                )
            if code in DENIED:
                return MetricConfigError(
                    f"{where}: access denied; the worker's AWS identity needs "
                    f"sqs:GetQueueAttributes on the queue ({said})"
                )
            if code in BAD_URL:
                return MetricConfigError(f"{where}: queue_url refused ({code}: {said})")
            # Throttling, a server error, an expired session token the chain renews: the next
            # try may work.
            return MetricUnavailable(source_error(f"{where}: {code or 'error'}: {said}"))
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return MetricConfigError(
                f"{where}: the worker has no AWS credentials (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or queue.profile, or give it a role)"
            )
        if isinstance(exc, ProfileNotFound):
            return MetricConfigError(
                f"queue.profile: the worker's AWS configuration has no profile "
                f"'{queue.profile or ''}'"
            )
        if isinstance(exc, ConnectTimeoutError):
            return MetricUnavailable(f"{where}: cannot connect (timed out)")
        if isinstance(exc, EndpointConnectionError):
            return MetricUnavailable(f"{where}: cannot connect ({_connect_reason(exc)})")
        if isinstance(exc, ReadTimeoutError):
            return MetricUnavailable(f"{where}: no answer within {self.request_timeout:g}s")
        if isinstance(exc, CredentialRetrievalError | BotoCoreError):
            return MetricUnavailable(source_error(f"{where}: {exc}"))
        return MetricUnavailable(source_error(f"{where}: {exc or type(exc).__name__}"))


def _queue(spec: ServicePlan) -> SqsQueueSpec:
    return queue_block(spec, SqsQueueSpec)


def _where(queue: SqsQueueSpec) -> str:
    return source_error(redact(queue.queue_url))


def _connect_reason(exc: EndpointConnectionError) -> str:
    """botocore words every failed connection as "Could not connect to the endpoint URL"; the
    error it wraps says what happened."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    text = str(exc.kwargs.get("error") or "").lower()
    if "refused" in text:
        return "connection refused"
    if "name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    if "timed out" in text:
        return "timed out"
    return "unreachable"
