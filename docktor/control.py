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

from docktor.client import autoscaler_input, missing_search_attributes
from docktor.config import DocktorConfig, ServiceSpec
from docktor.model import Decision, LoopStatus

WORKFLOW_NAME = "ServiceAutoscaler"


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
                    SearchAttributeKey.for_keyword("DocktorProject"), config.project or ""
                ),
                SearchAttributePair(SearchAttributeKey.for_keyword("DocktorService"), service.name),
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


async def stop_loop(client: Client, config: DocktorConfig, service: str) -> LoopStatus:
    """Cancel the loop and wait for its final `stopped` decision."""
    handle = await running_handle(client, config, service)
    await handle.cancel()
    return await handle.result()


async def loop_status(client: Client, config: DocktorConfig, service: str) -> LoopStatus:
    handle = await running_handle(client, config, service)
    return await handle.query("status", result_type=LoopStatus)


async def loop_decisions(
    client: Client, config: DocktorConfig, service: str, tail: int = 10
) -> list[Decision]:
    handle = await running_handle(client, config, service)
    return await handle.query("decisions", tail, result_type=list[Decision])
