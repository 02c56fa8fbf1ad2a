"""ServiceAutoscaler: the story of one service's scaling loop.

observe -> evaluate -> (advise) -> apply -> record -> wait, again and again, until cancelled.
Everything here is deterministic orchestration; the arithmetic lives in docktor/policy/ and
every side effect in an activity.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from docktor import names
    from docktor.loop.activities import OBSERVE_ATTEMPTS, LoopActivities
    from docktor.loop.details import decisions_table, record_summary
    from docktor.loop.messages import (
        DECISION_RING,
        ApplyInput,
        AutoscalerInput,
        DecisionPlace,
        LookInput,
        LoopState,
        LoopStatus,
        ManualScale,
        ManualScaleResult,
        PauseRequest,
        PendingApproval,
        RecordInput,
        ResumeRequest,
        SpecUpdate,
        Verdict,
        hold_decision,
        is_hold,
        make_decision,
        operator_text_problems,
        void_problem,
    )
    from docktor.plan import ServicePlan
    from docktor.policy import cooldown_left, latest
    from docktor.policy import hold as manual_hold
    from docktor.policy.forecast import stage as forecast_view
    from docktor.text import printable_line
    from docktor.values import (
        Advice,
        AdviseInput,
        Decision,
        ForecastView,
        Observation,
        Proposal,
        Provenance,
    )

PROJECT = SearchAttributeKey.for_keyword(names.PROJECT_ATTRIBUTE)
SERVICE = SearchAttributeKey.for_keyword(names.SERVICE_ATTRIBUTE)
REPLICAS = SearchAttributeKey.for_int(names.REPLICAS_ATTRIBUTE)
LAST_ACTION = SearchAttributeKey.for_keyword(names.LAST_ACTION_ATTRIBUTE)
PAUSED = SearchAttributeKey.for_bool(names.PAUSED_ATTRIBUTE)

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
# Asking the model: the advisor already turns model failures into a recorded fallback; a retry
# covers only a worker lost mid-call.
ADVISE_RETRY = RetryPolicy(maximum_attempts=2, non_retryable_error_types=["ConfigError"])
# Writing the JSONL log: local disk; a handful of tries is plenty.
RECORD_RETRY = RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10))
# Patches still in force (docs/upgrading.md: how a patch is added, deprecated and removed).
# Where deprecate_patch() stands, patched() stood: a run begun by the release before this one
# carries that patch's marker, and deprecate_patch lets it replay on the only path left.
# Decisions made while the log could not be written are written back from the loop's ring of
# recent ones, before the next decision's line, once the log can be written again.
PATCH_JOURNAL_BACKFILL = "journal-backfill"
# One look: observe and evaluate in one local activity, which also writes the line of a hold
# that nothing after it can change (no model to ask, the log writable). An idle iteration is
# then one local activity (one marker) and two activations.
PATCH_ONE_LOOK = "one-look"
# A loop's first run is longer by a random number of iterations (see run_length).
PATCH_SPREAD_RUNS = "spread-runs"
# A restarted worker replays the current run of every loop before it decides again, so a run
# ends after 25 iterations (at most 0.2 s to replay); the carried state, in each new run's
# first event, is what that costs in history (benchmarks/README.md has both sides).
ITERATIONS_PER_RUN = 25
# Characters of an activity's failure quoted in a reason (a whole reason: messages.REASON_LIMIT).
CAUSE_LIMIT = 300


@workflow.defn(name=names.WORKFLOW)
class ServiceAutoscaler:
    @workflow.init
    def __init__(self, request: AutoscalerInput) -> None:
        self.request = request
        self.plan: ServicePlan = request.service
        self.state = request.state
        self.nudged = False
        # One scale at a time: an operator's scale_to and the loop's own apply both run
        # activities, and interleaving them would let a stale target undo the other's.
        self.scaling = asyncio.Lock()
        # Bumped by every manual scale as it starts, and again as it ends: the loop drops a
        # proposal made before one, or from a look taken while one was still scaling.
        self.manual_epoch = 0
        self.manual_done = 0
        # Set once the loop has been asked to stop: a cancel that arrived mid-scale lets the
        # iteration finish and record its scale first, and no new manual scale is accepted.
        self.stopping = False
        # Set as run() begins. An update in a run's first workflow task is handled before
        # that, and writes the memo and search attributes whole instead of only what changed:
        # so did every release since the lean loop, and runs they began replay only if this
        # stays (tests/replay: update_in_first_task).
        self.run_begun = False
        # The number of the decision whose line a look may be writing now: no other decision
        # is numbered until it is done, so none can share (and supersede) that line.
        self.line_pending: int | None = None

    # ---- the loop ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: AutoscalerInput) -> LoopStatus:
        self.run_begun = True
        self._publish_identity()
        self._publish_details()
        try:
            for _ in range(self.run_length(request)):
                await self.iterate()
                if self.stopping or workflow.info().is_continue_as_new_suggested():
                    break
                await self.wait_for_next_tick()
        except asyncio.CancelledError:
            self.stopping = True
        if self.stopping:
            await self.stop()
            return self.status()
        # Handlers may still be running (an update in flight); let them finish so nothing is
        # lost, then carry the whole state into a fresh run with a short history.
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(request.model_copy(update={"state": self.state}))

    def run_length(self, request: AutoscalerInput) -> int:
        """Iterations this run makes before it continues as new. Loops started together (a
        whole config at once) would otherwise all continue as new in the same few seconds,
        every 25 iterations: two workflow tasks each, the second a new run's first, and a
        thousand of them at once kept every loop of the workers waiting seconds for its task.
        A loop's first run goes on for a random number of iterations more (0 to 24), so the
        runs after it end spread over the 25. A shorter run asked for in the input is kept."""
        length = min(request.iterations_per_run, ITERATIONS_PER_RUN)
        if (
            request.iterations_per_run > ITERATIONS_PER_RUN
            and workflow.info().continued_run_id is None
            and workflow.patched(PATCH_SPREAD_RUNS)
        ):
            length += workflow.random().randrange(ITERATIONS_PER_RUN)
        return length

    async def iterate(self) -> None:
        self.state.iteration += 1
        seen = self.manual_counters()
        ahead: Decision | None = None
        workflow.deprecate_patch(PATCH_ONE_LOOK)
        looked = await self.look()
        if looked is None:
            return
        observation, proposal, place, written = looked
        if is_hold(proposal):
            ahead = hold_decision(place, proposal)
        advice = await self.advise(proposal)
        if self.operator_scaled_since(seen):
            # An operator scaled while this iteration was looking; their count stands.
            self.state.last_sample = observation
            await self.record_overridden(proposal, advice)
            return
        # The windows remember the recommendation that was followed: the model's when it
        # advised, the policy's own otherwise.
        memory = advice.memory or proposal.memory
        if memory is not None:
            self.state.memory = memory
        replicas, action, reason = await self.apply(
            proposal.current_replicas, advice, proposal, seen
        )
        self.state.last_sample = observation
        await self.record(
            action=action,
            current=proposal.current_replicas,
            target=replicas,
            reason=reason,
            observations=proposal.observations,
            matched_rules=proposal.matched_rules,
            metadata=advice.metadata,
            ahead=ahead,
            ahead_written=written,
        )

    def manual_counters(self) -> tuple[int, int]:
        """Operator's scales begun and ended so far: what an iteration compares, before it
        acts, with what it saw as it began to look."""
        return self.manual_epoch, self.manual_done

    def operator_scaled_since(self, seen: tuple[int, int]) -> bool:
        """Has an operator's scale started, or ended, since `seen` was taken?"""
        epoch, done = seen
        if epoch != self.manual_epoch:
            return True
        # One that was still running when the iteration looked, so the look is stale too.
        return done != self.manual_done

    async def record_overridden(self, proposal: Proposal, advice: Advice) -> None:
        """Each iteration ends in exactly one recorded decision, this one too: a hold that says
        what the loop would have done and that the operator's count stands instead."""
        # The operator's scale may still be running: wait for it (it holds the scaling lock),
        # so the hold tells the count it left, after its own `manual` decision.
        async with self.scaling:
            current = self.state.replicas if self.state.replicas is not None else 0
        await self.record(
            action="hold",
            current=current,
            target=current,
            reason=(
                f"an operator scaled to {current} while this iteration decided "
                f"({advice.action} to {advice.target_replicas}: {advice.reason}); "
                "the operator's count stands"
            ),
            observations=proposal.observations,
            matched_rules=proposal.matched_rules,
            metadata=advice.metadata,
        )

    async def look(self) -> tuple[Observation, Proposal, DecisionPlace, bool] | None:
        """Observe and evaluate in one local activity: (the sample, the proposal, where the
        iteration's decision stands, whether the look wrote it as a hold). None when there is no
        sample: the iteration is a recorded `hold`.

        A hold the look wrote is stamped with the worker's clock as it decided (the result
        carries it, so a replay stamps it alike), not with workflow.now() after the local
        activity: that is not the same when the task is replayed, and the line written must be
        the decision history keeps; nor with the task's time as the look began, seconds before
        the decision when the sample took retries."""
        now = workflow.now()
        place = self._place(now)
        writes = self._may_write_hold()
        self.line_pending = place.sequence if writes else None
        try:
            result = await workflow.execute_local_activity_method(
                LoopActivities.observe_evaluate,
                LookInput(
                    project=self.request.project,
                    service=self.plan,
                    forecast_seed_from=self.state.forecast_seed_from(
                        self.plan, self.request.journal_path
                    ),
                    now=now,
                    state=self.state.policy_state(),
                    journal_path=self.request.journal_path if writes else None,
                    hold_at=place if writes else None,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=OBSERVE_RETRY,
                # A cancel waits for the activity to end, and with it any line it is writing,
                # before the loop records its `stopped` decision.
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except FailureError as err:
            self.line_pending = None
            _reraise_cancellation(err)
            await self._record_blind(err)
            return None
        except asyncio.CancelledError:
            self.line_pending = None
            raise
        self.line_pending = None
        if result.decided_at is not None:
            place = place.model_copy(update={"at": result.decided_at})
        return result.observation, result.proposal, place, result.hold_written

    def _may_write_hold(self) -> bool:
        """May a look write a hold's line ahead: when a hold proposal is what the loop then
        records (no model to ask) and the log is writable (a gap is written back by `record`,
        in order)."""
        return (
            bool(self.request.journal_path)
            and self.state.journal_error is None
            and self.request.llm.provider == "none"
        )

    def _place(self, now: datetime) -> DecisionPlace:
        """Where the next decision stands, made now."""
        info = workflow.info()
        return DecisionPlace(
            at=now,
            service=self.plan.name,
            iteration=self.state.iteration,
            sequence=self.state.decision_count + 1,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            first_run_id=info.first_execution_run_id,
        )

    async def _record_blind(self, err: FailureError) -> None:
        """The `hold` of an iteration that had no sample, saying why; stamped when the look
        gave up (after its retries), not when it began."""
        current = self.state.replicas if self.state.replicas is not None else 0
        # A worker that refuses the loop's plan ran nothing: its refusal says so.
        why = "" if _error_type(err) == "Refused" else "metrics unavailable: "
        await self.record(
            action="hold",
            current=current,
            target=current,
            reason=f"{why}{_cause(err)}; holding",
        )

    async def advise(self, proposal: Proposal) -> Advice:
        """Ask the configured model; without one, or when it fails, the rules' proposal stands
        and the decision's metadata says so."""
        llm = self.request.llm
        rules = Advice(
            action=proposal.action,
            target_replicas=proposal.target_replicas,
            reason=proposal.reason,
            # A scale-up taken ahead of load says so (False in proposals of older releases).
            metadata=Provenance(predicted=proposal.predicted),
        )
        now = workflow.now()
        # While an operator's count is held the model has nothing to decide: not asked.
        if llm.provider == "none" or manual_hold.in_force(self.state.hold, now):
            return rules
        last_any = latest(self.state.last_scale_up_at, self.state.last_scale_down_at)
        try:
            return await workflow.execute_activity_method(
                LoopActivities.advise,
                AdviseInput(
                    service=self.plan,
                    llm=llm,
                    proposal=proposal,
                    cooldown_up_left=cooldown_left(
                        self.state.last_scale_up_at, self.plan.cooldown.up, now
                    ),
                    cooldown_down_left=cooldown_left(last_any, self.plan.cooldown.down, now),
                    recent=self.state.decisions[-5:],
                    memory=self.state.memory,
                    now=now,
                    last_scale_up_at=self.state.last_scale_up_at,
                    last_scale_down_at=self.state.last_scale_down_at,
                ),
                # The loop never stalls on the model: a short timeout and one retry at most.
                start_to_close_timeout=timedelta(seconds=llm.timeout_s + 5),
                retry_policy=ADVISE_RETRY,
                summary=f"advise: {llm.provider} {llm.model}",
            )
        except ActivityError as err:
            _reraise_cancellation(err)
            rules.metadata = Provenance(
                provider=llm.provider, model=llm.model, fallback=f"advisor failed: {_cause(err)}"
            )
            return rules

    async def apply(
        self, current: int, advice: Advice, proposal: Proposal, seen: tuple[int, int]
    ) -> tuple[int, str, str]:
        """Scale to the advised target: (replicas now, action, reason) for the record."""
        target = advice.target_replicas
        if target == current:
            self.state.replicas = current
            return current, advice.action, advice.reason
        if self.state.paused:
            why = self.state.pause_reason or "no reason given"
            return current, "hold", f"{advice.reason}; paused ({why}), nothing applied"
        reason = advice.reason
        if self.plan.approval == "manual":
            verdict = await self.await_approval(current, advice)
            if verdict.verdict is None:
                waited = self.plan.approval_timeout
                return current, "expired", f"{reason}; not approved within {waited:.0f}s"
            who = verdict.by or "an operator"
            note = f": {verdict.why}" if verdict.why else ""
            if not verdict.verdict:
                return current, "hold", f"{reason}; rejected by {who}{note}"
            reason = f"{reason}; approved by {who}{note}"
        why = ", ".join(proposal.matched_rules) or advice.reason
        replicas, failure = await self.scale(current, target, why, seen)
        if failure is not None:
            return replicas, "hold", f"{reason}; {failure}"
        return replicas, advice.action, reason

    async def await_approval(self, current: int, advice: Advice) -> PendingApproval:
        """Wait durably (a timer in history: a worker restart does not lose it) for an
        operator's verdict, at most approval_timeout. verdict None means it lapsed."""
        now = workflow.now()
        timeout = self.plan.approval_timeout
        pending = PendingApproval(
            action=advice.action,
            current_replicas=current,
            target_replicas=advice.target_replicas,
            reason=advice.reason,
            requested_at=now,
            expires_at=now + timedelta(seconds=timeout),
        )
        self.state.pending = pending
        workflow.set_current_details(
            f"Awaiting approval: {self.plan.name} {current} -> {advice.target_replicas} "
            f"({advice.reason}). Run `docktor approve {self.plan.name}` or "
            f"`docktor reject {self.plan.name}` before {pending.expires_at:%H:%M:%S} UTC."
        )
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: pending.verdict is not None, timeout=timedelta(seconds=timeout)
            )
        self.state.pending = None
        return pending

    async def scale(
        self, current: int, target: int, why: str, seen: tuple[int, int]
    ) -> tuple[int, str | None]:
        async with self.scaling:
            # An operator's scale may have held the lock while this one waited for it.
            if self.manual_counters() != seen:
                replicas = self.state.replicas if self.state.replicas is not None else current
                return replicas, f"an operator scaled to {replicas} meanwhile; their count stands"
            return await self._scale(current, target, why)

    async def _scale(self, current: int, target: int, why: str) -> tuple[int, str | None]:
        change = f"{self.plan.name} {current} -> {target}"
        # Started, then shielded: a cancellation arriving mid-scale waits for the scale to
        # finish, so a loop is never stopped with a half-applied replica count.
        handle = workflow.start_activity_method(
            LoopActivities.apply,
            ApplyInput(
                project=self.request.project,
                service=self.plan,
                target_replicas=target,
                summary=change,
            ),
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=APPLY_RETRY,
            summary=f"{change}: {why}",
        )
        try:
            result = await asyncio.shield(handle)
        except asyncio.CancelledError:
            # The loop is being cancelled (only the run's own task is): the scale goes on to
            # its end and is recorded like any other; run() then stops the loop.
            self.stopping = True
            try:
                result = await handle
            except ActivityError as err:
                return current, f"scaling to {target} failed: {_cause(err)}"
        except ActivityError as err:
            return current, f"scaling to {target} failed: {_cause(err)}"
        self.state.note_scale(workflow.now(), current, result.replicas)
        return result.replicas, None

    async def record(
        self,
        action: str,
        current: int,
        target: int,
        reason: str,
        observations: dict[str, float] | None = None,
        matched_rules: list[str] | None = None,
        metadata: Provenance | None = None,
        ahead: Decision | None = None,
        ahead_written: bool = False,
        at: datetime | None = None,
    ) -> Decision:
        """Keep the decision (state, memo, attributes) and write its line. `ahead`: the hold a
        look made ahead of this decision, its line written if `ahead_written`. A decision that is
        that hold (no model was asked, no operator overtook it) is not written again; one that
        the look tried to write is written again as the very same line, which the log takes as
        a retry."""
        if self.line_pending is not None:
            await workflow.wait_condition(lambda: self.line_pending is None)
        place = self._place(at or (ahead.timestamp if ahead is not None else workflow.now()))
        self.state.decision_count += 1
        # Every reason is bounded (make_decision): it travels in each later workflow task (in
        # the carried state), the memo, the log and the model's prompt.
        decision = make_decision(
            place,
            action,  # type: ignore[arg-type]
            current,
            target,
            reason,
            observations,
            matched_rules,
            metadata,
        )
        self.state.remember(decision)
        self._publish_decision(decision)
        if ahead_written and decision == ahead:
            return decision
        if self.request.journal_path:
            missed = self._missed(decision)
            # Shielded like a scale: a cancellation arriving now still gets this decision into
            # the log before the loop stops (no lost decisions), then stops the loop.
            handle = self._start_record(decision, missed)
            try:
                await asyncio.shield(handle)
            except asyncio.CancelledError:
                with contextlib.suppress(FailureError):
                    await handle
                raise
            except FailureError as err:
                # The decision is safe in workflow state and history; only the file copy failed.
                self._journal_failed(decision, _cause(err))
            else:
                self._journal_written(decision, missed)
        return decision

    def _missed(self, decision: Decision) -> list[Decision]:
        """While the log is failing: the decisions since the gap opened that the ring still
        holds, oldest first, to write before this one (the attempt that finds the log writable
        again fills the gap)."""
        gap_from = self.state.journal_gap_from
        if self.state.journal_error is None or gap_from is None:
            return []
        workflow.deprecate_patch(PATCH_JOURNAL_BACKFILL)
        return [d for d in self.state.decisions if gap_from <= d.sequence < decision.sequence]

    def _start_record(self, decision: Decision, missed: list[Decision]) -> asyncio.Future[bool]:
        """Write the decision's JSONL line. A hold is written by a local activity in the same
        workflow task (its line is in the file before the timer starts, so nothing is pending
        across a cancel, a continue-as-new or a crash); every other decision keeps its own
        `record <action>` activity, visible beside its scale."""
        start = (
            workflow.start_local_activity_method
            if decision.action == "hold"
            else workflow.start_activity_method
        )
        return start(
            LoopActivities.record,
            RecordInput(path=self.request.journal_path or "", decision=decision, missed=missed),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RECORD_RETRY,
            summary=record_summary(decision),
        )

    def _journal_failed(self, decision: Decision, why: str) -> None:
        """Report a gap in the decision log once, when it opens, not at every iteration: a
        full disk would otherwise add a warning per decision to an outage."""
        if self.state.journal_error is not None:
            return
        self.state.journal_error = why
        self.state.journal_gap_from = decision.sequence
        workflow.logger.warning(
            "decision log %s not written from decision %d on: %s; decisions stay in the "
            "loop's state and history (the `decisions` query), and are written to it once it "
            "is writable again (the last %d at most); reported once until then",
            self.request.journal_path,
            decision.sequence,
            why,
            DECISION_RING,
        )

    def _journal_written(self, decision: Decision, missed: list[Decision]) -> None:
        """The log was written after a gap: say what of the gap was written back with this
        decision (from the loop's ring) and how many decisions it no longer holds."""
        gap_from = self.state.journal_gap_from
        if self.state.journal_error is None or gap_from is None:
            return
        self.state.journal_error = None
        self.state.journal_gap_from = None
        path, last = self.request.journal_path, decision.sequence - 1
        lost_to = missed[0].sequence - 1 if missed else last
        if lost_to < gap_from:
            workflow.logger.warning(
                "decision log %s writable again; decisions %d to %d, missed while it was "
                "not, written to it now, in order, from the loop's state",
                path,
                gap_from,
                last,
            )
            return
        written = f"; decisions {missed[0].sequence} to {last} written to it now" if missed else ""
        workflow.logger.warning(
            "decision log %s writable again%s; %d decisions (%d to %d) are missing from it for "
            "good: the loop keeps only its last %d (the `decisions` query)",
            path,
            written,
            lost_to - gap_from + 1,
            gap_from,
            lost_to,
            DECISION_RING,
        )

    async def wait_for_next_tick(self) -> None:
        """A durable timer: survives worker restarts; a nudge cuts it short."""
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self.nudged, timeout=timedelta(seconds=self.plan.check_interval)
            )
        self.nudged = False

    async def stop(self) -> None:
        """Graceful end: one final `stopped` decision, recorded like every other."""
        # A cancel cancels the run's task only: an operator's scale_to may still be scaling.
        # Let it finish and record its `manual` decision, so `stopped` tells the count that runs.
        await workflow.wait_condition(workflow.all_handlers_finished)
        current = self.state.replicas if self.state.replicas is not None else 0
        self.state.iteration += 1
        await self.record(
            action="stopped", current=current, target=current, reason="loop cancelled"
        )

    # ---- what the outside world sees ---------------------------------------------------------

    def _publish_identity(self) -> None:
        self._upsert_attributes(
            [PROJECT.value_set(self.request.project), SERVICE.value_set(self.plan.name)]
        )

    def _upsert_attributes(self, updates: list[SearchAttributeUpdate]) -> None:
        """Upsert the search attributes that do not already hold the value (an unchanged upsert
        still writes an event and re-indexes the workflow); all of them before run() begins."""
        if not self.request.search_attributes:
            return
        if self.run_begun:
            current = workflow.info().typed_search_attributes
            updates = [u for u in updates if current.get(u.key) != u.value]
        if updates:
            workflow.upsert_search_attributes(updates)

    def _publish_details(self) -> None:
        """The run page's current details: the loop's recent decisions, from the carried ring
        (so a new run's page shows them before it decides anything itself)."""
        workflow.set_current_details(decisions_table(self.state.decisions))

    def _publish_decision(self, decision: Decision) -> None:
        self._publish_details()
        self._upsert_attributes(
            [REPLICAS.value_set(decision.target_replicas), LAST_ACTION.value_set(decision.action)]
        )
        self._publish_state()

    def _publish_state(self) -> None:
        """The memo and the paused flag: what the workflow list shows without a query."""
        last = self.state.decisions[-1] if self.state.decisions else None
        memo: dict[str, object] = {
            "replicas": self.state.replicas,
            "last_action": last.action if last else None,
            "last_reason": last.reason if last else None,
            "paused": self.state.paused,
            "bounds": f"{self.plan.min_replicas}..{self.plan.max_replicas}",
        }
        if self.run_begun:
            # Only what changed: a hold like the last one changes nothing.
            memo = {k: v for k, v in memo.items() if workflow.memo_value(k, None) != v}
        if memo:
            workflow.upsert_memo(memo)
        self._upsert_attributes([PAUSED.value_set(self.state.paused)])

    @workflow.query(name=names.STATUS)
    def status(self) -> LoopStatus:
        now = workflow.now()
        up_left = cooldown_left(self.state.last_scale_up_at, self.plan.cooldown.up, now)
        last_any = latest(self.state.last_scale_up_at, self.state.last_scale_down_at)
        down_left = cooldown_left(last_any, self.plan.cooldown.down, now)
        return LoopStatus(
            workflow_id=workflow.info().workflow_id,
            service=self.plan.name,
            replicas=self.state.replicas,
            min_replicas=self.plan.min_replicas,
            max_replicas=self.plan.max_replicas,
            paused=self.state.paused,
            pause_reason=self.state.pause_reason,
            paused_by=self.state.paused_by,
            iteration=self.state.iteration,
            last_decision=self.state.decisions[-1] if self.state.decisions else None,
            cooldown_up_until=now + timedelta(seconds=up_left) if up_left else None,
            cooldown_down_until=now + timedelta(seconds=down_left) if down_left else None,
            pending_approval=self.state.pending,
            hold=self.state.hold if manual_hold.in_force(self.state.hold, now) else None,
            journal_error=(
                f"decisions from {self.state.journal_gap_from} on not written: "
                f"{self.state.journal_error}"
                if self.state.journal_error is not None
                else None
            ),
        )

    @workflow.query(name=names.DECISIONS)
    def decisions(self, tail: int = 10) -> list[Decision]:
        return self.state.decisions[-tail:] if tail > 0 else []

    @workflow.query(name=names.LOOP_STATE)
    def loop_state(self) -> LoopState:
        """What the next evaluation starts from, for a dry run of the policy elsewhere. A query,
        so it adds nothing to history: running loops replay unchanged."""
        return self.state

    @workflow.query(name=names.FORECAST)
    def forecast(self) -> ForecastView:
        """What the loop has learnt of its load's rhythm (`docktor forecast`)."""
        return forecast_view.view(self.plan, self.state.memory, workflow.now())

    @workflow.signal(name=names.NUDGE)
    def nudge(self) -> None:
        """Evaluate now instead of at the next tick."""
        self.nudged = True

    @workflow.update(name=names.PAUSE)
    def pause(self, request: PauseRequest) -> LoopStatus:
        """Stop applying automatic decisions; the loop still observes and records."""
        self.state.paused = True
        self.state.pause_reason = request.reason or None
        self.state.paused_by = request.by or None
        self._publish_state()
        return self.status()

    @pause.validator
    def _validate_pause(self, request: PauseRequest) -> None:
        _refuse_void(request.void_after)
        self._refuse_other_loop(request.project, request.service)
        _refuse(operator_text_problems(reason=request.reason, by=request.by))
        if self.state.paused:
            raise ValueError(f"already paused ({self.state.pause_reason or 'no reason given'})")

    @workflow.update(name=names.RESUME)
    def resume(self, request: ResumeRequest | None = None) -> LoopStatus:
        """Automatic decisions apply again: ends a pause and a manual scale's hold. The request
        is optional: clients of older releases, and the recorded histories, send none."""
        self.state.paused = False
        self.state.pause_reason = None
        self.state.paused_by = None
        self.state.hold = None
        self._publish_state()
        return self.status()

    @resume.validator
    def _validate_resume(self, request: ResumeRequest | None = None) -> None:
        _refuse_void(request.void_after if request else None)
        if request is not None:
            self._refuse_other_loop(request.project, request.service)
        if not self.state.paused and not manual_hold.in_force(self.state.hold, workflow.now()):
            raise ValueError("not paused, and no manual scale is held")

    @workflow.update(name=names.SCALE_TO)
    async def scale_to(self, request: ManualScale) -> ManualScaleResult:
        """An operator's override, recorded as a `manual` decision; the count is then held
        (request.hold_s, else the service's default) and the cooldown applies. Works while
        paused too: pausing stops the automatic decisions, not the operator."""
        self.manual_epoch += 1
        async with self.scaling:
            current = self.state.replicas if self.state.replicas is not None else 0
            who = f" by {request.by}" if request.by else ""
            why = request.reason or "no reason given"
            replicas, failure = await self._scale(current, request.replicas, f"manual{who}: {why}")
            self.manual_done += 1
        if failure is not None:
            raise ApplicationError(failure, type="ScaleFailed")
        reason = f"manual scale{who}: {why}"
        # The operator's count stands for a while; this scale's hold replaces any earlier one.
        # The reason ends with the hold, for whoever reads the decision.
        now = workflow.now()
        hold = manual_hold.start(self.plan, request.replicas, request.hold_s, now, request.by)
        self.state.hold = hold
        reason += f"; {manual_hold.describe(hold, now) if hold else manual_hold.NOT_HELD}"
        decision = await self.record(
            action="manual", current=current, target=replicas, reason=reason
        )
        # The hold as data too: the client words it from this, never from the reason's text.
        return ManualScaleResult(**dict(decision), hold=hold)

    @scale_to.validator
    def _validate_scale_to(self, request: ManualScale) -> None:
        _refuse_void(request.void_after)
        self._refuse_other_loop(request.project, request.service)
        _refuse(operator_text_problems(reason=request.reason, by=request.by))
        if hold_problem := manual_hold.problem(request.hold_s):
            raise ValueError(hold_problem)
        if self.stopping:
            raise ValueError(f"the loop for {self.plan.name} is stopping")
        low, high = self.plan.min_replicas, self.plan.max_replicas
        if not low <= request.replicas <= high:
            raise ValueError(f"{request.replicas} is outside [{low}, {high}] for {self.plan.name}")

    @workflow.update(name=names.APPROVE)
    def approve(self, verdict: Verdict) -> PendingApproval:
        return self._decide_pending(True, verdict)

    @approve.validator
    def _validate_approve(self, verdict: Verdict) -> None:
        _refuse_void(verdict.void_after)
        self._refuse_other_loop(verdict.project, verdict.service)
        _refuse(operator_text_problems(reason=verdict.reason, by=verdict.by))
        self._require_pending()

    @workflow.update(name=names.REJECT)
    def reject(self, verdict: Verdict) -> PendingApproval:
        return self._decide_pending(False, verdict)

    @reject.validator
    def _validate_reject(self, verdict: Verdict) -> None:
        _refuse_void(verdict.void_after)
        self._refuse_other_loop(verdict.project, verdict.service)
        _refuse(operator_text_problems(reason=verdict.reason, by=verdict.by))
        self._require_pending()

    def _refuse_other_loop(self, project: str | None, service: str | None) -> None:
        """Refuse a control meant for another loop: the names it carries are its client's, and
        differ from this loop's when the workflow id it was sent to names another service.
        None (an older client) says nothing and is accepted."""
        if service is not None and service != self.plan.name:
            raise ValueError(f"this loop scales '{self.plan.name}', not '{service}'")
        if project is not None and project != self.request.project:
            raise ValueError(
                f"this loop belongs to project '{self.request.project}', not '{project}'"
            )

    def _require_pending(self) -> None:
        if self.state.pending is None or self.state.pending.verdict is not None:
            raise ValueError(f"no decision of {self.plan.name} is awaiting approval")

    def _decide_pending(self, approved: bool, verdict: Verdict) -> PendingApproval:
        pending = self.state.pending
        assert pending is not None  # the validator saw to it
        pending.verdict = approved
        pending.by = verdict.by or None
        pending.why = verdict.reason or None
        return pending

    @workflow.update(name=names.UPDATE_SPEC)
    def update_spec(self, change: SpecUpdate) -> LoopStatus:
        """New rules, bounds or model, taken from the next iteration on, without a restart."""
        self.plan = change.service
        self.request.service = change.service
        self.request.llm = change.llm
        return self.status()

    @update_spec.validator
    def _validate_spec(self, change: SpecUpdate) -> None:
        _refuse_void(change.void_after)
        self._refuse_other_loop(change.project, None)
        if change.service.name != self.plan.name:
            raise ValueError(f"this loop scales '{self.plan.name}', not '{change.service.name}'")
        # The payload decoded as a wire model, which takes what any release wrote; a new plan
        # must also be one a loop can run (a check_interval no timer can hold would otherwise
        # fail every workflow task from the next iteration on).
        _refuse(
            [f"service.{p}" for p in change.service.problems()]
            + [f"llm.{p}" for p in change.llm.problems()]
        )


