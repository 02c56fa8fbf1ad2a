"""One connection to the Docker engine, shared by the compose and swarm backends and the docker
metric source.

The engine is found the way the docker CLI finds it (`docker.from_env`: DOCKER_HOST,
DOCKER_TLS_VERIFY, DOCKER_CERT_PATH), and one client is kept per such environment, so a worker
serving twenty services holds one connection pool, not twenty. Failing to reach the engine is
`EngineUnavailable`: neither a scaler nor a metric error, so each caller turns it into its own
retryable kind (ScalerUnavailable, MetricUnavailable).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from docktor.text import printable_line

DEFAULT_HOST = "unix:///var/run/docker.sock"
# The environment variables docker.from_env reads: a change to any of them is another engine.
ENV_KEYS = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
# Per HTTP request. Long enough for `stats(stream=False)`, where the engine takes two readings
# about a second apart; a stop with a long grace period is fine too, since docker-py adds the stop
# timeout to this one for that call.
TIMEOUT_S = 30
# HTTP connections kept per client. docker-py's default of 10 is below the number of replicas the
# metric source samples at once; past the pool size urllib3 opens and discards extra connections
# with a warning each time.
MAX_POOL_SIZE = 64

_clients: dict[tuple[str | None, ...], docker.DockerClient] = {}
_lock = threading.Lock()


class EngineUnavailable(Exception):
    """The Docker engine could not be reached (down, wrong DOCKER_HOST, no permission)."""


T = TypeVar("T")


def engine_host() -> str:
    """The engine address in use, for messages."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def docker_client() -> docker.DockerClient:
    """The shared client for the current Docker environment; raises EngineUnavailable.

    Connecting asks the engine for its API version, so an unreachable engine fails here, once,
    with a readable message rather than later as a raw socket error.
    """
    key = tuple(os.environ.get(name) for name in ENV_KEYS)
    with _lock:
        client = _clients.get(key)
        if client is not None:
            return client
        try:
            client = docker.from_env(timeout=TIMEOUT_S, max_pool_size=MAX_POOL_SIZE)
        except docker.errors.DockerException as exc:
            raise unavailable(exc) from None
        _clients[key] = client
        return client


def unavailable(exc: BaseException) -> EngineUnavailable:
    """The one-line error for an engine that did not answer."""
    return EngineUnavailable(
        f"cannot reach the Docker engine at {engine_host()} ({_reason(exc)}): "
        "is dockerd running? (DOCKER_HOST)"
    )


def is_unreachable(exc: BaseException) -> bool:
    """True for failures to talk to the engine at all, as opposed to the engine's own answers
    (NotFound, Conflict...), which are `docker.errors.APIError`."""
    # Not docker.errors.DockerException as a whole: it also covers bad arguments
    # (InvalidArgument...), which are bugs or config faults, not an engine that is away.
    return isinstance(
        exc,
        requests.exceptions.ConnectionError
        | requests.exceptions.Timeout
        | ConnectionError
        | FileNotFoundError,
    )


@contextmanager
def engine_calls() -> Iterator[None]:
    """Turn a lost connection inside the block into EngineUnavailable; engine answers pass."""
    try:
        yield
    except EngineUnavailable:
        raise
    except Exception as exc:
        if is_unreachable(exc):
            raise unavailable(exc) from None
        raise


async def engine_call(
    fn: Callable[..., T], *args: Any, executor: Executor | None = None, **kwargs: Any
) -> T:
    """Run a blocking SDK call in a thread (the default pool, or `executor`); a connection lost
    on the way raises EngineUnavailable, the engine's own answers pass through."""

    def call() -> T:
        with engine_calls():
            return fn(*args, **kwargs)

    return await asyncio.get_running_loop().run_in_executor(executor, call)


def reset_clients() -> None:
    """Forget the cached clients (tests that point DOCKER_HOST elsewhere)."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def _reason(exc: BaseException) -> str:
    """The innermost cause in one short line: `No such file or directory`, `Connection refused`."""
    inner: BaseException = exc
    seen = 0
    while seen < 10:
        nxt = inner.__cause__ or inner.__context__
        if nxt is None and inner.args and isinstance(inner.args[0], BaseException):
            nxt = inner.args[0]
        if nxt is None:
            break
        inner = nxt
        seen += 1
    strerror = getattr(inner, "strerror", None)
    text = strerror or str(inner) or type(inner).__name__
    return printable_line(text, 160)
