"""The one way docktor builds a Temporal Worker: `python -m worker`, the demo (through it) and
the tests all serve the loops with the same limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from docktor.loop.workflow import ServiceAutoscaler

# Workflow tasks this worker runs at once. A task is CPU work under one GIL: a worker that
# has just started replays every loop, and with no cap each of hundreds of replays takes its
# share of the CPU and all of them overrun the task timeout (10 s), are retried from scratch
# and the loops stay silent for minutes. A few at a time each finish in
# milliseconds; the rest wait on the server, where waiting costs nothing.
WORKFLOW_TASK_SLOTS = 4
# Local activities (observe_evaluate, a record) at once: they run inside the loops'
# workflow tasks, mostly waiting on I/O.
LOCAL_ACTIVITY_SLOTS = 100
# Loops kept in memory between their tasks (sticky cache). One evicted replays its run's
# history at its next task, so it holds every loop a worker is expected to serve.
CACHED_WORKFLOWS = 2000
# A loop's tasks go to the worker that has it cached; if that worker died (a crash, a kill),
# the server moves them to the shared queue after this long. The SDK's 10 s default is most
# of the time a replaced worker needed before every loop decided again.
STICKY_TIMEOUT = timedelta(seconds=3)
# The workflow runs outside the SDK's sandbox. The sandbox re-imports the workflow's modules for
# every loop it loads and wraps every activation in import hooks: about a third of a busy
# worker's CPU, and most of what a replaced worker spends resuming 100 loops
# (benchmarks/loops.py). What it guards against is kept out another way: the workflow calls only
# workflow.* APIs for time, randomness and I/O, imports docktor/ passed through, keeps no
# module state, and tests/replay replays recorded histories on every run, inside the sandbox
# (the Replayer's default runner), so a call the sandbox forbids still fails a test.
WORKFLOW_RUNNER = UnsandboxedWorkflowRunner()


def build_worker(
    client: Client,
    task_queue: str,
    activities: Sequence[Callable[..., Awaitable[Any]]],
    *,
    graceful_shutdown_timeout: timedelta = timedelta(),
    **options: Any,
) -> Worker:
    """A worker for the ServiceAutoscaler workflow and the given activities (usually
    `LoopActivities().all()`; tests bring scripted ones under the same names). `options` go to
    temporalio's Worker and override the limits above (the benchmark compares them)."""
    settings: dict[str, Any] = {
        "max_concurrent_workflow_tasks": WORKFLOW_TASK_SLOTS,
        "max_concurrent_local_activities": LOCAL_ACTIVITY_SLOTS,
        "max_cached_workflows": CACHED_WORKFLOWS,
        "sticky_queue_schedule_to_start_timeout": STICKY_TIMEOUT,
        "workflow_runner": WORKFLOW_RUNNER,
    }
    settings.update(options)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[ServiceAutoscaler],
        activities=list(activities),
        graceful_shutdown_timeout=graceful_shutdown_timeout,
        **settings,
    )