def _refuse_void(void_after: datetime | None) -> None:
    """Refuse a control whose sender has given up waiting for it (it told its operator that
    nothing was done). Workflow time is that of the task delivering the update, so a request
    that waited in the server for a worker is judged when it reaches the loop; validators do
    not run on replay, so this never touches a recorded history."""
    if problem := void_problem(void_after, workflow.now()):
        raise ValueError(problem)


def _refuse(problems: list[str]) -> None:
    """A validator's refusal: every problem, on one line."""
    if problems:
        raise ValueError("; ".join(problems))


def _reraise_cancellation(err: FailureError) -> None:
    """An activity cancelled because the loop is being cancelled surfaces as an ActivityError
    (a local activity's as the CancelledError itself); turn it back into the cancellation, or
    the loop would take it for a failure and go on."""
    if isinstance(err, CancelledError) or isinstance(err.cause, CancelledError):
        raise asyncio.CancelledError() from err


def _error_type(err: FailureError) -> str | None:
    cause = err.cause if isinstance(err, ActivityError) else err
    return cause.type if isinstance(cause, ApplicationError) else None


def _cause(err: FailureError) -> str:
    """Why an activity failed, as a reason quotes it: one short printable line, whatever the
    failure carries (a worker of another release may not have shortened it)."""
    cause = err.cause if isinstance(err, ActivityError) else err
    text = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
    return printable_line(text, CAUSE_LIMIT)
