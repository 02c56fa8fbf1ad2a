"""Connecting to Temporal, the way every docktor entry point does it.

Uses only temporalio's client side (never temporalio.workflow), so the domain stays free of the
workflow sandbox.
"""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from docktor import names
from docktor.loop.messages import AutoscalerInput
from docktor.plan import LLMPlan, ServicePlan
from docktor.spec import DocktorConfig, ServiceSpec
from docktor.text import connect_reason

_INDEXED_TYPES = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
}
SEARCH_ATTRIBUTE_TYPES = {
    name: _INDEXED_TYPES[kind] for name, kind in names.SEARCH_ATTRIBUTES.items()
}


class TemporalUnreachable(Exception):
    pass


async def connect(
    config: DocktorConfig, address: str | None = None, identity: str | None = None
) -> Client:
    """`identity` names the caller in the history of every signal and update it sends (the
    SDK's default is pid@host); `docktor mcp` passes `mcp:<client name>`."""
    target = address or config.temporal.address
    try:
        return await Client.connect(
            target,
            namespace=config.temporal.namespace,
            data_converter=pydantic_data_converter,
            identity=identity,
        )
    except Exception as exc:  # the SDK raises RuntimeError for every connect failure
        raise TemporalUnreachable(
            f"cannot reach Temporal at {target} ({connect_reason(exc)}); "
            "is it running? (`docktor dev` starts one, or set TEMPORAL_ADDRESS)"
        ) from None


async def missing_search_attributes(client: Client) -> list[str]:
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return [name for name in SEARCH_ATTRIBUTE_TYPES if name not in response.custom_attributes]


async def ensure_search_attributes(client: Client) -> list[str]:
    """Register the Docktor* search attributes that the namespace lacks; returns those added."""
    missing = await missing_search_attributes(client)
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes={name: SEARCH_ATTRIBUTE_TYPES[name] for name in missing},
            )
        )
    return missing


def autoscaler_input(
    config: DocktorConfig, service: ServiceSpec, search_attributes: bool = True
) -> AutoscalerInput:
    """The workflow's input: the plan built from the service's spec, once, here."""
    return AutoscalerInput(
        project=config.project or "default",
        service=ServicePlan.from_spec(service),
        llm=LLMPlan.from_spec(config.llm),
        journal_path=config.journal_path,
        search_attributes=search_attributes,
    )


def ui_url(
    config: DocktorConfig,
    workflow_id: str | None = None,
    base: str | None = None,
    address: str | None = None,
) -> str:
    """The Web UI link under `base`; without one, where Temporal's dev server puts its UI by
    default: the API's port + 1000 on the API's host (7233 -> 8233)."""
    if base is None:
        host, _, port = (address or config.temporal.address).rpartition(":")
        base = f"http://{host}:{int(port) + 1000}" if port.isdigit() else f"http://{host}:8233"
    url = f"{base.rstrip('/')}/namespaces/{config.temporal.namespace}/workflows"
    return f"{url}/{workflow_id}" if workflow_id else url
