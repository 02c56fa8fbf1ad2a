"""Polling with a deadline: tests wait for a condition, never for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from temporalio.client import Client

    from docktor.config import DocktorConfig

# Between polls: short enough that a test never waits long after the condition holds.
POLL_INTERVAL = 0.02


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, message: str = "") -> object:
    """Call `predicate` until it returns something truthy (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s: {message or predicate!r}")
        time.sleep(POLL_INTERVAL)


async def async_wait_for(
    predicate: Callable[[], Awaitable[object]], timeout: float = 10.0, message: str = ""
) -> object:
    """Await `predicate()` until it gives something truthy (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s: {message or predicate!r}")
        await asyncio.sleep(POLL_INTERVAL)


@asynccontextmanager
async def serving_loops(config: DocktorConfig) -> AsyncIterator[Client]:
    """A client and an in-process worker with the real workflow and activities on the config's
    task queue, as `python -m worker` would run them; closed (pooled connections too) at the end."""
    from temporalio.worker import Worker

    from activities import LoopActivities
    from docktor.client import connect
    from workflows import ServiceAutoscaler

    client = await connect(config)
    loop_activities = LoopActivities()
    try:
        async with Worker(
            client,
            task_queue=config.temporal.task_queue,
            workflows=[ServiceAutoscaler],
            activities=loop_activities.all(),
        ):
            yield client
    finally:
        await loop_activities.close()
