"""Starting, stopping and reading the scaling loops through a Temporal client.

The workflow is addressed by its registered name, so this module (and the CLI) never import
the workflow code.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from docktor.client.temporal import autoscaler_input, missing_search_attributes
from docktor.loop import names
from docktor.loop.messages import Decision, ForecastView, LoopState, LoopStatus, SpecUpdate
from docktor.plan import LLMPlan, ServicePlan
from docktor.spec import DocktorConfig, ServiceSpec

WORKFLOW_NAME = names.WORKFLOW


class NoRunningLoop(Exception):
    pass


@dataclass
class StartResult:
    workflow_id: str
    run_id: str | None
    started: bool  # False: a loop was already running and was left in place


async def start_loop(client: Client, config: DocktorConfig, service: ServiceSpec) -> StartResult:
    workflow_id = config.workflow_id(service.name)
    with_attributes = not await missing_search_attributes(client)
    attributes = None
    if with_attributes:
        attributes = TypedSearchAttributes(
            [
                SearchAttributePair(
                    SearchAttributeKey.for_keyword(names.PROJECT_ATTRIBUTE), config.project or ""
                ),
                SearchAttributePair(
                    SearchAttributeKey.for_keyword(names.SERVICE_ATTRIBUTE), service.name
                ),
            ]
        )
    try:
        handle = await client.start_workflow(
            WORKFLOW_NAME,
            autoscaler_input(config, service, search_attributes=with_attributes),
            id=workflow_id,
            task_queue=config.temporal.task_queue,
            search_attributes=attributes,
            static_summary=(
                f"docktor autoscaler for {service.name} ({service.backend}): "
                f"{service.min_replicas}..{service.max_replicas} replicas"
            ),
        )
    except WorkflowAlreadyStartedError:
        # Leave the running loop in place, but hand it the config as it is now (rules, bounds,
        # model): `docktor config set-model` and edits to docktor.yaml take effect this way.
        running = client.get_workflow_handle(workflow_id)
        await running.execute_update(
            "update_spec",
            SpecUpdate(service=ServicePlan.from_spec(service), llm=LLMPlan.from_spec(config.llm)),
            result_type=LoopStatus,
        )
        return StartResult(workflow_id, None, started=False)
    return StartResult(workflow_id, handle.result_run_id, started=True)


async def running_handle(client: Client, config: DocktorConfig, service: str) -> WorkflowHandle:
    handle = client.get_workflow_handle(config.workflow_id(service), result_type=LoopStatus)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NoRunningLoop(
                f"no loop for service '{service}' (start it: python -m starter --service {service})"
            ) from None
        raise
    if description.status != WorkflowExecutionStatus.RUNNING:
        raise NoRunningLoop(
            f"the loop for service '{service}' is not running ({description.status.name.lower()})"
        )
    return handle


async def stop_loop(
    client: Client, config: DocktorConfig, service: str, timeout: float | None = None
) -> LoopStatus:
    """Cancel the loop and wait for its final `stopped` decision, at most `timeout` seconds
    (None: as long as it takes). No answer in time is LoopNotAnswering: the cancel request
    stays, and the loop stops when a worker picks it up."""
    handle = await running_handle(client, config, service)
    await handle.cancel()
    try:
        # One deadline for the whole wait: the SDK polls for the result without a limit, so
        # a loop whose worker is gone would be waited for for ever.
        async with asyncio.timeout(timeout):
            return await handle.result()
    except TimeoutError:
        raise LoopNotAnswering(
            f"the loop for service '{service}' was asked to stop but has not stopped within "
            f"{timeout:g}s (is a worker running on task queue '{config.temporal.task_queue}'?); "
            "it stops when a worker picks it up"
        ) from None


async def loop_status(client: Client, config: DocktorConfig, service: str) -> LoopStatus:
    handle = await running_handle(client, config, service)
    return await handle.query("status", result_type=LoopStatus)


async def loop_decisions(
    client: Client, config: DocktorConfig, service: str, tail: int = 10
) -> list[Decision]:
    handle = await running_handle(client, config, service)
    return await handle.query("decisions", tail, result_type=list[Decision])


# ---- operating a running loop (docktor status / explain / pause / scale / ...) ----------------

# Imported here rather than at the top so that this section stays a pure addition to the module.
import asyncio  # noqa: E402
from datetime import timedelta  # noqa: E402
from typing import TypeVar  # noqa: E402

from temporalio.client import (  # noqa: E402
    WorkflowQueryFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)

T = TypeVar("T")

# How long a query or the acceptance of an update may take. A loop whose worker is down never
# answers; without a deadline the command would hang instead of saying so.
ANSWER_TIMEOUT = timedelta(seconds=10)
# How long an update (pause, scale, approve, ...) may take in all, acceptance and result, unless
# the caller says otherwise: a scale that stops replicas rightly takes some seconds, but a loop
# whose worker is gone never answers.
UPDATE_TIMEOUT = 30.0


class LoopNotAnswering(Exception):
    """The workflow runs, but no worker picked up the query or update in time."""


async def query_status(client: Client, config: DocktorConfig, service: str) -> LoopStatus:
    """`loop_status` with a deadline: a stalled worker is reported, not waited for."""
    return await _query(client, config, service, names.STATUS, None, LoopStatus)


async def query_decisions(
    client: Client, config: DocktorConfig, service: str, tail: int
) -> list[Decision]:
    return await _query(client, config, service, names.DECISIONS, tail, list[Decision])


async def query_loop_state(client: Client, config: DocktorConfig, service: str) -> LoopState:
    """The loop's whole state (policy memory, last sample, last scales), read-only."""
    return await _query(client, config, service, names.LOOP_STATE, None, LoopState)


