"""Queue sources against a server that is out of reach: a port that refuses, or one that takes
the connection and never answers (a hung server, a half-open network path). Many services
sampled at once all fail within about one connect, together, not one after another; a recent
failure answers at once for a short while, then the server is tried again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from helpers import async_wait_for

from docktor.dev.embedded import free_port
from docktor.plan import ServicePlan
from docktor.sources import MetricUnavailable
from docktor.sources.nats import NatsMetricSource, NatsQueueSpec
from docktor.sources.redis import RedisQueueSpec, RedisStreamSource

SERVICES = 20
# A test that fails waits this long at most, not for the old one-after-another queue.
GIVE_UP_S = 30.0


@dataclass
class SilentServer:
    """Accepts TCP connections and never says a word; counts them, and the ones still open."""

    port: int = 0
    accepted: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    open: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.writers.append(writer)
        try:
            while await reader.read(4096):
                pass
        finally:
            self.open -= 1


@pytest.fixture
async def silent() -> AsyncIterator[SilentServer]:
    server = SilentServer()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        for writer in server.writers:
            writer.close()
        listener.close()
        await listener.wait_closed()


def nats_plan(url: str, name: str = "consumer") -> ServicePlan:
    queue = NatsQueueSpec(url=url, stream="S", consumer="c")
    return ServicePlan(name=name, backend="compose", queue=queue)


def redis_plan(url: str, name: str = "consumer") -> ServicePlan:
    queue = RedisQueueSpec(url=url, stream="S", group="g")
    return ServicePlan(name=name, backend="compose", queue=queue)


async def sample_all(source: NatsMetricSource | RedisStreamSource, url: str) -> list[float]:
    """SERVICES services on one server sampled at once: each must fail as unavailable; the
    seconds after the start at which each did."""
    plan = nats_plan if isinstance(source, NatsMetricSource) else redis_plan
    started = time.monotonic()

    async def one(index: int) -> float:
        with pytest.raises(MetricUnavailable, match="cannot connect"):
            await source.sample(plan(url, f"service-{index}"))
        return time.monotonic() - started

    return await asyncio.wait_for(
        asyncio.gather(*(one(i) for i in range(SERVICES))), timeout=GIVE_UP_S
    )


async def test_nats_services_on_a_refused_port_all_fail_at_once() -> None:
    # Before: each connect held the pool's lock for 1.5 s of nats-py's own retries, so the
    # 20th service failed after 30 s.
    source = NatsMetricSource()
    try:
        failed_after = await sample_all(source, f"nats://127.0.0.1:{free_port()}")
    finally:
        await source.close()
    assert max(failed_after) < 1.0, failed_after


async def test_nats_services_on_a_silent_server_share_one_connect(silent: SilentServer) -> None:
    # Before: one connect after another, each up to 4 tries of connect_timeout.
    source = NatsMetricSource(connect_timeout=1.0)
    try:
        failed_after = await sample_all(source, f"nats://127.0.0.1:{silent.port}")
    finally:
        await source.close()
    # One connect (nats-py may open a second socket before the deadline), shared by all.
    assert silent.accepted <= 2
    assert max(failed_after) < 3 * source.connect_timeout, failed_after
    # The sockets of the failed connect are closed, not left to the server.
    await async_wait_for(lambda: _none_open(silent), 10, "the failed connect's sockets closed")


async def _none_open(server: SilentServer) -> bool:
    return server.open == 0


async def test_a_failed_nats_connect_answers_for_a_while_then_the_server_is_tried_again(
    silent: SilentServer,
) -> None:
    source = NatsMetricSource(connect_timeout=0.5, retry_connect_after=1.0)
    url = f"nats://127.0.0.1:{silent.port}"
    try:
        with pytest.raises(MetricUnavailable, match="cannot connect \\(timed out\\)"):
            await source.sample(nats_plan(url))
        tried = silent.accepted
        assert tried >= 1

        # At once, with the same words, and without touching the server.
        started = time.monotonic()
        with pytest.raises(MetricUnavailable, match="cannot connect \\(timed out\\)"):
            await source.sample(nats_plan(url, "another"))
        assert time.monotonic() - started < source.connect_timeout
        assert silent.accepted == tried

        async def tried_again() -> bool:
            with pytest.raises(MetricUnavailable):
                await source.sample(nats_plan(url))
            return silent.accepted > tried

        await async_wait_for(tried_again, 10, "a new connect once the failure is old")
    finally:
        await source.close()


async def test_a_nats_sample_given_up_on_leaves_the_shared_connect_to_the_others(
    silent: SilentServer,
) -> None:
    source = NatsMetricSource(connect_timeout=1.0)
    url = f"nats://127.0.0.1:{silent.port}"
    try:
        first = asyncio.create_task(source.sample(nats_plan(url, "first")))
        second = asyncio.create_task(source.sample(nats_plan(url, "second")))

        async def connecting() -> bool:
            return silent.accepted >= 1

        await async_wait_for(connecting, 10, "the connect under way")
        first.cancel()  # as when its observe activity times out
        with pytest.raises(asyncio.CancelledError):
            await first
        with pytest.raises(MetricUnavailable, match="cannot connect \\(timed out\\)"):
            await second
        assert silent.accepted <= 2
    finally:
        await source.close()


async def test_closing_the_nats_source_mid_connect_leaves_no_socket_open(
    silent: SilentServer,
) -> None:
    source = NatsMetricSource(connect_timeout=10.0)
    sample = asyncio.create_task(source.sample(nats_plan(f"nats://127.0.0.1:{silent.port}")))

    async def connecting() -> bool:
        return silent.open >= 1

    await async_wait_for(connecting, 10, "the connect under way")
    await source.close()
    with pytest.raises(asyncio.CancelledError):
        await sample
    await async_wait_for(lambda: _none_open(silent), 10, "the connect's socket closed")


async def test_redis_services_on_an_unreachable_server_fail_together(
    silent: SilentServer,
) -> None:
    # Redis shares the pool's one connection: the others wait for it (at most request_timeout),
    # alongside the service whose connect runs, not after it.
    source = RedisStreamSource(connect_timeout=0.5, request_timeout=1.0)
    try:
        refused = await sample_all(source, f"redis://127.0.0.1:{free_port()}/0")
        assert max(refused) < 1.0, refused
    finally:
        await source.close()
    source = RedisStreamSource(connect_timeout=0.5, request_timeout=1.0)
    try:
        plan = redis_plan(f"redis://127.0.0.1:{silent.port}/0")
        started = time.monotonic()
        results = await asyncio.wait_for(
            asyncio.gather(*(source.sample(plan) for _ in range(SERVICES)), return_exceptions=True),
            timeout=GIVE_UP_S,
        )
        elapsed = time.monotonic() - started
    finally:
        await source.close()
    assert all(isinstance(r, MetricUnavailable) for r in results), results
    assert elapsed < 3 * source.request_timeout
