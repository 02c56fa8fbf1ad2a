"""`docktor status | explain | pause | resume | scale | nudge | approve | reject` as an operator
runs them: subprocesses against loops running on the session's Temporal dev server, driven by an
in-process worker with the real activities and a `processes` backend.

The services have no queue, so the rules see no metrics and hold; only the bounds rule (below
min_replicas) and the operator move the count, which keeps every step of these tests
deterministic.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    IDLE_COMMAND,
    async_wait_for,
    process_alive,
    replica_pids,
    run_docktor,
    serving_loops,
    stop_loop_within,
)
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from activities import LoopActivities
from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient, NoRunningLoop
from docktor.client.temporal import connect
from docktor.dev.embedded import EmbeddedTemporal, free_port
from docktor.journal import append_decision, journal_files, read_decisions
from docktor.loop.authority import WorkerConfig
from docktor.loop.messages import ApplyInput, ApplyResult, LoopStatus
from docktor.loop.worker import build_worker
from docktor.spec import DocktorConfig, load_config
from docktor.values import Decision, Provenance
from docktor.views import mattered, model_label

pytestmark = pytest.mark.integration

OPERATOR = "tester"
# How long a cancelled loop gets to record `stopped` and end before teardown terminates it.
STOP_WAIT = 20.0


def service(name: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "backend": "processes",
        "command": IDLE_COMMAND,
        "min_replicas": 1,
        "max_replicas": 4,
        "check_interval": "1s",
        "stop_grace_period": "1s",
        "cooldown": {"up": "1s", "down": "1s"},
    }
    spec.update(overrides)
    return spec


@dataclass
class Stack:
    config: DocktorConfig
    path: Path
    client: Client

    async def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`docktor ARGS` in a subprocess, as the operator."""
        return await run_docktor(self.path, *args, USER=OPERATOR)

    async def ok(self, *args: str) -> str:
        result = await self.run(*args)
        assert result.returncode == 0, f"docktor {' '.join(args)}: {result.stderr}"
        return result.stdout

    async def status(self, name: str) -> LoopStatus:
        return await LoopClient(self.client, self.config).status(name)

    def scaler(self, name: str) -> ProcessScaler:
        return ProcessScaler(self.config.service(name), project=self.config.project or "")

    async def start(self, name: str) -> None:
        await LoopClient(self.client, self.config).start(self.config.service(name))

    async def stop(self, name: str) -> None:
        await stop_loop_within(self.client, self.config, name, STOP_WAIT)

    async def settled(self, name: str, decisions: int = 1) -> None:
        """Wait until the loop has written `decisions` decisions to the log: the record
        activity is done, so (with an hour between ticks) the loop sits in its timer, where a
        cancel is honoured at once."""

        async def written() -> bool:
            return sum(d.service == name for d in read_decisions(self.config.journal_path)) >= (
                decisions
            )

        await async_wait_for(written, 30, f"{name}'s decisions in the log")

    async def explain_json(self, service: str = "consumer") -> list[dict[str, Any]]:
        return json.loads(await self.ok("explain", "--json", "--service", service, "--tail", "50"))

    async def status_json(self) -> dict[str, dict[str, Any]]:
        rows = json.loads(await self.ok("status", "--json"))
        return {row["service"]: row for row in rows}


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(tmp_path: Path, temporal_dev: EmbeddedTemporal) -> AsyncIterator[StackFactory]:
    """Write a config, run a worker on a task queue of its own, start the named loops; at the
    end stop every loop and every replica."""
    stacks: list[Stack] = []
    served: list[LoopActivities] = []
    workers: list[Worker] = []

    async def make(services: list[dict[str, Any]], start: list[str] | None = None) -> Stack:
        tag = uuid.uuid4().hex[:8]
        document = {
            "project": f"op-{tag}",
            "journal": "decisions.jsonl",
            "temporal": {"address": temporal_dev.address, "task_queue": f"docktor-op-{tag}"},
            "services": services,
        }
        # A file per stack: each worker runs its own file, and reads it again when it changes.
        path = tmp_path / f"docktor-{tag}.yaml"
        path.write_text(yaml.safe_dump(document))
        config = load_config(path)
        client = await connect(config)
        activities = LoopActivities(WorkerConfig(config, path))
        served.append(activities)
        worker = build_worker(client, config.temporal.task_queue, activities.all())
        await worker.__aenter__()
        workers.append(worker)
        stack = Stack(config, path, client)
        stacks.append(stack)
        for name in config.service_names() if start is None else start:
            await stack.start(name)
        return stack

    try:
        yield make
    finally:
        for stack in stacks:
            for name in stack.config.service_names():
                await stack.stop(name)
                await stack.scaler(name).stop_all()
        for worker in workers:
            await worker.__aexit__(None, None, None)
        for activities in served:
            await activities.close()


