"""NATS goes down for several iterations and comes back on the same port and store. The loop
holds and says why, then goes *up* to the configured fallback count, never down; when NATS is
back it reads the backlog again, without a restart of anything."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import yaml
from helpers import (
    IDLE_COMMAND,
    assert_gapless,
    async_wait_for,
    queue_with_backlog,
    replica_pids,
    serving_loops,
    stop_loop_within,
)

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.dev.embedded import EmbeddedTemporal, start_nats
from docktor.spec import load_config
from docktor.values import Decision

BACKLOG = 50  # between the rules' thresholds: with data, the loop holds
FALLBACK = {"after": 2, "replicas": 3}


async def test_nats_down_holds_then_falls_back_up_never_down_and_recovers(
    tmp_path: Path, temporal_dev: EmbeddedTemporal
) -> None:
    nats = start_nats(tmp_path / "nats")
    tag = uuid.uuid4().hex[:6]
    stream, subject = f"OUT_{tag}", f"out.{tag}"
    document = {
        "project": f"outage-{tag}",
        "state_dir": str(tmp_path / "state"),
        "journal": str(tmp_path / "decisions.jsonl"),
        "temporal": {"address": temporal_dev.address, "task_queue": f"docktor-outage-{tag}"},
        "services": [
            {
                "name": "consumer",
                "backend": "processes",
                "command": IDLE_COMMAND,
                "min_replicas": 1,
                "max_replicas": 4,
                "check_interval": "1s",
                "stop_grace_period": "1s",
                "cooldown": {"up": 0, "down": 0},
                "fallback": FALLBACK,
                "rules": {
                    "scale_up_when": [{"metric": "queue.backlog", "op": ">", "value": 100}],
                    # Holds on missing data are the point: without the backlog, a rule that
                    # scaled down on "not above" would take replicas away here.
                    "scale_down_when": [{"metric": "queue.backlog", "op": "<", "value": 10}],
                },
                "queue": {"kind": "nats", "url": nats.url, "stream": stream, "consumer": "workers"},
            }
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    project = config.project or ""
    try:
        await queue_with_backlog(nats.url, stream, subject, BACKLOG)
        async with serving_loops(config) as client:

            async def decisions() -> list[Decision]:
                return await LoopClient(client, config).decisions("consumer", tail=1000)

            async def observed_backlog_since(moment: datetime) -> bool:
                return any(
                    d.observations.get("queue.backlog") == BACKLOG
                    for d in await decisions()
                    if d.timestamp > moment
                )

            await LoopClient(client, config).start(config.services[0])
            await LoopClient(client, config).scale_to("consumer", 2)
            scaled_at = datetime.now(UTC)
            await async_wait_for(
                lambda: observed_backlog_since(scaled_at), 20, "a backlog read at 2"
            )

            nats.stop()

            def outage(made: list[Decision]) -> list[Decision]:
                # The decisions after the last backlog read: by content, not by clock, since
                # an iteration may start while the blocking stop() runs.
                last_read = max(
                    d.sequence for d in made if d.observations.get("queue.backlog") == BACKLOG
                )
                return [d for d in made if d.sequence > last_read]

            async def fell_back() -> bool:
                return any(d.action == "scale_up" for d in outage(await decisions()))

            # Several iterations without data: holds, then the fallback count.
            await async_wait_for(fell_back, 60, "the fallback after failed observations")
            during = outage(await decisions())

            nats = start_nats(tmp_path / "nats", port=nats.port, monitor_port=nats.monitor_port)
            up_at = datetime.now(UTC)
            await async_wait_for(lambda: observed_backlog_since(up_at), 60, "the backlog again")
            await LoopClient(client, config).stop("consumer", timeout=30)
            handle = client.get_workflow_handle(config.workflow_id("consumer"))
            made = await handle.query("decisions", 1000, result_type=list[Decision])
            replicas_at_end = len(replica_pids(project, "consumer"))
    finally:
        await ProcessScaler(config.services[0], project=project).stop_all()
        nats.stop()

    holds = [d for d in during if d.action == "hold"]
    assert len(holds) >= FALLBACK["after"] - 1 and during[0].action == "hold"
    for hold in holds:
        assert "no metrics could be observed" in hold.reason and "nats" in hold.reason, hold
        assert hold.target_replicas == hold.current_replicas == 2
    fallback = next(d for d in during if d.action == "scale_up")
    assert (fallback.current_replicas, fallback.target_replicas) == (2, 3)
    assert "fallback to 3" in fallback.reason
    # Never down on missing data, nor after: the backlog read again holds the count.
    assert not [d for d in made if d.action == "scale_down"]
    assert made[-1].action == "stopped" and made[-1].target_replicas == 3 == replicas_at_end
    assert_gapless([d.sequence for d in made], "decision sequences")


# ---- many loops on one worker ----------------------------------------------------------------

LOOPS = 8
INTERVAL_S = 2
OUTAGE_S = 30.0
# The longest a loop may go without a decision while NATS is away: its interval, the observe
# activity's retry backoff (1 s, then 2 s: OBSERVE_RETRY), and room for a busy machine. Before,
# the loops queued behind each other's failing connects and went silent for 30 s and more.
MAX_GAP_S = INTERVAL_S + 3 + 7
# Between two status queries of every loop during the outage (pacing, not synchronisation).
STATUS_EVERY_S = 3.0


def blind_loops_config(
    tmp_path: Path, temporal: EmbeddedTemporal, nats_url: str, stream: str, tag: str
) -> Path:
    """LOOPS services on one NATS consumer whose backlog sits between the rules' thresholds:
    with data each holds at 0 replicas, and no fallback, so without data each holds too."""
    services = [
        {
            "name": f"blind-{index}",
            "backend": "processes",
            "command": IDLE_COMMAND,
            "min_replicas": 0,
            "max_replicas": 2,
            "check_interval": f"{INTERVAL_S}s",
            "rules": {
                "scale_up_when": [{"metric": "queue.backlog", "op": ">", "value": 100}],
                "scale_down_when": [{"metric": "queue.backlog", "op": "<", "value": 10}],
            },
            "queue": {"kind": "nats", "url": nats_url, "stream": stream, "consumer": "workers"},
        }
        for index in range(LOOPS)
    ]
    document = {
        "project": f"blind-{tag}",
        "state_dir": str(tmp_path / "state"),
        "journal": str(tmp_path / "decisions.jsonl"),
        "temporal": {"address": temporal.address, "task_queue": f"docktor-blind-{tag}"},
        "services": services,
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


async def test_every_loop_of_a_worker_holds_each_interval_through_a_nats_outage(
    tmp_path: Path, temporal_dev: EmbeddedTemporal
) -> None:
    nats = start_nats(tmp_path / "nats")
    tag = uuid.uuid4().hex[:6]
    stream, subject = f"BLIND_{tag}", f"blind.{tag}"
    path = blind_loops_config(tmp_path, temporal_dev, nats.url, stream, tag)
    config = load_config(path)
    names = [service.name for service in config.services]
    try:
        await queue_with_backlog(nats.url, stream, subject, BACKLOG)
        async with serving_loops(config, path) as client:
            # A query waits for the workflow task in flight, which during an outage holds the
            # observe retries (~3 s); eight loops on a loaded machine queue a few of those. The
            # point is that every loop answers, not how fast: before, they did not at all.
            loops = LoopClient(client, config, answer_timeout=30)
            for service in config.services:
                await loops.start(service)

            async def read_by_all_since(moment: datetime) -> bool:
                for name in names:
                    made = await loops.decisions(name, tail=50)
                    if not any(
                        d.timestamp > moment and d.observations.get("queue.backlog") == BACKLOG
                        for d in made
                    ):
                        return False
                return True

            began = datetime.now(UTC)
            await async_wait_for(lambda: read_by_all_since(began), 60, "every loop reading")

            nats.stop()
            down_at = datetime.now(UTC)
            ends = time.monotonic() + OUTAGE_S
            while time.monotonic() < ends:
                # Every loop answers its status throughout (before, `docktor status` timed out).
                await asyncio.gather(*(loops.status(name) for name in names))
                await asyncio.sleep(STATUS_EVERY_S)
            restart_at = datetime.now(UTC)
            nats = start_nats(tmp_path / "nats", port=nats.port, monitor_port=nats.monitor_port)
            up_at = datetime.now(UTC)

            await async_wait_for(lambda: read_by_all_since(up_at), 60, "every loop reading again")
            # The ring's 50 hold all of them: a few before, ~10 in the outage, a few after.
            made_by = {name: await loops.decisions(name, tail=50) for name in names}
            for name in names:
                await stop_loop_within(client, config, name)
    finally:
        nats.stop()

    for name, made in made_by.items():
        before = [d for d in made if d.timestamp <= down_at]
        during = [d for d in made if down_at < d.timestamp <= restart_at]
        assert before and during, (name, made)
        assert all(d.action == "hold" for d in made), (name, made)
        # The first decision without data is a hold like the others; the one before it may
        # have been read just before the stop.
        blind = [d for d in during if "queue.backlog" not in d.observations]
        assert len(blind) >= len(during) - 1, (name, during)
        for hold in blind:
            assert hold.action == "hold" and "nats" in hold.reason, hold
            assert hold.target_replicas == hold.current_replicas == 0, hold
        moments = [before[-1].timestamp, *(d.timestamp for d in during), restart_at]
        gaps = [(b - a).total_seconds() for a, b in zip(moments, moments[1:], strict=False)]
        assert max(gaps) <= MAX_GAP_S, f"{name}: {len(during)} decisions, gaps {gaps}"
