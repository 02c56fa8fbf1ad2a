"""One typed client for the running loops of a config: start and stop them, read them, steer them.

Every query, signal and update is addressed by its name in docktor/names.py (this module
never imports the workflow code), every call has a deadline, and every answer is a model:

- queries (status, decisions, loop state, forecast) wait at most `answer_timeout`;
- a control (pause, resume, scale_to, approve, reject, update_spec) waits at most its `timeout`
  in all, and carries the time after which it is void (`void_after`): a loop that receives it
  later refuses it, so a control this client gave up on is never carried out afterwards.

The void time is read on this machine's clock and judged by the loop on the Temporal server's
(workflow time): the two must agree to within about a second (NTP), or controls are refused as
expired, the refusal saying by how much.

Failures are exceptions whose message is the line an operator reads: NoRunningLoop,
LoopNotAnswering (no worker took the call in time), ControlRefused (the loop's validator said
no, or the control failed).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from docktor import names
from docktor.client.temporal import autoscaler_input, missing_search_attributes
from docktor.loop.messages import (
    LoopState,
    LoopStatus,
    ManualScale,
    ManualScaleResult,
    PauseRequest,
    PendingApproval,
    ResumeRequest,
    SpecUpdate,
    Verdict,
)
from docktor.plan import LLMPlan, ServicePlan
from docktor.spec import DocktorConfig, LLMSpec, ServiceSpec
from docktor.values import Decision, ForecastView

T = TypeVar("T")

# How long a query, a signal or a lookup may take. A loop whose worker is down never answers a
# query; without a deadline the caller would hang instead of saying so.
ANSWER_TIMEOUT = 10.0
# How long a control may take in all, acceptance and result, unless the caller says otherwise:
# a scale that stops replicas rightly takes some seconds, but a loop whose worker is gone never
# answers.
UPDATE_TIMEOUT = 30.0
# How long `python -m starter` waits for a running loop to take the config it is handed.
START_TIMEOUT = 10.0
# A control is void a little before its sender stops waiting, so that a loop which accepts it at
# the last moment still has time to say so: then "not answered in time" always means "not done".
VOID_MARGIN = 1.0


class NoRunningLoop(Exception):
    """No workflow runs for the service (never started, or ended); `state` is how it ended
    (`completed`, `cancelled`, ...), None when there is no workflow at all."""

    def __init__(self, message: str, state: str | None = None) -> None:
        super().__init__(message)
        self.state = state


class LoopNotAnswering(Exception):
    """The workflow runs, but no worker took the call in time. `accepted`: a control that the
    loop accepted but did not finish in time (it may still finish); otherwise it was not
    accepted, and being void it never will be."""

    def __init__(self, message: str, accepted: bool = False) -> None:
        super().__init__(message)
        self.accepted = accepted


class ControlRefused(Exception):
    """The loop refused a control (its validator's reason), or the control failed in the loop
    (a scale the backend could not make). The message is the loop's own."""


@dataclass
class StartResult:
    workflow_id: str
    run_id: str | None
    started: bool  # False: a loop was already running and was left in place (config updated)
    status: LoopStatus | None = None  # the running loop's answer to its config update


def void_after(timeout: float, now: datetime | None = None) -> datetime:
    """When a control sent now and waited for `timeout` seconds becomes void."""
    margin = min(VOID_MARGIN, timeout / 10)
    return (now or datetime.now(UTC)) + timedelta(seconds=timeout - margin)


class LoopClient:
    """The loops of one config, through one Temporal client."""

    def __init__(
        self, client: Client, config: DocktorConfig, answer_timeout: float = ANSWER_TIMEOUT
    ) -> None:
        self.client = client
        self.config = config
        self.answer_timeout = answer_timeout

    @property
    def _rpc_timeout(self) -> timedelta:
        return timedelta(seconds=self.answer_timeout)

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(
        self, service: ServiceSpec, llm: LLMSpec | None = None, timeout: float = START_TIMEOUT
    ) -> StartResult:
        """Start the service's loop; a loop already running is left in place and handed the
        config as it is now (rules, bounds, model), which it must take within `timeout`."""
        config = self.config
        workflow_id = config.workflow_id(service.name)
        legacy = await self._legacy_loop(service.name)
        if legacy is not None:
            # A loop of an older release runs under the old id: a second one under the new id
            # would scale the same service. It keeps its id and takes the config as it is now.
            status = await self._hand_config(legacy.id, service, llm, timeout)
            return StartResult(legacy.id, None, started=False, status=status)
        with_attributes = not await self._bounded(missing_search_attributes(self.client))
        attributes = None
        if with_attributes:
            attributes = TypedSearchAttributes(
                [
                    SearchAttributePair(
                        SearchAttributeKey.for_keyword(names.PROJECT_ATTRIBUTE),
                        config.project or "",
                    ),
                    SearchAttributePair(
                        SearchAttributeKey.for_keyword(names.SERVICE_ATTRIBUTE), service.name
                    ),
                ]
            )
        try:
            handle = await self.client.start_workflow(
                names.WORKFLOW,
                autoscaler_input(config, service, search_attributes=with_attributes),
                id=workflow_id,
                task_queue=config.temporal.task_queue,
                search_attributes=attributes,
                static_summary=(
                    f"docktor autoscaler for {service.name} ({service.backend}): "
                    f"{service.min_replicas}..{service.max_replicas} replicas"
                ),
                rpc_timeout=self._rpc_timeout,
            )
        except WorkflowAlreadyStartedError:
            # Leave the running loop in place, but hand it the config as it is now:
            # `docktor config set-model` and edits to docktor.yaml take effect this way.
            status = await self._hand_config(workflow_id, service, llm, timeout)
            return StartResult(workflow_id, None, started=False, status=status)
        return StartResult(workflow_id, handle.result_run_id, started=True)

    async def _hand_config(
        self, workflow_id: str, service: ServiceSpec, llm: LLMSpec | None, timeout: float
    ) -> LoopStatus:
        config = self.config
        try:
            return await self.update_spec(service, llm or config.llm, timeout)
        except LoopNotAnswering as exc:
            if exc.accepted:
                raise
            raise LoopNotAnswering(
                f"{workflow_id} is running but has not taken the config within {timeout:g}s "
                f"(is a worker running on task queue '{config.temporal.task_queue}'?); "
                "nothing was changed"
            ) from None

    async def handle(self, service: str) -> WorkflowHandle:
        """The handle of the service's running loop; NoRunningLoop when none runs.

        The loop runs under config.workflow_id, or, started by an older release, under
        config.legacy_workflow_id: that one is taken only when it is verified to be this
        project's loop of this service, since another pair of names may share it."""
        handle, description = await self._describe(self.config.workflow_id(service))
        if description is None or description.status != WorkflowExecutionStatus.RUNNING:
            legacy = await self._legacy_loop(service)
            if legacy is not None:
                return legacy
        if description is None:
            raise NoRunningLoop(
                f"no loop for service '{service}' (start it: python -m starter --service {service})"
            )
        if description.status != WorkflowExecutionStatus.RUNNING:
            state = description.status.name.lower() if description.status else "unknown"
            raise NoRunningLoop(
                f"the loop for service '{service}' is not running ({state})", state=state
            )
        return handle

    async def _describe(
        self, workflow_id: str
    ) -> tuple[WorkflowHandle, WorkflowExecutionDescription | None]:
        """The workflow's handle and description; None when there is no such workflow."""
        handle = self.client.get_workflow_handle(workflow_id, result_type=LoopStatus)
        try:
            return handle, await handle.describe(rpc_timeout=self._rpc_timeout)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return handle, None
            if exc.status == RPCStatusCode.DEADLINE_EXCEEDED:
                raise LoopNotAnswering(self._temporal_silent()) from None
            raise

    async def _legacy_loop(self, service: str) -> WorkflowHandle | None:
        """This service's loop running under the id of an older release, if there is one."""
        handle, description = await self._describe(self.config.legacy_workflow_id(service))
        if description is None or description.status != WorkflowExecutionStatus.RUNNING:
            return None
        if await self._names_this_loop(handle, description, service):
            return handle
        return None

    async def _names_this_loop(
        self, handle: WorkflowHandle, description: WorkflowExecutionDescription, service: str
    ) -> bool:
        """The workflow is a loop of this config's project for `service`: by its search
        attributes when it has them, else by the project and service its input names."""
        attributes = description.typed_search_attributes
        project = attributes.get(SearchAttributeKey.for_keyword(names.PROJECT_ATTRIBUTE))
        named = attributes.get(SearchAttributeKey.for_keyword(names.SERVICE_ATTRIBUTE))
        if project is not None and named is not None:
            return description.workflow_type == names.WORKFLOW and (project, named) == (
                self.config.project or "",
                service,
            )
        if description.workflow_type != names.WORKFLOW:
            return False
        started = await self._bounded(_input_of(handle))
        if started is None:
            return False
        plan = started.get("service")
        return (
            started.get("project") == names.project_name(self.config.project)
            and isinstance(plan, dict)
            and plan.get("name") == service
        )

    async def stop(self, service: str, timeout: float | None = UPDATE_TIMEOUT) -> LoopStatus:
        """Cancel the loop and wait for its final `stopped` decision, at most `timeout` seconds
        (None: as long as it takes). No answer in time is LoopNotAnswering: the cancel request
        stays, and the loop stops when a worker picks it up."""
        handle = await self.handle(service)
        await handle.cancel(rpc_timeout=self._rpc_timeout)
        try:
            # One deadline for the whole wait: the SDK polls for the result without a limit.
            async with asyncio.timeout(timeout):
                return await handle.result()
        except TimeoutError:
            _raise_if_interrupted()
            raise LoopNotAnswering(
                f"the loop for service '{service}' was asked to stop but has not stopped within "
                f"{timeout:g}s (is a worker running on task queue "
                f"'{self.config.temporal.task_queue}'?); it stops when a worker picks it up",
                accepted=True,
            ) from None

    # ---- queries and the signal --------------------------------------------------------------

    async def status(self, service: str) -> LoopStatus:
        return await self._query(service, names.STATUS, None, LoopStatus)

    async def decisions(self, service: str, tail: int = 10) -> list[Decision]:
        return await self._query(service, names.DECISIONS, tail, list[Decision])

    async def loop_state(self, service: str) -> LoopState:
        """The loop's whole state (policy memory, last sample, last scales), read-only."""
        return await self._query(service, names.LOOP_STATE, None, LoopState)

    async def forecast(self, service: str) -> ForecastView:
        """What the loop has learnt of its load's rhythm. A loop started by a release without
        the query answers with a failed query, worded here as one line."""
        try:
            return await self._query(service, names.FORECAST, None, ForecastView)
        except WorkflowQueryFailedError as exc:
            raise LoopNotAnswering(
                f"the loop for '{service}' cannot answer the forecast query ({exc.message}); it "
                "may run an older release: restart it with the current worker"
            ) from None

    async def nudge(self, service: str) -> None:
        """Evaluate now instead of at the next tick. A signal: harmless whenever it lands, so it
        carries no void time."""
        handle = await self.handle(service)
        await handle.signal(names.NUDGE, rpc_timeout=self._rpc_timeout)

    async def _query(self, service: str, query: str, arg: object | None, result_type: type[T]) -> T:
        handle = await self.handle(service)
        args = [] if arg is None else [arg]
        try:
            return await handle.query(
                query, *args, result_type=result_type, rpc_timeout=self._rpc_timeout
            )
        except RPCError as exc:
            if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                _raise_if_interrupted()
                raise LoopNotAnswering(self._not_answering(service, self.answer_timeout)) from None
            raise

    # ---- controls ----------------------------------------------------------------------------

    async def pause(
        self, service: str, reason: str = "", by: str = "", timeout: float = UPDATE_TIMEOUT
    ) -> LoopStatus:
        request = PauseRequest(
            reason=reason, by=by, void_after=void_after(timeout), **self._addressee(service)
        )
        return await self._control(service, names.PAUSE, request, LoopStatus, timeout)

    async def resume(self, service: str, timeout: float = UPDATE_TIMEOUT) -> LoopStatus:
        request = ResumeRequest(void_after=void_after(timeout), **self._addressee(service))
        return await self._control(service, names.RESUME, request, LoopStatus, timeout)

    async def scale_to(
        self,
        service: str,
        replicas: int,
        reason: str = "",
        by: str = "",
        hold_s: float | None = None,
        timeout: float = UPDATE_TIMEOUT,
    ) -> ManualScaleResult:
        """Scale now; the loop then holds the count for `hold_s` seconds (None: the service's
        default, 0: no hold). The answer says which hold the loop keeps."""
        request = ManualScale(
            replicas=replicas,
            reason=reason,
            by=by,
            hold_s=hold_s,
            void_after=void_after(timeout),
            **self._addressee(service),
        )
        began = time.monotonic()
        result = await self._control(service, names.SCALE_TO, request, ManualScaleResult, timeout)
        if "hold" not in result.model_fields_set:
            # A worker of a release that answered with the decision alone: the hold it keeps
            # is in its status (as data there too), as long as this answer is fresh.
            left = max(timeout - (time.monotonic() - began), 0.1)
            status = await self._bounded(self.status(service), left, service)
            result.hold = status.hold
        return result

    async def approve(
        self, service: str, reason: str = "", by: str = "", timeout: float = UPDATE_TIMEOUT
    ) -> PendingApproval:
        request = Verdict(
            by=by, reason=reason, void_after=void_after(timeout), **self._addressee(service)
        )
        return await self._control(service, names.APPROVE, request, PendingApproval, timeout)

    async def reject(
        self, service: str, reason: str = "", by: str = "", timeout: float = UPDATE_TIMEOUT
    ) -> PendingApproval:
        request = Verdict(
            by=by, reason=reason, void_after=void_after(timeout), **self._addressee(service)
        )
        return await self._control(service, names.REJECT, request, PendingApproval, timeout)

    async def update_spec(
        self, service: ServiceSpec, llm: LLMSpec, timeout: float = UPDATE_TIMEOUT
    ) -> LoopStatus:
        """New rules, bounds or model for a running loop, taken from its next iteration on."""
        request = SpecUpdate(
            service=ServicePlan.from_spec(service),
            llm=LLMPlan.from_spec(llm),
            void_after=void_after(timeout),
            project=self._addressee(service.name)["project"],
        )
        return await self._control(service.name, names.UPDATE_SPEC, request, LoopStatus, timeout)

    def _addressee(self, service: str) -> dict[str, str]:
        """The loop a control is meant for, as the loop names itself (its input's project):
        the loop refuses a control that names another one."""
        return {"project": names.project_name(self.config.project), "service": service}

    async def _control(
        self, service: str, update: str, request: object, result_type: type[T], timeout: float
    ) -> T:
        """Run one of the loop's updates, waiting at most `timeout` seconds in all."""
        deadline = timedelta(seconds=timeout)
        update_handle = None
        try:
            # One deadline for the whole exchange, not per call: the SDK sends the update again
            # for as long as the server reports it only admitted, and then polls for the result
            # without limit, so a loop whose worker died after accepting would be waited for
            # for ever.
            async with asyncio.timeout(timeout):
                handle = await self.handle(service)
                update_handle = await handle.start_update(
                    update,
                    request,
                    wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                    result_type=result_type,
                    rpc_timeout=deadline,
                )
                return await update_handle.result(rpc_timeout=deadline)
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            # The SDK turns the timeout's cancellation into its own error, hence both.
            _raise_if_interrupted()
            if update_handle is None:
                raise LoopNotAnswering(self._not_answering(service, timeout)) from None
            raise LoopNotAnswering(
                f"the loop for service '{service}' accepted the request but has not finished it "
                f"within {timeout:g}s; it may still do so (see `docktor status`)",
                accepted=True,
            ) from None
        except WorkflowUpdateFailedError as exc:
            raise ControlRefused(_refusal(exc)) from None

    # ---- wording -----------------------------------------------------------------------------

    async def _bounded(
        self, call: Awaitable[T], timeout: float | None = None, service: str | None = None
    ) -> T:
        """`call` within `timeout` (default: answer_timeout)."""
        limit = self.answer_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                return await call
        except TimeoutError:
            _raise_if_interrupted()
            if service is None:
                raise LoopNotAnswering(self._temporal_silent()) from None
            raise LoopNotAnswering(self._not_answering(service, limit)) from None

    def _not_answering(self, service: str, waited: float) -> str:
        return (
            f"the loop for service '{service}' has not answered within {waited:g}s (is a worker "
            f"running on task queue '{self.config.temporal.task_queue}'?)"
        )

    def _temporal_silent(self) -> str:
        target = self.client.service_client.config.target_host
        return f"Temporal at {target} has not answered within {self.answer_timeout:g}s"


async def _input_of(handle: WorkflowHandle) -> dict[str, Any] | None:
    """The input of the workflow's current run, as plain JSON (read whatever release wrote
    it), or None when it has none that docktor wrote."""
    async for event in handle.fetch_history_events(page_size=1):
        attributes = event.workflow_execution_started_event_attributes
        payloads = attributes.input.payloads
        if not payloads:
            return None
        try:
            value = json.loads(payloads[0].data)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    return None


def _refusal(exc: WorkflowUpdateFailedError) -> str:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or exc)


def _raise_if_interrupted() -> None:
    """A deadline's error that is really the caller's cancellation (Ctrl-C) stays one: the SDK
    turns a cancelled RPC into its own timeout error, which must not be reported as a loop that
    did not answer."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()
