"""ServiceAutoscaler: the story of one service's scaling loop.

observe -> evaluate -> (advise) -> apply -> record -> wait, again and again, until cancelled.
Everything here is deterministic orchestration; the arithmetic lives in docktor/policy.py and
every side effect in an activity.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.loop import OBSERVE_ATTEMPTS, LoopActivities
    from docktor.config import ServiceSpec
    from docktor.model import (
        ApplyInput,
        AutoscalerInput,
        Decision,
        EvaluateInput,
        LoopStatus,
        Observation,
        ObserveInput,
        Proposal,
        Provenance,
        RecordInput,
    )
    from docktor.policy import cooldown_left, latest

PROJECT = SearchAttributeKey.for_keyword("DocktorProject")
SERVICE = SearchAttributeKey.for_keyword("DocktorService")
REPLICAS = SearchAttributeKey.for_int("DocktorReplicas")
LAST_ACTION = SearchAttributeKey.for_keyword("DocktorLastAction")
PAUSED = SearchAttributeKey.for_bool("DocktorPaused")

# Reading metrics: a few quick tries, then the iteration records a `hold` and the loop goes on;
# the next tick tries again anyway.
OBSERVE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=OBSERVE_ATTEMPTS,
    non_retryable_error_types=["ConfigError"],
)
# Scaling: idempotent, so retried with capped backoff for a while before giving up.
APPLY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
    non_retryable_error_types=["ConfigError"],
)
# Writing the JSONL log: local disk; a handful of tries is plenty.
RECORD_RETRY = RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10))


@workflow.defn(name="ServiceAutoscaler")
class ServiceAutoscaler:
    @workflow.init
    def __init__(self, request: AutoscalerInput) -> None:
        self.request = request
        self.spec: ServiceSpec = request.service
        self.state = request.state
        self.nudged = False

    # ---- the loop ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: AutoscalerInput) -> LoopStatus:
        self._publish_identity()
        try:
            for _ in range(request.iterations_per_run):
                await self.iterate()
                if workflow.info().is_continue_as_new_suggested():
                    break
                await self.wait_for_next_tick()
        except asyncio.CancelledError:
            await self.stop()
            return self.status()
        # Handlers may still be running (an update in flight); let them finish so nothing is
        # lost, then carry the whole state into a fresh run with a short history.
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(request.model_copy(update={"state": self.state}))

    async def iterate(self) -> None:
        self.state.iteration += 1
        observation = await self.observe()
        if observation is None:
            return
        proposal = await self.evaluate(observation)
        # advise: the LLM step arrives with the LLM issue; the rules' proposal stands.
        replicas, failure = await self.apply(proposal)
        self.state.last_sample = observation
        action = proposal.action if failure is None else "hold"
        reason = proposal.reason if failure is None else f"{proposal.reason}; {failure}"
        await self.record(
            action=action,
            current=proposal.current_replicas,
            target=replicas,
            reason=reason,
            observations=proposal.observations,
            matched_rules=proposal.matched_rules,
        )

    async def observe(self) -> Observation | None:
        """One sample; when it cannot be had, the iteration is a recorded `hold`."""
        try:
            return await workflow.execute_activity_method(
                LoopActivities.observe,
                ObserveInput(project=self.request.project, service=self.spec),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=OBSERVE_RETRY,
                summary=f"observe {self.spec.name}",
            )
        except ActivityError as err:
            current = self.state.replicas if self.state.replicas is not None else 0
            await self.record(
                action="hold",
                current=current,
                target=current,
                reason=f"metrics unavailable: {_cause(err)}; holding",
            )
            return None

    async def evaluate(self, observation: Observation) -> Proposal:
        # A local activity, so the result is in history: changing policy code later never
        # breaks the replay of a loop that is running now.
        return await workflow.execute_local_activity_method(
            LoopActivities.evaluate,
            EvaluateInput(
                service=self.spec,
                observation=observation,
                previous=self.state.last_sample,
                now=workflow.now(),
                last_scale_up_at=self.state.last_scale_up_at,
                last_scale_down_at=self.state.last_scale_down_at,
            ),
            start_to_close_timeout=timedelta(seconds=10),
        )

    async def apply(self, proposal: Proposal) -> tuple[int, str | None]:
        """Scale when the proposal says so; (replicas now, failure reason or None)."""
        if proposal.target_replicas == proposal.current_replicas:
            self.state.replicas = proposal.current_replicas
            return proposal.current_replicas, None
        if self.state.paused:
            return proposal.current_replicas, f"paused ({self.state.pause_reason or 'no reason'})"
        change = f"{self.spec.name} {proposal.current_replicas} -> {proposal.target_replicas}"
        # Started, then shielded: a cancellation arriving mid-scale waits for the scale to
        # finish, so a loop is never stopped with a half-applied replica count.
        handle = workflow.start_activity_method(
            LoopActivities.apply,
            ApplyInput(
                project=self.request.project,
                service=self.spec,
                target_replicas=proposal.target_replicas,
                summary=change,
            ),
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=APPLY_RETRY,
            summary=f"{change}: {', '.join(proposal.matched_rules) or proposal.reason}",
        )
        try:
            result = await asyncio.shield(handle)
        except asyncio.CancelledError:
            await self._settle(handle)
            raise
        except ActivityError as err:
            return (
                proposal.current_replicas,
                f"scaling to {proposal.target_replicas} failed: {_cause(err)}",
            )
        self.state.replicas = result.replicas
        now = workflow.now()
        if result.replicas > proposal.current_replicas:
            self.state.last_scale_up_at = now
        elif result.replicas < proposal.current_replicas:
            self.state.last_scale_down_at = now
        return result.replicas, None

    async def _settle(self, handle: asyncio.Future) -> None:
        try:
            result = await handle
            self.state.replicas = result.replicas
        except ActivityError:
            pass

    async def record(
        self,
        action: str,
        current: int,
        target: int,
        reason: str,
        observations: dict[str, float] | None = None,
        matched_rules: list[str] | None = None,
    ) -> Decision:
        info = workflow.info()
        decision = Decision(
            timestamp=workflow.now(),
            service=self.spec.name,
            action=action,  # type: ignore[arg-type]
            current_replicas=current,
            target_replicas=target,
            reason=reason,
            observations=observations or {},
            matched_rules=matched_rules or [],
            metadata=Provenance(),
            iteration=self.state.iteration,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
        )
        self.state.remember(decision)
        self._publish_decision(decision)
        if self.request.journal_path:
            try:
                await workflow.execute_activity_method(
                    LoopActivities.record,
                    RecordInput(path=self.request.journal_path, decision=decision),
                    start_to_close_timeout=timedelta(seconds=10),
                    retry_policy=RECORD_RETRY,
                    summary=f"record {action}",
                )
            except ActivityError as err:
                # The decision is safe in workflow state and history; only the file copy failed.
                workflow.logger.warning("decision log not written: %s", _cause(err))
        return decision

    async def wait_for_next_tick(self) -> None:
        """A durable timer: survives worker restarts; a nudge cuts it short."""
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self.nudged, timeout=timedelta(seconds=self.spec.check_interval)
            )
        self.nudged = False

    async def stop(self) -> None:
        """Graceful end: one final `stopped` decision, recorded like every other."""
        current = self.state.replicas if self.state.replicas is not None else 0
        self.state.iteration += 1
        await self.record(
            action="stopped", current=current, target=current, reason="loop cancelled"
        )

    # ---- what the outside world sees ---------------------------------------------------------

    def _publish_identity(self) -> None:
        if self.request.search_attributes:
            workflow.upsert_search_attributes(
                [PROJECT.value_set(self.request.project), SERVICE.value_set(self.spec.name)]
            )

    def _publish_decision(self, decision: Decision) -> None:
        summary = (
            f"{decision.action}: {decision.current_replicas} -> {decision.target_replicas}"
            f" ({decision.reason})"
        )
        workflow.set_current_details(f"Last decision at {decision.timestamp:%H:%M:%S}: {summary}")
        workflow.upsert_memo({"replicas": decision.target_replicas, "last_action": decision.action})
        if self.request.search_attributes:
            workflow.upsert_search_attributes(
                [
                    REPLICAS.value_set(decision.target_replicas),
                    LAST_ACTION.value_set(decision.action),
                    PAUSED.value_set(self.state.paused),
                ]
            )

    @workflow.query
    def status(self) -> LoopStatus:
        now = workflow.now()
        up_left = cooldown_left(self.state.last_scale_up_at, self.spec.cooldown.up, now)
        last_any = latest(self.state.last_scale_up_at, self.state.last_scale_down_at)
        down_left = cooldown_left(last_any, self.spec.cooldown.down, now)
        return LoopStatus(
            workflow_id=workflow.info().workflow_id,
            service=self.spec.name,
            replicas=self.state.replicas,
            min_replicas=self.spec.min_replicas,
            max_replicas=self.spec.max_replicas,
            paused=self.state.paused,
            pause_reason=self.state.pause_reason,
            iteration=self.state.iteration,
            last_decision=self.state.decisions[-1] if self.state.decisions else None,
            cooldown_up_until=now + timedelta(seconds=up_left) if up_left else None,
            cooldown_down_until=now + timedelta(seconds=down_left) if down_left else None,
        )

    @workflow.query
    def decisions(self, tail: int = 10) -> list[Decision]:
        return self.state.decisions[-tail:] if tail > 0 else []

    @workflow.signal
    def nudge(self) -> None:
        """Evaluate now instead of at the next tick."""
        self.nudged = True


def _cause(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or err)
