"""Loops started by a release whose workflow ids could collide (`docktor-<project>-<service>`)
are still found and steered by the current client, and only by the config they belong to.

Project `t-<tag>` with service `x-consumer` and project `t-<tag>-x` with service `consumer`
had the same id; now each pair has its own. The services have no queue and min_replicas 0,
so the loops hold and start no process.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path

import pytest
from helpers import serving_loops, write_idle_config
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from docktor import names
from docktor.client.loops import LoopClient, NoRunningLoop
from docktor.client.operate import collect_status
from docktor.client.temporal import autoscaler_input, connect
from docktor.dev.embedded import EmbeddedTemporal
from docktor.spec import DocktorConfig, load_config

pytestmark = pytest.mark.integration


def colliding_configs(tmp_path: Path, address: str) -> tuple[DocktorConfig, DocktorConfig]:
    tag = uuid.uuid4().hex[:8]
    paths = []
    for folder, project_tag, service in (
        ("one", tag, "x-consumer"),
        ("two", f"{tag}-x", "consumer"),
    ):
        (tmp_path / folder).mkdir()
        paths.append(
            write_idle_config(
                tmp_path / folder,
                address,
                "t",
                project_tag,
                journal=False,
                name=service,
                min_replicas=0,
                max_replicas=1,
            )
        )
    one, two = (load_config(path) for path in paths)
    assert one.legacy_workflow_id("x-consumer") == two.legacy_workflow_id("consumer")
    assert one.workflow_id("x-consumer") != two.workflow_id("consumer")
    return one, two


async def start_as_an_older_release(
    client: Client, config: DocktorConfig, service: str, with_attributes: bool
) -> WorkflowHandle:
    """What the starter of a release before the new ids did: the legacy id, the search
    attributes when the server has them."""
    attributes = None
    if with_attributes:
        attributes = TypedSearchAttributes(
            [
                SearchAttributePair(
                    SearchAttributeKey.for_keyword(names.PROJECT_ATTRIBUTE), config.project or ""
                ),
                SearchAttributePair(
                    SearchAttributeKey.for_keyword(names.SERVICE_ATTRIBUTE), service
                ),
            ]
        )
    return await client.start_workflow(
        names.WORKFLOW,
        autoscaler_input(config, config.service(service), search_attributes=with_attributes),
        id=config.legacy_workflow_id(service),
        task_queue=config.temporal.task_queue,
        search_attributes=attributes,
    )


async def update_inputs(handle: WorkflowHandle, update: str) -> list[dict[str, object]]:
    """The project and service that each accepted `update` of the loop's history named."""
    named = []
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_execution_update_accepted_event_attributes"):
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            if request.input.name == update:
                sent = json.loads(request.input.args.payloads[0].data)
                named.append({"project": sent.get("project"), "service": sent.get("service")})
    return named


async def exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_a_loop_under_the_old_id_is_steered_by_its_own_config_only(
    temporal_dev: EmbeddedTemporal, tmp_path: Path
) -> None:
    one, two = colliding_configs(tmp_path, temporal_dev.address)
    legacy_id = one.legacy_workflow_id("x-consumer")
    async with serving_loops(one) as client:
        old = await start_as_an_older_release(client, one, "x-consumer", with_attributes=True)
        try:
            loops = LoopClient(client, one)
            status = await loops.status("x-consumer")
            assert status.workflow_id == legacy_id
            # `docktor status` shows the id the loop runs under, not the one a new loop gets.
            rows = await collect_status(one)
            assert [r.workflow_id for r in rows if r.service == "x-consumer"] == [legacy_id]
            paused = await loops.pause("x-consumer", reason="deploy", by="tester")
            assert paused.paused and paused.workflow_id == legacy_id
            # The request named the loop it was meant for, which the loop's validator checks.
            assert await update_inputs(old, names.PAUSE) == [
                {"project": one.project, "service": "x-consumer"}
            ]
            # Starting again hands the running loop the config instead of starting a second
            # loop of the same service under the new id.
            again = await loops.start(one.service("x-consumer"))
            assert (again.started, again.workflow_id) == (False, legacy_id)
            assert not await exists(client, one.workflow_id("x-consumer"))
            # The other project's service with the same old id does not reach it.
            with pytest.raises(NoRunningLoop):
                await LoopClient(client, two).handle("consumer")
            await loops.stop("x-consumer")
        finally:
            with contextlib.suppress(RPCError):  # stopped already
                await old.terminate()


async def test_without_search_attributes_the_input_says_whose_loop_it_is(
    temporal_dev: EmbeddedTemporal, tmp_path: Path
) -> None:
    """A loop on a server without the Docktor* attributes: read its input. No worker is needed
    to find a loop, so none polls this task queue."""
    one, two = colliding_configs(tmp_path, temporal_dev.address)
    client = await connect(one)
    old = await start_as_an_older_release(client, one, "x-consumer", with_attributes=False)
    try:
        found = await LoopClient(client, one).handle("x-consumer")
        assert found.id == one.legacy_workflow_id("x-consumer")
        with pytest.raises(NoRunningLoop):
            await LoopClient(client, two).handle("consumer")
    finally:
        await old.terminate()