async def _replicas(stack: Stack, name: str, count: int) -> bool:
    return await stack.scaler(name).replicas() == count


# ---- status and explain ----------------------------------------------------------------------


async def test_status_and_explain_show_the_running_loop(make_stack: StackFactory) -> None:
    # 2 s checks: the loop keeps its last 50 decisions, and the first one (the scale_up
    # explained below) must still be among them after the CLI calls of a slow machine.
    stack = await make_stack([service("consumer", check_interval="2s")])
    workflow_id = stack.config.workflow_id("consumer")
    # The first iteration brings the count up to min_replicas: a scale_up 0 -> 1.
    await async_wait_for(lambda: _replicas(stack, "consumer", 1), 30, "first replica")

    async def holding() -> bool:
        status = await stack.status("consumer")
        return status.replicas == 1 and status.iteration >= 2

    await async_wait_for(holding, 30, "a second iteration that holds")

    lines = (await stack.ok("status")).splitlines()
    assert lines[0].split()[:3] == ["SERVICE", "REPLICAS", "BOUNDS"]
    row = lines[1].split()
    assert row[:4] == ["consumer", "1", "1..4", "no"]
    assert workflow_id in lines[1]

    rows = await stack.status_json()
    consumer = rows["consumer"]
    assert consumer["running"] is True and consumer["workflow_id"] == workflow_id
    assert (consumer["replicas"], consumer["min_replicas"], consumer["max_replicas"]) == (1, 1, 4)
    assert consumer["paused"] is False and consumer["pending_approval"] is None
    assert consumer["last_decision"]["action"] == "hold"
    assert consumer["last_decision_age_s"] >= 0

    explained = json.loads(await stack.ok("explain", "--json", "--tail", "50"))
    first = explained[0]
    assert (first["action"], first["current_replicas"], first["target_replicas"]) == (
        "scale_up",
        0,
        1,
    )
    assert "below min_replicas" in first["reason"]
    assert first["model"] == "rules"
    times = [entry["timestamp"] for entry in explained]
    assert times == sorted(times)

    text = (await stack.ok("explain", "--tail", "1")).splitlines()
    assert len(text) == 2 and text[0].startswith("TIME (UTC)")
    assert "consumer" in text[1] and "rules" in text[1]

    # 1 s checks: by now the first decision may be older than the last ten.
    plain = await stack.ok("explain", "--service", "consumer", "--tail", "50")
    assert "scale_up" in plain and "0 -> 1" in plain
    recent = await stack.ok("explain", "--service", "consumer")
    assert 2 <= len(recent.splitlines()) <= 11  # header + the default tail of 10


async def test_explain_merges_services_by_time(make_stack: StackFactory) -> None:
    stack = await make_stack([service("api"), service("consumer")])
    await async_wait_for(lambda: _replicas(stack, "api", 1), 30, "api's first replica")
    await async_wait_for(lambda: _replicas(stack, "consumer", 1), 30, "consumer's replica")

    both = json.loads(await stack.ok("explain", "--json", "--tail", "100"))
    assert {entry["service"] for entry in both} == {"api", "consumer"}
    times = [entry["timestamp"] for entry in both]
    assert times == sorted(times)

    only = json.loads(await stack.ok("explain", "--json", "--service", "api", "--tail", "3"))
    assert 1 <= len(only) <= 3 and {entry["service"] for entry in only} == {"api"}


