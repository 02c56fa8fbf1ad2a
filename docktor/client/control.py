"""The loop client as plain functions of (client, config, service), for the callers (the dev
stack, the tests) that hold a Temporal client rather than a LoopClient. Each is one call of
docktor/client/loops.py's LoopClient: same names, same deadlines, same errors.
"""

from __future__ import annotations

from temporalio.client import Client, WorkflowHandle

from docktor.client.loops import (
    ANSWER_TIMEOUT,
    START_TIMEOUT,
    UPDATE_TIMEOUT,
    ControlRefused,
    LoopClient,
    LoopNotAnswering,
    NoRunningLoop,
    StartResult,
)
from docktor.loop.messages import LoopStatus, ManualScaleResult
from docktor.spec import DocktorConfig, ServiceSpec
from docktor.values import Decision

__all__ = [
    "ANSWER_TIMEOUT",
    "START_TIMEOUT",
    "UPDATE_TIMEOUT",
    "ControlRefused",
    "LoopNotAnswering",
    "NoRunningLoop",
    "StartResult",
    "loop_decisions",
    "loop_status",
    "running_handle",
    "scale_to",
    "start_loop",
    "stop_loop",
]


async def start_loop(
    client: Client, config: DocktorConfig, service: ServiceSpec, timeout: float = START_TIMEOUT
) -> StartResult:
    return await LoopClient(client, config).start(service, timeout=timeout)


async def stop_loop(
    client: Client, config: DocktorConfig, service: str, timeout: float | None = UPDATE_TIMEOUT
) -> LoopStatus:
    return await LoopClient(client, config).stop(service, timeout)


async def running_handle(client: Client, config: DocktorConfig, service: str) -> WorkflowHandle:
    return await LoopClient(client, config).handle(service)


async def loop_status(client: Client, config: DocktorConfig, service: str) -> LoopStatus:
    return await LoopClient(client, config).status(service)


async def loop_decisions(
    client: Client, config: DocktorConfig, service: str, tail: int = 10
) -> list[Decision]:
    return await LoopClient(client, config).decisions(service, tail)


async def scale_to(
    client: Client,
    config: DocktorConfig,
    service: str,
    replicas: int,
    by: str = "",
    timeout: float = UPDATE_TIMEOUT,
) -> ManualScaleResult:
    return await LoopClient(client, config).scale_to(service, replicas, by=by, timeout=timeout)
