"""Queue metrics from a Redis stream and its consumer group (`kind: redis`).

One sample is one round trip for the stream and its groups (XINFO STREAM and XINFO GROUPS in
one MULTI, so both describe the same instant), plus XPENDING pages when entries are pending.
Connections are pooled per server URL and shared by every service that names that URL: ten
services on one Redis are one TCP connection, as with the NATS source.

What each metric is, in the group's terms:

- queue.backlog      entries not yet delivered to the group: its `lag` (Redis >= 7.0), or
                     counted after its last-delivered-id where Redis cannot say (older servers,
                     or entries deleted in the middle of the stream)
- queue.ack_pending  delivered, not yet acknowledged (the group's pending entries list)
- queue.redelivered  pending entries delivered more than once (XPENDING's delivery counter:
                     claimed from a replica that died, or read again after a crash)
- queue.consumers    consumers the group knows (the example's replicas leave it on exit)
- queue.rate_in      from the counter queue.entries_added (the stream's entries-added)
- queue.rate_out     from the counter queue.entries_acked (entries read by the group minus
                     those still pending); both counters need Redis >= 7.0
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Literal
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from pydantic import Field, field_validator
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from docktor.plan import ServicePlan
from docktor.sources.base import (
    MetricConfigError,
    MetricUnavailable,
    password_variable,
    queue_block,
)
from docktor.spec import QueueSpec
from docktor.text import printable_line, redact

log = logging.getLogger(__name__)

GAUGES = ("queue.backlog", "queue.ack_pending", "queue.redelivered", "queue.consumers")
# counter -> the rate the policy derives from two consecutive samples of it
RATES = {"queue.entries_added": "queue.rate_in", "queue.entries_acked": "queue.rate_out"}

URL_SCHEMES = ("redis", "rediss", "unix")

# Short on purpose, as for NATS: an unreachable server must become MetricUnavailable well
# inside the observe activity's timeout, and the loop retries at its next interval anyway. No
# retries inside the client for the same reason.
CONNECT_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 3.0
# Connections per server URL. One: a sample is a few sub-millisecond commands, and services
# sampled at the same moment wait their turn (at most REQUEST_TIMEOUT_S) instead of each
# opening a connection of its own.
POOL_SIZE = 1
# XPENDING and XRANGE pages, and how many entries one sample reads at most through them. Past
# the limit the figure is a floor: redelivered counts among the first PENDING_SCAN_LIMIT pending
# entries, a computed backlog stops at BACKLOG_SCAN_LIMIT (far above what a scale rule needs).
PAGE = 1000
PENDING_SCAN_LIMIT = 10_000
BACKLOG_SCAN_LIMIT = 10_000


class RedisQueueSpec(QueueSpec):
    """`queue: {kind: redis, url, stream, group}`: a stream and the consumer group whose
    consumers are the scaled replicas."""

    kind: Literal["redis"] = "redis"
    url: str = "redis://127.0.0.1:6379/0"
    stream: str = Field(min_length=1)
    group: str = Field(min_length=1)
    # The environment variable of the worker that holds the password. The block travels in
    # workflow inputs and history, so a password written into `url` would too (SECURITY.md).
    password_env: str | None = Field(default=None, min_length=1)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in URL_SCHEMES:
            raise ValueError(
                "must be a redis:// (or rediss://, unix://) URL, e.g. redis://127.0.0.1:6379/0"
            )
        return value

    @field_validator("password_env")
    @classmethod
    def _password_variable(cls, value: str | None) -> str | None:
        return None if value is None else password_variable(value)


class RedisStreamSource:
    """MetricSource for a Redis stream's consumer group."""

    config_model = RedisQueueSpec
    provides = (*GAUGES, *RATES.values())
    rates = RATES

    def __init__(
        self,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        request_timeout: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        # Made without network I/O (a pool connects on first use), so no lock is needed:
        # nothing awaits between the lookup and the insert.
        self._clients: dict[str, aioredis.Redis] = {}

    @property
    def clients(self) -> dict[str, aioredis.Redis]:
        """The pool (URL, with `+$VARIABLE` when the password comes from one -> client),
        read-only by convention; tests assert on it."""
        return self._clients

    async def sample(self, spec: ServicePlan) -> tuple[dict[str, float], dict[str, float]]:
        queue = _queue(spec)
        client = self._client(queue)
        try:
            stream, group = await self._infos(client, queue)
            pending = int(group.get("pending") or 0)
            lag = group.get("lag")
            if lag is None:
                lag = await self._count_undelivered(client, queue, stream, group)
            redelivered = await self._redelivered(client, queue) if pending else 0
        except (MetricConfigError, MetricUnavailable):
            raise
        except Exception as exc:
            raise self._unavailable(queue, exc) from exc
        gauges: dict[str, float] = {
            "queue.backlog": float(lag),
            "queue.ack_pending": float(pending),
            "queue.redelivered": float(redelivered),
            "queue.consumers": float(group.get("consumers") or 0),
        }
        return gauges, _counters(stream, group, pending)

    async def validate(self, spec: ServicePlan) -> None:
        queue = _queue(spec)
        client = self._client(queue)
        try:
            await self._infos(client, queue)
        except (MetricConfigError, MetricUnavailable):
            raise
        except Exception as exc:
            raise self._unavailable(queue, exc) from exc

    async def close(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            try:
                # Closes the pool the client owns (from_pool) with it.
                await asyncio.wait_for(client.aclose(), timeout=self.connect_timeout)
            except Exception as exc:  # a connection that is already gone needs no goodbye
                log.debug("redis close: %s", exc)

    # ---- internals ---------------------------------------------------------------------------

    def _client(self, queue: RedisQueueSpec) -> aioredis.Redis:
        key = queue.url if queue.password_env is None else f"{queue.url}+${queue.password_env}"
        client = self._clients.get(key)
        if client is None:
            password: dict[str, str] = {}
            if queue.password_env is not None:
                value = os.environ.get(queue.password_env)
                if not value:
                    raise MetricConfigError(
                        f"queue.password_env: {queue.password_env} is not set in the "
                        "worker's environment"
                    )
                password["password"] = value
            pool = aioredis.BlockingConnectionPool.from_url(
                queue.url,
                max_connections=POOL_SIZE,
                timeout=self.request_timeout,  # waiting for the pooled connection
                socket_connect_timeout=self.connect_timeout,
                socket_timeout=self.request_timeout,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
                client_name="docktor",
                **password,
            )
            client = aioredis.Redis.from_pool(pool)
            self._clients[key] = client
        return client

    async def _infos(
        self, client: aioredis.Redis, queue: RedisQueueSpec
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """XINFO STREAM and the group's line of XINFO GROUPS, read in one MULTI."""
        where = redact(queue.url)
        pipe = client.pipeline(transaction=True)
        pipe.xinfo_stream(queue.stream)
        pipe.xinfo_groups(queue.stream)
        try:
            stream, groups = await pipe.execute()
        except ResponseError as exc:
            text = str(exc)
            if "no such key" in text:
                raise MetricConfigError(f"stream '{queue.stream}' not found on {where}") from None
            if "WRONGTYPE" in text:
                raise MetricConfigError(
                    f"key '{queue.stream}' on {where} is not a stream"
                ) from None
            raise
        for group in groups:
            if group.get("name") == queue.group:
                return stream, group
        raise MetricConfigError(
            f"consumer group '{queue.group}' not found on stream '{queue.stream}' ({where})"
        )

    async def _redelivered(self, client: aioredis.Redis, queue: RedisQueueSpec) -> int:
        """Pending entries delivered more than once, from XPENDING's extended form, a page at
        a time from the oldest."""
        count = scanned = 0
        start = "-"
        while scanned < PENDING_SCAN_LIMIT:
            page = await client.xpending_range(queue.stream, queue.group, start, "+", PAGE)
            scanned += len(page)
            count += sum(1 for entry in page if int(entry["times_delivered"]) > 1)
            if len(page) < PAGE:
                break
            start = _after(page[-1]["message_id"])
        return count

    async def _count_undelivered(
        self,
        client: aioredis.Redis,
        queue: RedisQueueSpec,
        stream: dict[str, Any],
        group: dict[str, Any],
    ) -> int:
        """The group's backlog where Redis does not report `lag`: the entries after its
        last-delivered-id, counted (at most BACKLOG_SCAN_LIMIT)."""
        length = int(stream.get("length") or 0)
        delivered = _parse_id(group.get("last-delivered-id") or "0-0")
        if length == 0 or delivered >= _parse_id(stream.get("last-generated-id") or "0-0"):
            return 0
        first = stream.get("first-entry")
        if first and delivered < _parse_id(first[0]):
            return length  # nothing left in the stream has been delivered
        count = 0
        start = _after(group["last-delivered-id"])
        while count < BACKLOG_SCAN_LIMIT:
            page = await client.xrange(queue.stream, min=start, max="+", count=PAGE)
            count += len(page)
            if len(page) < PAGE:
                break
            start = _after(page[-1][0])
        return min(count, BACKLOG_SCAN_LIMIT)

    def _unavailable(self, queue: RedisQueueSpec, exc: Exception) -> Exception:
        where = redact(queue.url)
        if isinstance(exc, AuthenticationError) or "NOAUTH" in str(exc):
            # No retry fixes a wrong password: said once, as a configuration problem.
            return MetricConfigError(f"{where}: authentication failed ({_said(exc)})")
        if isinstance(exc, RedisTimeoutError | asyncio.TimeoutError):
            return MetricUnavailable(
                f"{where}: stream '{queue.stream}': no answer within {self.request_timeout:g}s"
            )
        if isinstance(exc, ConnectionError | OSError):
            return MetricUnavailable(f"{where}: cannot connect ({_describe_connect_error(exc)})")
        return MetricUnavailable(f"{where}: stream '{queue.stream}': {_said(exc)}")


def _queue(spec: ServicePlan) -> RedisQueueSpec:
    return queue_block(spec, RedisQueueSpec)


def _counters(stream: dict[str, Any], group: dict[str, Any], pending: int) -> dict[str, float]:
    """The monotonic counters rates come from, where the server reports them (Redis >= 7.0).

    Acknowledged = read by the group - still pending: every pending entry was read once (it is
    counted in entries-read), and an XACK takes it off the pending list. The group's
    entries-read is unset until it first reads; then entries-added - lag says the same.
    """
    counters: dict[str, float] = {}
    added = stream.get("entries-added")
    if added is None:
        return counters
    counters["queue.entries_added"] = float(added)
    read = group.get("entries-read")
    if read is None and group.get("lag") is not None:
        read = int(added) - int(group["lag"])
    if read is not None:
        counters["queue.entries_acked"] = float(max(0, int(read) - pending))
    return counters


def _parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _after(entry_id: str) -> str:
    """The smallest id after entry_id, for an exclusive range start on any server version
    (the `(id` syntax needs Redis 6.2)."""
    ms, seq = _parse_id(entry_id)
    return f"{ms}-{seq + 1}"


def _said(exc: BaseException) -> str:
    """The first line of what an exception says, as one short printable line without
    credentials: a server's error text is not trusted (docktor.text)."""
    lines = redact(str(exc)).strip().splitlines()
    return printable_line(lines[0]) if lines else type(exc).__name__


def _describe_connect_error(exc: BaseException) -> str:
    """redis-py words a refused connection as "Error 111 connecting to ..."; the OSError it
    wraps says what happened."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == 111:
            return "connection refused"
        if isinstance(cause, TimeoutError | RedisTimeoutError):
            return "timed out"
        cause = cause.__cause__ or cause.__context__
    text = _said(exc)
    if "Error 111 " in text or "refused" in text.lower():
        return "connection refused"
    if "timeout" in text.lower() or "timed out" in text.lower():
        return "timed out"
    return text