# ---- pause / resume / scale / nudge -----------------------------------------------------------


async def test_pause_and_resume(make_stack: StackFactory) -> None:
    stack = await make_stack([service("consumer")])
    await async_wait_for(lambda: _replicas(stack, "consumer", 1), 30, "first replica")

    said = await stack.ok("pause", "consumer", "--reason", "maintenance")
    assert said.startswith("paused consumer (maintenance)")
    assert len(said.splitlines()) == 1

    row = (await stack.status_json())["consumer"]
    assert row["paused"] is True and row["pause_reason"] == "maintenance"
    assert row["paused_by"] == OPERATOR  # who paused, as the decisions say who scaled
    assert f"yes: maintenance (by {OPERATOR})" in (await stack.ok("status")).splitlines()[1]

    again = await stack.run("pause", "consumer")
    assert again.returncode == 1
    assert again.stderr.strip() == "error: pause refused: already paused (maintenance)"

    assert (await stack.ok("resume", "consumer")).startswith("resumed consumer")
    row = (await stack.status_json())["consumer"]
    assert row["paused"] is False and row["paused_by"] is None
    twice = await stack.run("resume", "consumer")
    assert twice.returncode == 1 and "resume refused: not paused" in twice.stderr


async def test_scale_within_bounds_and_refused_outside(make_stack: StackFactory) -> None:
    stack = await make_stack([service("consumer")])
    await async_wait_for(lambda: _replicas(stack, "consumer", 1), 30, "first replica")

    said = await stack.ok("scale", "consumer", "3", "--reason", "load test")
    assert said.startswith("scaled consumer 1 -> 3")
    assert await stack.scaler("consumer").replicas() == 3
    assert (await stack.status("consumer")).replicas == 3

    # 1 s checks: a few CLI runs later the manual decision may be older than the last ten.
    decisions = json.loads(
        await stack.ok("explain", "--json", "--service", "consumer", "--tail", "50")
    )
    manual = [d for d in decisions if d["action"] == "manual"]
    assert len(manual) == 1
    assert (manual[0]["current_replicas"], manual[0]["target_replicas"]) == (1, 3)
    assert f"by {OPERATOR}: load test" in manual[0]["reason"]
    assert "manual" in await stack.ok("explain", "--service", "consumer", "--tail", "50")

    refused = await stack.run("scale", "consumer", "99")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: scale refused: 99 is outside [1, 4] for consumer"
    assert await stack.scaler("consumer").replicas() == 3


