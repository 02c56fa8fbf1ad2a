"""Polling with a deadline: tests wait for a condition, never for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

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
