"""Queue metrics from a RabbitMQ queue (`kind: rabbitmq`), read from the broker's management
HTTP API.

Why the management API and not AMQP: a passive queue.declare, all AMQP says about a queue,
answers two numbers (messages ready, consumers). The figures a scaler needs beside them (messages
delivered and not yet acknowledged, and the publish/ack/redeliver counters rates come from) exist
only in the management plugin's statistics, which every RabbitMQ ships and most run. So one
sample is one GET of /api/queues/{vhost}/{queue}, on one pooled HTTP connection per management
URL and user, shared by every service that names them (as the NATS and Redis sources share
theirs).

What each metric is, in the queue's terms (the management API's field):

- queue.backlog          messages ready for delivery (`messages_ready`)
- queue.ack_pending      delivered, not yet acknowledged (`messages_unacknowledged`)
- queue.consumers        consumers subscribed to the queue (`consumers`)
- queue.rate_in          from the counter queue.published (`message_stats.publish`)
- queue.rate_out         from the counter queue.acked (`message_stats.ack`, plus the messages
                         handed to consumers that do not acknowledge: `deliver_no_ack`,
                         `get_no_ack`): messages that left the queue for good
- queue.rate_redelivered from the counter queue.redeliveries (`message_stats.redeliver`).
                         RabbitMQ counts redeliveries; it does not say how many of the messages
                         in flight were delivered before, so there is no queue.redelivered gauge
                         as NATS and Redis have

The broker refreshes these figures every `collect_statistics_interval` (5 s by default), so a
sample is that old at most (docs/metrics.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

import httpx2
from pydantic import Field, field_validator, model_validator

from docktor.plan import ServicePlan
from docktor.sources.base import (
    MetricConfigError,
    MetricUnavailable,
    password_variable,
    queue_block,
)
from docktor.spec import QueueSpec
from docktor.text import printable_line, redact, source_error

log = logging.getLogger(__name__)

GAUGES = ("queue.backlog", "queue.ack_pending", "queue.consumers")
# counter -> the rate the policy derives from two consecutive samples of it
RATES = {
    "queue.published": "queue.rate_in",
    "queue.acked": "queue.rate_out",
    "queue.redeliveries": "queue.rate_redelivered",
}

URL_SCHEMES = ("amqp", "amqps")
MANAGEMENT_SCHEMES = ("http", "https")
MANAGEMENT_PORT = 15672
# RabbitMQ's default account. Its password is no secret (the broker accepts it from loopback
# only), so a block that logs in as guest needs no password_env.
DEFAULT_USER = "guest"
DEFAULT_PASSWORD = "guest"

# Short on purpose, as for NATS and Redis: an unreachable broker must become MetricUnavailable
# well inside the observe activity's timeout, and the loop retries at its next interval anyway.
CONNECT_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 3.0
# One connection per management URL and user: a sample is one small GET, and services sampled
# at the same moment wait their turn instead of each opening a connection.
POOL_SIZE = 1
# A queue's document is a few KB (more with many consumers listed); a server's answer is not
# trusted, so one larger than this is refused rather than read.
MAX_BODY_BYTES = 1_000_000


class RabbitMQQueueSpec(QueueSpec):
    """`queue: {kind: rabbitmq, url, queue}`: a queue on a RabbitMQ broker, read through its
    management API.

    `url` is the AMQP URL the consumers use (`amqp://user@host:5672/vhost`): docktor takes the
    user and the virtual host from it. `management_url` is the management plugin's HTTP address
    (default: the URL's host, port 15672). The password comes from the worker's environment
    variable `password_env`; the block travels in workflow inputs and history, so a password in
    `url` is refused. Without `password_env` the user must be RabbitMQ's default, guest.
    """

    kind: Literal["rabbitmq"] = "rabbitmq"
    url: str = "amqp://127.0.0.1:5672/"
    queue: str = Field(min_length=1)
    management_url: str | None = Field(default=None, min_length=1)
    password_env: str | None = Field(default=None, min_length=1)

    @field_validator("url")
    @classmethod
    def _amqp_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"not a URL ({exc})") from None
        if parts.scheme not in URL_SCHEMES or not parts.hostname:
            raise ValueError("must be an amqp:// (or amqps://) URL, e.g. amqp://127.0.0.1:5672/")
        if parts.password is not None:
            raise ValueError(
                "holds a password; leave it out and name the environment variable that holds "
                "it in password_env"
            )
        return value

    @field_validator("management_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018
        except ValueError as exc:
            raise ValueError(f"not a URL ({exc})") from None
        if parts.scheme not in MANAGEMENT_SCHEMES or not parts.hostname:
            raise ValueError("must be an http:// (or https://) URL, e.g. http://127.0.0.1:15672")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "holds credentials; the user comes from url, the password from password_env"
            )
        return value.rstrip("/")

    @field_validator("password_env")
    @classmethod
    def _password_variable(cls, value: str | None) -> str | None:
        return None if value is None else password_variable(value)

    @model_validator(mode="after")
    def _password_for_user(self) -> RabbitMQQueueSpec:
        if self.password_env is None and self.user != DEFAULT_USER:
            raise ValueError(
                f"password_env: required for user '{self.user}' (only guest logs in without one)"
            )
        return self

    @property
    def user(self) -> str:
        return unquote(urlsplit(self.url).username or "") or DEFAULT_USER

    @property
    def vhost(self) -> str:
        """The virtual host the URL names, as AMQP clients read it: the path without its
        leading slash, percent-decoded; none (or `/`) is the default virtual host `/`."""
        return unquote(urlsplit(self.url).path[1:]) or "/"

    @property
    def management(self) -> str:
        """The management API's base URL."""
        if self.management_url is not None:
            return self.management_url
        host = urlsplit(self.url).hostname or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{MANAGEMENT_PORT}"


class RabbitMQSource:
    """MetricSource for a RabbitMQ queue."""

    config_model = RabbitMQQueueSpec
    provides = (*GAUGES, *RATES.values())
    rates = RATES

    def __init__(
        self,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        request_timeout: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        # Made without network I/O (a client connects on first use), so no lock is needed:
        # nothing awaits between the lookup and the insert.
        self._clients: dict[str, httpx2.AsyncClient] = {}

    @property
    def clients(self) -> dict[str, httpx2.AsyncClient]:
        """The pool (management URL + user + the password's variable -> client), read-only by
        convention; tests assert on it."""
        return self._clients

    async def sample(self, spec: ServicePlan) -> tuple[dict[str, float], dict[str, float]]:
        queue = _queue(spec)
        document = await self._queue_document(queue)
        if "messages_ready" not in document:
            # A queue the broker has just created (or restarted) has no statistics until its
            # first statistics interval has passed: not zero, unknown.
            raise MetricUnavailable(
                source_error(f"{_where(queue)}: no figures for the queue yet (just created?)")
            )
        gauges = {
            "queue.backlog": _number(document, "messages_ready"),
            "queue.ack_pending": _number(document, "messages_unacknowledged"),
            "queue.consumers": _number(document, "consumers"),
        }
        # The broker leaves a counter out until it has counted something.
        stats = document.get("message_stats")
        stats = stats if isinstance(stats, dict) else {}
        counters = {
            "queue.published": _number(stats, "publish"),
            "queue.acked": sum(
                _number(stats, key) for key in ("ack", "deliver_no_ack", "get_no_ack")
            ),
            "queue.redeliveries": _number(stats, "redeliver"),
        }
        return gauges, counters

    async def validate(self, spec: ServicePlan) -> None:
        await self._queue_document(_queue(spec))

    async def close(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            try:
                await asyncio.wait_for(client.aclose(), timeout=self.connect_timeout)
            except Exception as exc:  # a connection that is already gone needs no goodbye
                log.debug("rabbitmq close: %s", exc)

    # ---- internals ---------------------------------------------------------------------------

    def _client(self, queue: RabbitMQQueueSpec) -> httpx2.AsyncClient:
        # One client per management URL and identity: two services that log in differently
        # must not share a connection (nor its permissions).
        key = f"{queue.management}+{queue.user}+${queue.password_env or ''}"
        client = self._clients.get(key)
        if client is None:
            client = httpx2.AsyncClient(
                base_url=queue.management,
                auth=(queue.user, _password(queue)),
                timeout=httpx2.Timeout(self.request_timeout, connect=self.connect_timeout),
                limits=httpx2.Limits(max_connections=POOL_SIZE, max_keepalive_connections=1),
                # No proxy, .netrc or CA bundle from the worker's environment: the broker is
                # reached as the config says, like the NATS and Redis servers are.
                trust_env=False,
                headers={"User-Agent": "docktor"},
            )
            self._clients[key] = client
        return client

    async def _queue_document(self, queue: RabbitMQQueueSpec) -> dict[str, Any]:
        client = self._client(queue)
        path = f"/api/queues/{_segment(queue.vhost)}/{_segment(queue.queue)}"
        status, body = await self._get(client, queue, path)
        if status == 404:
            # Which of the two is missing: the vhost, or the queue in it.
            vhost_status, _ = await self._get(client, queue, f"/api/vhosts/{_segment(queue.vhost)}")
            if vhost_status == 404:
                raise MetricConfigError(
                    source_error(f"vhost '{queue.vhost}' not found on {_where(queue, vhost=False)}")
                )
            raise MetricConfigError(
                source_error(f"queue '{queue.queue}' not found on {_where(queue)}")
            )
        if not isinstance(body, dict):
            raise MetricUnavailable(
                source_error(f"{_where(queue)}: queue '{queue.queue}': not a queue document")
            )
        return body

    async def _get(
        self, client: httpx2.AsyncClient, queue: RabbitMQQueueSpec, path: str
    ) -> tuple[int, Any]:
        """(status, JSON body) of a GET; 200 and 404 come back, anything else is raised as the
        error it is."""
        try:
            async with client.stream("GET", path) as response:
                size = int(response.headers.get("content-length") or 0)
                if size > MAX_BODY_BYTES:
                    raise MetricUnavailable(
                        source_error(f"{_where(queue)}: an answer of {size} bytes; not read")
                    )
                content = bytearray()
                async for chunk in response.aiter_bytes():
                    content += chunk
                    if len(content) > MAX_BODY_BYTES:
                        raise MetricUnavailable(
                            source_error(f"{_where(queue)}: an answer over {MAX_BODY_BYTES} bytes")
                        )
                status = response.status_code
        except (MetricConfigError, MetricUnavailable):
            raise
        except httpx2.TimeoutException:
            raise MetricUnavailable(
                source_error(f"{_where(queue)}: no answer within {self.request_timeout:g}s")
            ) from None
        except (httpx2.HTTPError, OSError) as exc:
            raise MetricUnavailable(
                source_error(f"{_where(queue)}: cannot connect ({_describe_connect_error(exc)})")
            ) from None
        if status in (401, 403):
            # No retry fixes a wrong password or a missing permission: said once, as a
            # configuration problem.
            raise MetricConfigError(
                source_error(
                    f"{_where(queue, vhost=False)}: user '{queue.user}' refused "
                    f"({_reason(content)}; check the url's user, password_env, and that the user "
                    f"may read vhost '{queue.vhost}' and use the management API: the monitoring "
                    "tag)"
                )
            )
        if status not in (200, 404):
            raise MetricUnavailable(
                source_error(f"{_where(queue)}: HTTP {status} ({_reason(content)})")
            )
        try:
            return status, json.loads(bytes(content) or b"null")
        except ValueError:
            raise MetricUnavailable(
                source_error(f"{_where(queue)}: the management API did not answer JSON")
            ) from None


def _queue(spec: ServicePlan) -> RabbitMQQueueSpec:
    return queue_block(spec, RabbitMQQueueSpec)


def _password(queue: RabbitMQQueueSpec) -> str:
    """The password, read here in the worker (its environment): it never travels with the
    plan."""
    if queue.password_env is None:
        return DEFAULT_PASSWORD
    value = os.environ.get(queue.password_env)
    if not value:
        raise MetricConfigError(
            f"queue.password_env: {queue.password_env} is not set in the worker's environment"
        )
    return value


def _segment(name: str) -> str:
    """A vhost or queue name as one path segment of the management API (`/` is `%2F`)."""
    return quote(name, safe="")


def _where(queue: RabbitMQQueueSpec, vhost: bool = True) -> str:
    """The broker as messages name it: its management URL, and the vhost when it matters."""
    where = redact(queue.management)
    return f"{where} (vhost '{queue.vhost}')" if vhost and queue.vhost != "/" else where


def _number(document: dict[str, Any], key: str) -> float:
    value = document.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def _reason(content: bytes | bytearray) -> str:
    """The management API's `reason` (or `error`) of an error answer, as one short line."""
    try:
        body = json.loads(bytes(content))
    except ValueError:
        body = None
    if isinstance(body, dict):
        text = body.get("reason") or body.get("error")
        if isinstance(text, str) and text:
            return printable_line(text, 120)
    return "no reason given"


def _describe_connect_error(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == 111:
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower():
        return "connection refused"
    return text
