"""Queue metrics from a NATS JetStream consumer (`kind: nats`).

One sample is two JetStream API calls (stream info, consumer info) on one connection per server
URL, shared by every service that names that URL: ten services on one NATS server are one TCP
connection, not ten.

While a server is out of reach, every service on it shares one connect attempt, and a failed
attempt answers the samples of the next RETRY_CONNECT_AFTER_S at once: an outage costs each
loop a short failed observation, never a wait behind the other loops' attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import ConsumerInfo, StreamInfo
from nats.js.errors import NotFoundError
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

GAUGES = ("queue.backlog", "queue.ack_pending", "queue.redelivered", "queue.waiting", "queue.lag")
# counter -> the rate the policy derives from two consecutive samples of it
RATES = {"queue.stream_last_seq": "queue.rate_in", "queue.ack_floor": "queue.rate_out"}

# JetStream API error codes (nats-server's errors.json): which of the two names is missing.
STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014
# Characters JetStream names cannot hold (as nats-py's own check).
INVALID_NAME_CHARS = ">*. /\\\t\r\n"

# Short on purpose: an unreachable server must become MetricUnavailable well inside the observe
# activity's timeout, and the loop retries at its next interval anyway. CONNECT_TIMEOUT_S bounds
# a whole connect, however many addresses and attempts it takes.
CONNECT_TIMEOUT_S = 2
REQUEST_TIMEOUT_S = 3.0
# A pooled connection rides out a short server restart by reconnecting; after that it closes,
# and the next sample opens a new one. A new connection makes no such attempts: the observe
# activity's own retries, and the loop's next interval, try again.
MAX_RECONNECT_ATTEMPTS = 3
RECONNECT_TIME_WAIT_S = 0.5
# How long a failed connect answers for the server: the samples in that window fail at once
# with its error instead of each trying (and, on a server that accepts but never answers,
# waiting CONNECT_TIMEOUT_S) again. Short, so a server that is back is read again soon.
RETRY_CONNECT_AFTER_S = 2.0


class NatsQueueSpec(QueueSpec):
    """`queue: {kind: nats, url, stream, consumer}`: a JetStream stream and durable consumer.

    Credentials, when the server wants them: `user` with `password_env` (the worker's
    environment variable holding the password) or `creds` (a .creds file on the worker's
    machine). The block travels in workflow inputs and history, so neither holds the secret
    itself. A `user:password@` (or token) in `url` still works, as older files have it, and is
    shown as `***` wherever docktor prints the URL.
    """

    # The Go tool's files set these; docktor reads the durable consumer `consumer` of `stream`,
    # whose own filter decides which subjects it sees. They load, with one warning each.
    IGNORED_FIELDS: ClassVar[dict[str, str]] = {
        "jetstream": "docktor always reads a JetStream consumer",
        "subject": "the consumer's own filter decides what it reads",
    }

    kind: Literal["nats"] = "nats"
    url: str = "nats://127.0.0.1:4222"
    jetstream: bool = True
    stream: str = Field(min_length=1)
    consumer: str = Field(min_length=1)
    subject: str | None = None
    user: str | None = Field(default=None, min_length=1)
    password_env: str | None = Field(default=None, min_length=1)
    creds: str | None = Field(default=None, min_length=1)

    @field_validator("password_env")
    @classmethod
    def _password_variable(cls, value: str | None) -> str | None:
        return None if value is None else password_variable(value)

    @model_validator(mode="after")
    def _one_way_to_log_in(self) -> NatsQueueSpec:
        if self.user is not None and self.password_env is None:
            raise ValueError("password_env: required with user")
        if self.password_env is not None and self.user is None:
            raise ValueError("user: required with password_env")
        if self.creds is not None and self.user is not None:
            raise ValueError("creds: a creds file or user and password_env, not both")
        if (self.creds is not None or self.user is not None) and _has_credentials(self.url):
            raise ValueError("url: holds credentials already; leave them out of it")
        return self


class NatsMetricSource:
    """MetricSource for `spec.queue`: backlog, lag and the counters rates come from."""

    config_model = NatsQueueSpec
    provides = (*GAUGES, *RATES.values())
    rates = RATES

    def __init__(
        self,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        request_timeout: float = REQUEST_TIMEOUT_S,
        retry_connect_after: float = RETRY_CONNECT_AFTER_S,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.retry_connect_after = retry_connect_after
        self._connections: dict[str, NatsClient] = {}
        # The connect in flight for each pool key, awaited by every sample that needs it: two
        # services sampled at once open one connection, not two (one would leak), and none
        # waits behind a lock while another's connect fails.
        self._connecting: dict[str, asyncio.Task[NatsClient]] = {}
        # pool key -> (monotonic time until which it stands, the failed connect's error)
        self._failed: dict[str, tuple[float, Exception]] = {}

    @property
    def connections(self) -> dict[str, NatsClient]:
        """The pool (URL, with the login when the block names one -> connection), read-only by
        convention; tests assert on it."""
        return self._connections

    async def sample(self, spec: ServicePlan) -> tuple[dict[str, float], dict[str, float]]:
        queue = _queue(spec)
        stream, consumer = await self._infos(queue)
        state = stream.state
        delivered = consumer.delivered.stream_seq if consumer.delivered else 0
        acked = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
        gauges: dict[str, float] = {
            "queue.backlog": float(consumer.num_pending or 0),
            "queue.ack_pending": float(consumer.num_ack_pending or 0),
            "queue.redelivered": float(consumer.num_redelivered or 0),
            "queue.waiting": float(consumer.num_waiting or 0),
            # Messages in the stream the consumer has not been handed yet. Never negative: a
            # purged or recreated stream can briefly report a last_seq below the delivered one.
            "queue.lag": float(max(0, state.last_seq - delivered)),
        }
        counters: dict[str, float] = {
            "queue.stream_last_seq": float(state.last_seq),
            "queue.ack_floor": float(acked),
        }
        return gauges, counters

    async def validate(self, spec: ServicePlan) -> None:
        await self._infos(_queue(spec))

    async def close(self) -> None:
        connecting = list(self._connecting.values())
        self._connecting.clear()
        for task in connecting:
            task.cancel()
        await asyncio.gather(*connecting, return_exceptions=True)
        connections = list(self._connections.values())
        self._connections.clear()
        self._failed.clear()
        for connection in connections:
            try:
                # Nothing is subscribed, so drain is quick; it still flushes pending requests.
                await asyncio.wait_for(connection.drain(), timeout=self.connect_timeout)
            except Exception:  # a connection that is already gone needs no drain
                if not connection.is_closed:
                    await connection.close()

    # ---- internals ---------------------------------------------------------------------------

    async def _infos(self, queue: NatsQueueSpec) -> tuple[StreamInfo, ConsumerInfo]:
        for kind, name in (("stream", queue.stream), ("consumer", queue.consumer)):
            # nats-py refuses these locally with a ValueError; no retry can fix a name.
            if any(c in INVALID_NAME_CHARS for c in name):
                raise MetricConfigError(
                    f"invalid {kind} name {printable_line(repr(name))} (no '.', '*', '>', spaces)"
                )
        where = redact(queue.url)
        connection = await self._connection(queue)
        if connection.is_reconnecting:
            # The server went away: a request now would wait the whole request_timeout for a
            # reconnect that an outage never brings. The observe activity's retry, a second
            # later, finds the connection back or closed (and then connects anew).
            raise MetricUnavailable(source_error(f"{queue.url}: reconnecting to the server"))
        jsm = connection.jsm(timeout=self.request_timeout)
        try:
            stream = await jsm.stream_info(queue.stream)
        except NotFoundError:
            raise MetricConfigError(f"stream '{queue.stream}' not found on {where}") from None
        except Exception as exc:
            raise self._unavailable(queue, exc) from exc
        try:
            consumer = await jsm.consumer_info(queue.stream, queue.consumer)
        except NotFoundError as exc:
            if exc.err_code == STREAM_NOT_FOUND:  # deleted between the two calls
                raise MetricConfigError(f"stream '{queue.stream}' not found on {where}") from None
            raise MetricConfigError(
                f"consumer '{queue.consumer}' not found on stream '{queue.stream}' ({where})"
            ) from None
        except Exception as exc:
            raise self._unavailable(queue, exc) from exc
        return stream, consumer

    def _unavailable(self, queue: NatsQueueSpec, exc: Exception) -> MetricUnavailable:
        if isinstance(exc, nats.errors.NoRespondersError):
            why = "JetStream is not enabled on the server (start it with -js)"
        elif isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError):
            why = f"no answer within {self.request_timeout:g}s"
        else:
            # The server's own words (a JetStream API error's description) are not trusted.
            why = str(exc) or type(exc).__name__
        return MetricUnavailable(source_error(f"{queue.url}: stream '{queue.stream}': {why}"))

    async def _connection(self, queue: NatsQueueSpec) -> NatsClient:
        # One connection per server and identity: two services that log in differently to one
        # server must not share a connection (nor its permissions). Nothing awaits between the
        # lookups and the inserts below, so no lock is needed (nor held while a connect runs).
        key = _pool_key(queue)
        connection = self._connections.get(key)
        if connection is not None and not connection.is_closed:
            return connection
        # Closed after its reconnect attempts ran out: replaced now, lazily.
        self._connections.pop(key, None)
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() < failed[0]:
            error = failed[1]
            raise type(error)(*error.args)  # a fresh one: each raise grows its traceback
        task = self._connecting.get(key)
        if task is None:
            task = asyncio.create_task(self._open(key, queue))
            # Its failure is kept in _failed; retrieved here too, so that a connect whose every
            # waiter gave up is not reported as an exception nobody saw.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._connecting[key] = task
        # Shielded: a sample given up on (its activity timed out) leaves the connect to the
        # others waiting for it.
        return await asyncio.shield(task)

    async def _open(self, key: str, queue: NatsQueueSpec) -> NatsClient:
        try:
            connection = await self._connect(queue)
        except Exception as exc:
            self._failed[key] = (time.monotonic() + self.retry_connect_after, exc)
            raise
        finally:
            self._connecting.pop(key, None)
        self._failed.pop(key, None)
        self._connections[key] = connection
        return connection

    async def _connect(self, queue: NatsQueueSpec) -> NatsClient:
        where = redact(queue.url)
        login = _login(queue)
        last_error: list[Exception] = []
        refused: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            # The client reports each failed attempt here; keep the last one for the message
            # (the exception it finally raises only says "no servers available"). A server
            # that refused the login closes the connection too, so the last error may be that
            # reset: the refusal is kept apart.
            last_error[:] = [exc]
            if _refused_login(exc):
                refused[:] = [exc]
            log.debug("nats %s: %s", where, source_error(str(exc)))

        async def on_disconnect() -> None:
            log.debug("nats %s: disconnected", where)

        try:
            return await self._connect_once(queue.url, login, on_error, on_disconnect)
        except ImportError as exc:
            # nats-py signs with a creds file's key through the optional nkeys package.
            raise MetricConfigError(
                f"queue.creds: reading a creds file needs the nkeys package "
                f"(pip install 'nats-py[nkeys]'): {exc.name or exc}"
            ) from None
        except Exception as exc:
            if refused or _refused_login(exc):
                # No retry fixes a wrong password: said once, as a configuration problem.
                raise MetricConfigError(
                    f"{where}: authorization failed (check the queue's user, password_env, "
                    "creds or url)"
                ) from None
            cause = last_error[0] if last_error else exc
            detail = _describe_connect_error(cause)
            raise MetricUnavailable(source_error(f"{where}: cannot connect ({detail})")) from exc

    async def _connect_once(
        self,
        url: str,
        login: dict[str, Any],
        on_error: Callable[[Exception], Awaitable[None]],
        on_disconnect: Callable[[], Awaitable[None]],
    ) -> NatsClient:
        """A new connection, within connect_timeout all told."""
        connection = NatsClient()
        try:
            # nats-py tries each address of a new connection up to its reconnect limit, with
            # the reconnect wait between tries: 1.5 s on a refused port with the pooled
            # connection's settings. A new connection tries at once instead (1 is the least
            # nats-py takes, two tries; 0 would mean for ever); the pooled connection's
            # reconnect settings are set once it is up, and nats-py reads them at each
            # reconnect.
            await asyncio.wait_for(
                connection.connect(
                    url,
                    name="docktor",
                    connect_timeout=self.connect_timeout,  # type: ignore[arg-type]
                    allow_reconnect=True,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    **login,
                ),
                timeout=self.connect_timeout,
            )
        except BaseException:
            # Failed or cancelled half-way: nothing of it (socket, client tasks) stays open.
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        connection.options["max_reconnect_attempts"] = MAX_RECONNECT_ATTEMPTS
        connection.options["reconnect_time_wait"] = RECONNECT_TIME_WAIT_S
        return connection


def _queue(spec: ServicePlan) -> NatsQueueSpec:
    queue = queue_block(spec, NatsQueueSpec)
    if queue.creds is not None and spec.workdir and not Path(queue.creds).is_absolute():
        # As the service's command arguments: relative to the config file's folder.
        queue = queue.model_copy(update={"creds": str(Path(spec.workdir) / queue.creds)})
    return queue


def _describe_connect_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, asyncio.TimeoutError | nats.errors.TimeoutError):
        return "timed out"
    return source_error(str(exc) or type(exc).__name__)


def _refused_login(exc: BaseException) -> bool:
    """The server's `-ERR 'Authorization Violation'` (nats-py raises it as a plain nats error
    on connect, AuthorizationError elsewhere)."""
    return isinstance(exc, nats.errors.AuthorizationError) or (
        "authorization violation" in str(exc).lower()
    )


def _has_credentials(url: str) -> bool:
    """A `user:password@` or token `@` in the URL."""
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:  # a malformed URL: nats-py says what is wrong with it when connecting
        return False


def _pool_key(queue: NatsQueueSpec) -> str:
    """The URL, with who logs in when the block says (as the Redis source keys its pool)."""
    if queue.user is not None:
        return f"{queue.url}+{queue.user}+${queue.password_env}"
    if queue.creds is not None:
        return f"{queue.url}+creds:{queue.creds}"
    return queue.url


def _login(queue: NatsQueueSpec) -> dict[str, Any]:
    """nats.connect's credentials for the queue, read here in the worker (its environment, its
    files): they never travel with the plan."""
    if queue.user is not None and queue.password_env is not None:
        password = os.environ.get(queue.password_env)
        if not password:
            raise MetricConfigError(
                f"queue.password_env: {queue.password_env} is not set in the worker's environment"
            )
        return {"user": queue.user, "password": password}
    if queue.creds is not None:
        path = Path(queue.creds).expanduser()
        if not path.is_file() or not os.access(path, os.R_OK):
            raise MetricConfigError(
                f"queue.creds: {printable_line(str(path))} is not a file the worker can read"
            )
        return {"user_credentials": str(path)}
    return {}
