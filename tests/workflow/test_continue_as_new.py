"""A loop that runs for thousands of iterations keeps each run's history short and carries its
recent decisions and cooldowns across continue-as-new."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from docktor.journal import decision_key
from docktor.loop.messages import DECISION_RING
from tests.workflow.conftest import ScriptedWorld, cancel_and_wait, query_loop, service_spec, start
from workflows import ServiceAutoscaler

ITERATIONS = 2000
PER_RUN = 100


@pytest.mark.slow  # 2000 iterations: a minute or more; `make test` runs it, `make test-fast` not
async def test_thousands_of_iterations_stay_bounded(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 100  # between the thresholds: hold every time
    handle = await start(
        env.client, service_spec(check_interval=5), iterations_per_run=PER_RUN, journal_path=None
    )
    for _ in range(ITERATIONS // 10):
        status = await query_loop(env, handle, ServiceAutoscaler.status)
        if status.iteration >= ITERATIONS:
            break
        await env.sleep(5 * 50)
    status = await query_loop(env, handle, ServiceAutoscaler.status)
    assert status.iteration >= ITERATIONS

    description = await handle.describe()
    assert description.run_id != handle.first_execution_run_id
    history = await handle.fetch_history()
    # One run holds at most PER_RUN iterations of a handful of events each.
    assert len(history.events) < PER_RUN * 15

    decisions = await query_loop(env, handle, ServiceAutoscaler.decisions, 1000)
    assert len(decisions) == DECISION_RING
    iterations = [d.iteration for d in decisions]
    assert iterations == list(range(status.iteration - DECISION_RING + 1, status.iteration + 1))
    await cancel_and_wait(env, handle)


async def test_recent_decisions_and_cooldown_survive_continue_as_new(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 900
    spec = service_spec(max_replicas=20, check_interval=5, cooldown={"up": 40, "down": 60})
    handle = await start(env.client, spec, iterations_per_run=3, journal_path=None)
    for _ in range(100):
        decisions = await query_loop(env, handle, ServiceAutoscaler.decisions, 100)
        if len(decisions) >= 12:
            break
        await env.sleep(5)
    decisions = decisions[:12]
    assert [d.iteration for d in decisions] == list(range(1, 13))
    assert len({d.run_id for d in decisions}) >= 4  # 3 iterations per run
    # One chain of runs: its first run names every decision, so the log's keys stay unique.
    assert {d.first_run_id for d in decisions} == {handle.first_execution_run_id}
    assert len({decision_key(d) for d in decisions}) == len(decisions)
    # The 40 s up-cooldown spans runs: scale-ups only every 8th 5 s tick, never two in a row.
    ups = [d.iteration for d in decisions if d.action == "scale_up"]
    assert ups[:2] == [1, 9]
    await cancel_and_wait(env, handle)


async def test_a_new_loop_continues_as_new_after_a_short_run(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    # A restarted worker replays each loop's current run (~4 ms of CPU per past iteration), so
    # runs are short whatever iterations_per_run (500 by default) allows: every run but the
    # first is 25 iterations; the first goes on 0 to 24 more, at random.
    world.backlog = 100  # hold every time
    handle = await start(env.client, service_spec(check_interval=5), journal_path=None)
    runs = await runs_of(env, handle, 3)
    second = runs[1]
    assert 25 <= second[0] - 1 <= 49  # the first run's length
    assert second == list(range(second[0], second[0] + 25))  # ITERATIONS_PER_RUN
    await cancel_and_wait(env, handle)


async def test_loops_started_together_continue_as_new_at_different_iterations(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    # A thousand loops started by one `starter --all` would otherwise all continue as new in
    # the same few seconds, every 25 iterations, and every loop of the workers waits behind
    # them. Each loop's first run ends at its own random iteration (25 possible): six loops
    # all ending together has a chance of 25**-5.
    world.backlog = 100
    handles = [
        await start(env.client, service_spec(name=f"s{n}", check_interval=5), journal_path=None)
        for n in range(6)
    ]
    first_lengths = set()
    for handle in handles:
        runs = await runs_of(env, handle, 2)
        first_lengths.add(runs[1][0] - 1)
    assert len(first_lengths) > 1, first_lengths
    for handle in handles:
        await cancel_and_wait(env, handle)


async def runs_of(env: WorkflowEnvironment, handle: WorkflowHandle, count: int) -> list[list[int]]:
    """The iterations of each of a loop's runs the decision ring holds, in order, once it has
    begun `count` runs (the oldest may be cut: the ring keeps the last 50 decisions)."""
    for _ in range(200):
        decisions = await query_loop(env, handle, ServiceAutoscaler.decisions, 100)
        if len({d.run_id for d in decisions}) >= count:
            break
        await env.sleep(5 * 5)
    runs: dict[str, list[int]] = {}
    for decision in decisions:
        runs.setdefault(decision.run_id, []).append(decision.iteration)
    return sorted(runs.values())