async def test_a_manual_scale_holds_and_status_shows_it_until_resume(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack([service("consumer")])
    await async_wait_for(lambda: _replicas(stack, "consumer", 1), 30, "first replica")

    said = await stack.ok("scale", "consumer", "3", "--hold", "10m", "--reason", "sale")
    assert said.startswith("scaled consumer 1 -> 3 (recorded as a manual decision; held by ")
    assert said.rstrip().endswith("`docktor resume consumer` ends it early)")
    assert len(said.splitlines()) == 1

    row = (await stack.status_json())["consumer"]
    assert row["hold"]["replicas"] == 3 and row["hold"]["by"] == OPERATOR
    assert 500 < row["hold_left_s"] <= 600
    until = datetime.fromisoformat(row["hold"]["until"])
    line = next(x for x in (await stack.ok("status")).splitlines() if x.startswith("consumer"))
    assert f"3 until {until:%H:%M:%S} UTC" in line

    # The loop's own iterations say what holds them, through the real evaluate activity.
    async def held_decision() -> bool:
        decisions = await stack.explain_json()
        return any(
            d["action"] == "hold"
            and f"held by manual scale until {until:%H:%M:%S} UTC" in d["reason"]
            for d in decisions
        )

    await async_wait_for(held_decision, 30, "an iteration held by the manual scale")
    assert await stack.scaler("consumer").replicas() == 3

    said = await stack.ok("resume", "consumer")
    assert said.startswith("resumed consumer")
    assert (await stack.status_json())["consumer"]["hold"] is None
    assert " UTC (" not in (await stack.ok("status")).splitlines()[1]  # the HELD cell is gone
    twice = await stack.run("resume", "consumer")
    assert twice.returncode == 1
    assert twice.stderr.strip() == "error: resume refused: not paused, and no manual scale is held"

    # --hold 0: no hold at all.
    said = await stack.ok("scale", "consumer", "2", "--hold", "0")
    assert "the policy decides again from the next check" in said
    assert (await stack.status_json())["consumer"]["hold"] is None
    bad = await stack.run("scale", "consumer", "2", "--hold", "soon")
    assert bad.returncode == 2 and "--hold" in bad.stderr and "Traceback" not in bad.stderr


async def test_nudge_evaluates_now(make_stack: StackFactory) -> None:
    # An hour between ticks: a second iteration can only come from the nudge.
    stack = await make_stack([service("consumer", check_interval="1h")])

    async def iterated(count: int) -> bool:
        return (await stack.status("consumer")).iteration >= count

    await async_wait_for(lambda: iterated(1), 30, "the first iteration")
    assert (await stack.status("consumer")).iteration == 1

    said = await stack.ok("nudge", "consumer")
    assert said.strip() == "nudged consumer: it evaluates now instead of at the next tick"
    await async_wait_for(lambda: iterated(2), 30, "the nudged iteration")
    await stack.settled("consumer", decisions=2)  # so the teardown's cancel is not swallowed


# ---- down ------------------------------------------------------------------------------------


async def _loop_gone(stack: Stack, name: str) -> bool:
    try:
        await LoopClient(stack.client, stack.config).handle(name)
    except NoRunningLoop:
        return True
    return False


async def test_down_replicas_stops_every_loop_and_every_replica(make_stack: StackFactory) -> None:
    stack = await make_stack([service("api"), service("consumer")])
    project = stack.config.project or ""
    await async_wait_for(lambda: _replicas(stack, "api", 1), 30, "api's first replica")
    await async_wait_for(lambda: _replicas(stack, "consumer", 1), 30, "consumer's replica")
    await stack.ok("scale", "consumer", "3")
    pids = replica_pids(project, "api") + replica_pids(project, "consumer")
    assert len(pids) == 4

    said = await stack.run("down", "--replicas", "--yes")
    assert said.returncode == 0, said.stderr
    lines = said.stdout.splitlines()
    assert (
        f"consumer: loop stopped: {stack.config.workflow_id('consumer')} recorded `stopped` "
        "at 3 replicas" in lines
    )
    assert "consumer: stopped 3 replicas (processes backend)" in lines
    assert "api: stopped 1 replica (processes backend)" in lines
    assert replica_pids(project, "api") == [] == replica_pids(project, "consumer")
    assert not any(process_alive(pid) for pid in pids)
    for name in ("api", "consumer"):
        assert await _loop_gone(stack, name)
        last = [d for d in read_decisions(stack.config.journal_path) if d.service == name][-1]
        assert last.action == "stopped"

    # Nothing left: said so, and still a success.
    again = await stack.run("down", "--replicas", "--yes")
    assert again.returncode == 0, again.stderr
    assert "consumer: no loop was running (" in again.stdout and "is completed)" in again.stdout
    assert "consumer: no replicas running (processes backend)" in again.stdout


async def test_down_without_replicas_leaves_them_and_a_later_down_stops_them(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack([service("api"), service("consumer")])
    project = stack.config.project or ""
    await async_wait_for(lambda: _replicas(stack, "consumer", 1), 30, "consumer's replica")
    await async_wait_for(lambda: _replicas(stack, "api", 1), 30, "api's replica")

    said = await stack.ok("down", "consumer")
    assert "consumer: loop stopped" in said and "replicas keep running" in said
    assert "api" not in said
    assert await _loop_gone(stack, "consumer") and not await _loop_gone(stack, "api")
    assert len(replica_pids(project, "consumer")) == 1

    # No terminal to ask on and no --yes: refused, nothing stopped.
    refused = await stack.run("down", "consumer", "--replicas")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: down --replicas stops the services themselves")
    assert len(refused.stderr.splitlines()) == 1 and refused.stdout == ""
    assert len(replica_pids(project, "consumer")) == 1

    # The loop is gone already: said so, and its replicas are stopped all the same.
    said = await stack.ok("down", "consumer", "--replicas", "--yes")
    assert "consumer: no loop was running" in said
    assert "consumer: stopped 1 replica (processes backend)" in said
    assert replica_pids(project, "consumer") == []
    assert len(replica_pids(project, "api")) == 1

    # Temporal out of reach: no loop can be cancelled (said once), the replicas still stop
    # (api's loop, still running on the real server, may well start one again).
    nowhere = f"127.0.0.1:{free_port()}"
    cut_off = await stack.run("down", "api", "--replicas", "--yes", "--address", nowhere)
    assert cut_off.returncode == 1
    assert cut_off.stderr.startswith(f"error: cannot reach Temporal at {nowhere}")
    assert cut_off.stderr.rstrip().endswith("; no loop was cancelled")
    assert len(cut_off.stderr.splitlines()) == 1
    assert cut_off.stdout.splitlines()[0] == "api: stopped 1 replica (processes backend)"

    unknown = await stack.run("down", "nosuch", "--replicas", "--yes")
    assert unknown.returncode == 2
    assert (
        unknown.stderr.strip() == "error: unknown service 'nosuch'; the config has: api, consumer"
    )


# ---- approval --------------------------------------------------------------------------------


async def test_approve_and_reject(make_stack: StackFactory) -> None:
    stack = await make_stack(
        [
            service("consumer"),
            # Starts at 0 below min_replicas 2: the bounds rule proposes 0 -> 2 at once, and
            # `approval: manual` holds it until an operator decides.
            service("gated", min_replicas=2, approval="manual", approval_timeout="10m"),
        ]
    )
    await async_wait_for(lambda: _replicas(stack, "consumer", 1), 30, "consumer's replica")

    nothing = await stack.run("approve", "consumer")
    assert nothing.returncode == 1
    assert nothing.stderr.strip() == (
        "error: approve refused: no decision of consumer is awaiting approval"
    )
    nothing = await stack.run("reject", "consumer", "--reason", "no")
    assert nothing.returncode == 1 and "reject refused: no decision of consumer" in nothing.stderr

    async def awaiting() -> bool:
        return (await stack.status("gated")).pending_approval is not None

    await async_wait_for(awaiting, 30, "gated's decision awaiting approval")
    row = (await stack.status_json())["gated"]
    pending = row["pending_approval"]
    assert (pending["current_replicas"], pending["target_replicas"]) == (0, 2)
    assert 0 < row["approval_expires_in_s"] <= 600
    gated_line = next(x for x in (await stack.ok("status")).splitlines() if x.startswith("gated"))
    assert "0 -> 2, expires in" in gated_line

    said = await stack.ok("reject", "gated", "--reason", "not now")
    assert said.startswith("rejected gated 0 -> 2")
    assert await stack.scaler("gated").replicas() == 0

    # The next iteration proposes the same again; this time it is approved and applied.
    await async_wait_for(awaiting, 30, "gated's next decision awaiting approval")
    said = await stack.ok("approve", "gated", "--reason", "go")
    assert said.startswith("approved gated 0 -> 2")
    await async_wait_for(lambda: _replicas(stack, "gated", 2), 30, "gated at 2 replicas")

    explained = await stack.ok("explain", "--json", "--service", "gated", "--tail", "50")
    reasons = [d["reason"] for d in json.loads(explained)]
    assert any(f"rejected by {OPERATOR}: not now" in r for r in reasons)
    assert any(f"approved by {OPERATOR}: go" in r for r in reasons)


# ---- failures --------------------------------------------------------------------------------


async def test_failures_are_one_clear_line(make_stack: StackFactory) -> None:
    # An hour between ticks, so that the loop is stopped while it waits (see Stack.settled).
    stack = await make_stack(
        [service("consumer", check_interval="1h"), service("idle")], start=["consumer"]
    )
    await stack.settled("consumer")

    unknown = await stack.run("pause", "nosuch")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        "error: unknown service 'nosuch'; the config has: consumer, idle"
    )
    assert (await stack.run("explain", "--service", "nosuch")).returncode == 2

    # A configured service whose loop was never started.
    idle = await stack.run("scale", "idle", "2")
    assert idle.returncode == 1
    assert idle.stderr.startswith("error: no running loop for service 'idle'")
    assert len(idle.stderr.splitlines()) == 1
    rows = await stack.status_json()
    assert rows["idle"]["running"] is False and rows["idle"]["problem"] == "not running"
    assert rows["consumer"]["running"] is True
    idle_line = next(x for x in (await stack.ok("status")).splitlines() if x.startswith("idle"))
    assert "not running" in idle_line

    # A loop that was stopped.
    await asyncio.wait_for(LoopClient(stack.client, stack.config).stop("consumer"), STOP_WAIT)
    for args in (("pause", "consumer"), ("nudge", "consumer"), ("approve", "consumer")):
        stopped = await stack.run(*args)
        assert stopped.returncode == 1, args
        assert stopped.stderr.startswith("error: no running loop for service 'consumer'"), args
        assert "is completed" in stopped.stderr

    # A stopped loop's decisions still explain themselves, from the decision log.
    after = await stack.run("explain", "--service", "consumer", "--json")
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)[-1]["action"] == "stopped"
    assert stack.config.journal_path in after.stderr

    # Nothing listening at the address.
    nowhere = f"127.0.0.1:{free_port()}"
    unreachable = await stack.run("status", "--address", nowhere)
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(f"error: cannot reach Temporal at {nowhere}")
    assert len(unreachable.stderr.splitlines()) == 1
    assert (await stack.run("scale", "consumer", "2", "--address", nowhere)).returncode == 1