async def _query(
    client: Client,
    config: DocktorConfig,
    service: str,
    query: str,
    arg: object | None,
    result_type: type[T],
) -> T:
    handle = await running_handle(client, config, service)
    args = [] if arg is None else [arg]
    try:
        return await handle.query(query, *args, result_type=result_type, rpc_timeout=ANSWER_TIMEOUT)
    except RPCError as exc:
        if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            raise LoopNotAnswering(_not_answering(config, service, ANSWER_TIMEOUT)) from None
        raise


async def query_forecast(client: Client, config: DocktorConfig, service: str) -> ForecastView:
    """The `forecast` query with a deadline. A loop started by a release without the query
    answers with a failed query, worded here as one line."""
    try:
        return await _query(client, config, service, names.FORECAST, None, ForecastView)
    except WorkflowQueryFailedError as exc:
        raise LoopNotAnswering(
            f"the loop for '{service}' cannot answer the forecast query ({exc.message}); it "
            "may run an older release: restart it with the current worker"
        ) from None


async def send_update(
    client: Client,
    config: DocktorConfig,
    service: str,
    update: str,
    arg: object | None,
    result_type: type[T],
    timeout: float = UPDATE_TIMEOUT,
) -> T:
    """Run one of the loop's updates, waiting at most `timeout` seconds for its result. A
    refusal by its validator surfaces as WorkflowUpdateFailedError (the reason in `.cause`),
    for the caller to word; no answer in time is LoopNotAnswering."""
    handle = await running_handle(client, config, service)
    args = [] if arg is None else [arg]
    deadline = timedelta(seconds=timeout)
    update_handle = None
    try:
        # One deadline for the whole exchange, not per call: the SDK sends the update again for
        # as long as the server reports it only admitted, and then polls for the result without
        # limit, so a loop whose worker died after accepting would be waited for for ever.
        async with asyncio.timeout(timeout):
            update_handle = await handle.start_update(
                update,
                *args,
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                result_type=result_type,
                rpc_timeout=deadline,
            )
            return await update_handle.result(rpc_timeout=deadline)
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        # The SDK turns the timeout's cancellation into its own error, hence both.
        if update_handle is None:
            raise LoopNotAnswering(_not_answering(config, service, deadline)) from None
        raise LoopNotAnswering(
            f"the loop for service '{service}' accepted the request but has not finished it "
            f"within {timeout:g}s; it may still do so (see `docktor status`)"
        ) from None


async def send_nudge(client: Client, config: DocktorConfig, service: str) -> None:
    handle = await running_handle(client, config, service)
    await handle.signal("nudge")


def _not_answering(config: DocktorConfig, service: str, waited: timedelta) -> str:
    return (
        f"the loop for service '{service}' has not answered within "
        f"{waited.total_seconds():g}s (is a worker running on task queue "
        f"'{config.temporal.task_queue}'?)"
    )