async def test_updates_without_a_worker_say_the_loop_has_not_answered(
    tmp_path: Path, temporal_dev: EmbeddedTemporal
) -> None:
    # The loop ran on a worker that has gone away since: the update is never accepted. The
    # command must give up after its deadline with one line, not wait for ever.
    tag = uuid.uuid4().hex[:8]
    document = {
        "project": f"op-{tag}",
        "journal": "decisions.jsonl",
        "temporal": {"address": temporal_dev.address, "task_queue": f"docktor-gone-{tag}"},
        "services": [service("consumer", check_interval="1h")],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    async with serving_loops(config) as client:
        stack = Stack(config, path, client)
        await stack.start("consumer")
        await stack.settled("consumer")
    stack.client = await connect(config)
    try:
        for args in (("scale", "consumer", "2"), ("pause", "consumer")):
            began = time.monotonic()
            result = await stack.run(*args, "--timeout", "2")
            took = time.monotonic() - began
            assert result.returncode == 1, (args, result.stderr)
            assert result.stderr == (
                "error: the loop for service 'consumer' has not answered within 2s "
                f"(is a worker running on task queue '{config.temporal.task_queue}'?)\n"
            )
            assert took < 30, f"docktor {' '.join(args)} took {took:.1f}s"
    finally:
        handle = stack.client.get_workflow_handle(config.workflow_id("consumer"))
        await handle.terminate(reason="test teardown: its worker is gone")
        await stack.scaler("consumer").stop_all()


class StuckApply:
    """An `apply` that does not return until released: a scale that never finishes, as when
    the worker that accepted an update dies in the middle of it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0

    @activity.defn(name="apply")
    async def apply(self, request: ApplyInput) -> ApplyResult:
        self.calls += 1
        await self.release.wait()
        return ApplyResult(replicas=request.target_replicas)


async def test_an_update_accepted_but_never_finished_is_given_up_on(
    tmp_path: Path, temporal_dev: EmbeddedTemporal
) -> None:
    tag = uuid.uuid4().hex[:8]
    document = {
        "project": f"op-{tag}",
        "journal": "decisions.jsonl",
        "temporal": {"address": temporal_dev.address, "task_queue": f"docktor-stuck-{tag}"},
        "services": [service("consumer", check_interval="1h")],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    client = await connect(config)
    real, stuck = LoopActivities(WorkerConfig(config, path)), StuckApply()
    worker = build_worker(
        client,
        config.temporal.task_queue,
        [real.observe, real.evaluate, real.observe_evaluate, real.advise, stuck.apply, real.record],
    )
    stack = Stack(config, path, client)
    async with worker:
        await stack.start("consumer")

        async def applying() -> bool:
            return stuck.calls > 0  # the loop's own 0 -> 1 hangs, so will the operator's

        await async_wait_for(applying, 30, "the loop's first scale")
        try:
            # Long enough for a loaded worker to accept it: the apply never finishes anyway.
            result = await stack.run("scale", "consumer", "3", "--timeout", "8")
            assert result.returncode == 1, result.stderr
            assert result.stderr == (
                "error: the loop for service 'consumer' accepted the request but has not "
                "finished it within 8s; it may still do so (see `docktor status`)\n"
            )
        finally:
            stuck.release.set()
            await stack.stop("consumer")
    await real.close()


async def test_explain_falls_back_to_the_decision_log(make_stack: StackFactory) -> None:
    stack = await make_stack([service("consumer", check_interval="1h")])
    await stack.settled("consumer")
    await asyncio.wait_for(LoopClient(stack.client, stack.config).stop("consumer"), STOP_WAIT)

    nowhere = f"127.0.0.1:{free_port()}"
    result = await stack.run("explain", "--address", nowhere, "--tail", "100")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == (
        f"note: Temporal not reachable at {nowhere}; "
        f"showing the decision log {stack.config.journal_path}"
    )
    lines = result.stdout.splitlines()
    assert "scale_up" in lines[1] and "0 -> 1" in lines[1]
    assert "stopped" in lines[-1]

    as_json = await stack.run("explain", "--address", nowhere, "--json", "--tail", "1")
    assert as_json.returncode == 0
    assert [d["action"] for d in json.loads(as_json.stdout)] == ["stopped"]


async def test_a_torn_line_in_the_log_costs_only_itself(make_stack: StackFactory) -> None:
    # A full disk or a crash mid-write leaves a line without its end; before, the next
    # decision was appended onto it (both lost) and explain from the log died on a traceback.
    stack = await make_stack([service("consumer", check_interval="1h")])
    await stack.settled("consumer")
    await asyncio.wait_for(LoopClient(stack.client, stack.config).stop("consumer"), STOP_WAIT)
    journal = Path(stack.config.journal_path)
    with journal.open("a") as handle:
        handle.write('{"timestamp":"2026-01-01T00:00:00Z","service":"consumer","act')

    await stack.start("consumer")  # the loop again, appending after the torn line
    await stack.settled("consumer", decisions=3)  # scale_up, stopped, the new loop's first
    await asyncio.wait_for(LoopClient(stack.client, stack.config).stop("consumer"), STOP_WAIT)

    nowhere = f"127.0.0.1:{free_port()}"
    result = await stack.run("explain", "--address", nowhere, "--json", "--tail", "100")
    assert result.returncode == 0, result.stderr
    assert f"1 line(s) of {journal} could not be read (torn or edited): skipped" in result.stderr
    actions = [d["action"] for d in json.loads(result.stdout)]
    assert len(actions) == 4 and actions[:2] == ["scale_up", "stopped"], actions
    assert actions[3] == "stopped", actions


async def test_explain_reads_a_rotated_log_across_its_files(tmp_path: Path) -> None:
    """The log as the worker leaves it after rotations (decisions.jsonl, .1, .2, ...): explain
    from it shows the decisions of every file, merged in time order, the tail or since asked."""
    path = tmp_path / "docktor.yaml"
    document = {
        "project": "rotated",
        "journal": "decisions.jsonl",
        "services": [service("consumer"), service("api")],
    }
    path.write_text(yaml.safe_dump(document))
    journal = Path(load_config(path).journal_path)
    start = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    for sequence in range(1, 31):
        for name in ("consumer", "api", "elsewhere"):  # elsewhere: another config's service
            decision = Decision(
                timestamp=start + timedelta(seconds=4 * sequence),
                service=name,
                action="hold",
                current_replicas=1,
                target_replicas=1,
                reason=f"{name} {sequence}",
                workflow_id=f"docktor-rotated-{name}",
                first_run_id="run",
                sequence=sequence,
            )
            assert append_decision(journal, decision, rotate_bytes=4096, files=50)
    assert len(journal_files(journal)) >= 5

    nowhere = f"127.0.0.1:{free_port()}"
    every = await run_docktor(path, "explain", "--address", nowhere, "--json", "--tail", "100")
    assert every.returncode == 0, every.stderr
    shown = [(d["sequence"], d["service"]) for d in json.loads(every.stdout)]
    assert shown == [(n, name) for n in range(1, 31) for name in ("api", "consumer")]

    tail = await run_docktor(
        path, "explain", "--address", nowhere, "--service", "consumer", "--tail", "3"
    )
    assert tail.returncode == 0, tail.stderr
    rows = tail.stdout.splitlines()[1:]
    assert [row.split()[-1] for row in rows] == ["28", "29", "30"], tail.stdout

    since = (start + timedelta(seconds=4 * 29)).isoformat()
    recent = await run_docktor(
        path, "explain", "--address", nowhere, "--json", "--since", since, "--tail", "100"
    )
    assert recent.returncode == 0, recent.stderr
    assert [d["reason"] for d in json.loads(recent.stdout)] == [
        "api 29",
        "consumer 29",
        "api 30",
        "consumer 30",
    ]


async def test_explain_without_temporal_or_log_fails(make_stack: StackFactory) -> None:
    stack = await make_stack([service("consumer")], start=[])
    nowhere = f"127.0.0.1:{free_port()}"
    result = await stack.run("explain", "--address", nowhere)
    assert result.returncode == 1
    assert "no decision log at" in result.stderr


# ---- what explain derives (pure) -------------------------------------------------------------


def _decision(**fields: Any) -> Decision:
    base: dict[str, Any] = {
        "timestamp": datetime(2025, 1, 1, tzinfo=UTC),
        "service": "consumer",
        "action": "scale_up",
        "current_replicas": 1,
        "target_replicas": 2,
        "reason": "r",
    }
    return Decision(**{**base, **fields})


def test_observations_that_mattered_put_matched_rules_first() -> None:
    decision = _decision(
        observations={"queue.backlog": 812.0, "queue.ack_pending": 3.0, "cpu.avg_pct": 12.0},
        matched_rules=["queue.backlog 812 > 500"],
    )
    assert mattered(decision) == {"queue.backlog": 812.0}


def test_observations_that_mattered_fall_back_to_the_rules_metrics(tmp_path: Path) -> None:
    path = tmp_path / "docktor.yaml"
    spec = service(
        "consumer",
        rules={"scale_down_when": [{"metric": "queue.backlog", "op": "<", "value": 10}]},
    )
    path.write_text(yaml.safe_dump({"services": [spec]}))
    config = load_config(path)
    decision = _decision(action="hold", observations={"queue.backlog": 40.0, "queue.rate_in": 2.5})
    assert mattered(decision, config) == {"queue.backlog": 40.0}


def test_model_label() -> None:
    assert model_label(Provenance()) == "rules"
    used = Provenance(provider="dmr", model="ai/smollm2", llm_used=True)
    assert model_label(used) == "dmr ai/smollm2"
    failed = Provenance(provider="dmr", model="ai/smollm2", fallback="timeout after 10s")
    assert model_label(failed) == "rules (fallback from dmr ai/smollm2: timeout after 10s)"
