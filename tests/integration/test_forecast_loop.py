"""Predictive pre-scaling on the real stack: a loop started beside a decision log with a rhythm
(warm start) pre-scales within its first cycle, and `docktor forecast` shows what it learnt.

Temporal dev server, NATS JetStream, an in-process worker with the real workflow and
activities, a `processes` backend of idle replicas. Nothing publishes: the live rate is 0, so
the only rhythm the loop can know is the one in the log, and every pre-scale comes from it;
what one replica handles is not configured either, but learnt from the log.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import (
    async_wait_for,
    queue_with_backlog,
    run_docktor,
    serving_loops,
    stop_loop_within,
    write_idle_config,
    write_rate_log,
)

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.dev.embedded import EmbeddedNats, EmbeddedTemporal
from docktor.journal import read_decisions
from docktor.spec import DocktorConfig, load_config
from docktor.values import Decision

pytestmark = pytest.mark.integration

PERIOD = 20.0
BURST = 4.0  # seconds of 100 msg/s in every period; nothing in between
# The log ends when the loop starts; the next burst begins this many seconds later: more than
# the lead (1 s check + 5 s start-up) plus the jitter window (2 s), so the pre-scale is seen
# as its own decision, ahead of the burst.
NEXT_BURST_IN = 12.0


@dataclass
class Loop:
    config: DocktorConfig
    path: Path  # its docktor.yaml
    burst_at: float  # epoch seconds of the first burst after the loop starts


def rhythm(burst_at: float) -> Callable[[float], float]:
    """100 msg/s for BURST seconds at the end of every PERIOD, the first ending BURST seconds
    after `burst_at`; nothing in between."""
    return lambda t: 100.0 if (t - burst_at) % PERIOD < BURST else 0.0


@pytest.fixture
async def loop(
    tmp_path: Path, temporal_dev: EmbeddedTemporal, nats_server: EmbeddedNats
) -> AsyncIterator[Loop]:
    """A `consumer` loop with predict on, started beside a log of an earlier run with a 20 s
    rhythm; stopped, with its replicas, at the end."""
    tag = uuid.uuid4().hex[:8]
    stream, subject = f"FC{tag}", f"fc.{tag}"
    await queue_with_backlog(nats_server.url, stream, subject, 0)
    path = write_idle_config(
        tmp_path,
        temporal_dev.address,
        "fc",
        tag,
        max_replicas=4,
        cooldown={"up": 0, "down": 0},
        queue={"url": nats_server.url, "stream": stream, "consumer": "workers"},
        predict={"enabled": True},
    )
    config = load_config(path)
    async with serving_loops(config) as client:
        # Twelve cycles of the earlier run, one decision a second, ending as the loop starts
        # (a slow worker start-up would otherwise read as a gap in the rhythm); its two
        # replicas busy throughout (work waiting, 100 msg/s out): 50 msg/s per replica.
        now = datetime.now(UTC)
        burst_at = now.timestamp() + NEXT_BURST_IN
        workflow_id = config.workflow_id("consumer")
        busy = {"queue.backlog": 200.0, "queue.rate_out": 100.0}
        log = Path(config.journal_path)
        write_rate_log(log, workflow_id, rhythm(burst_at), 240, 1.0, now, also=busy)
        try:
            await LoopClient(client, config).start(config.service("consumer"))
            yield Loop(config, path, burst_at)
        finally:
            await stop_loop_within(client, config, "consumer")
            await ProcessScaler(config.service("consumer"), project=config.project).stop_all()


def this_run(config: DocktorConfig) -> list[Decision]:
    return [d for d in read_decisions(config.journal_path) if d.first_run_id != "an-earlier-run"]


def first_decision(config: DocktorConfig) -> Callable[[], Awaitable[Decision | None]]:
    async def found() -> Decision | None:
        return next(iter(this_run(config)), None)

    return found


async def first_predicted(config: DocktorConfig) -> Decision:
    async def found() -> Decision | None:
        return next((d for d in this_run(config) if d.metadata.predicted), None)

    decision = await async_wait_for(found, 30, "a decision marked predicted")
    assert isinstance(decision, Decision)
    return decision


async def test_a_warm_started_loop_pre_scales_in_its_first_cycle(loop: Loop) -> None:
    config = loop.config
    decision = await first_predicted(config)
    start = this_run(config)[0].timestamp
    # Within the first period of the loop's life, and ahead of a burst of the log's rhythm:
    # a cold loop would need three periods of its own history first. (Which burst: the next
    # one, unless a slow start-up let it come too close to pre-scale for.)
    assert (decision.timestamp - start).total_seconds() < PERIOD
    expected = re.search(r"burst expected at (\d\d):(\d\d):(\d\d)", decision.reason)
    assert expected is not None, decision.reason
    hours, minutes, seconds = (int(part) for part in expected.groups())
    at = decision.timestamp.replace(hour=hours, minute=minutes, second=seconds, microsecond=0)
    if at < decision.timestamp - timedelta(hours=12):
        at += timedelta(days=1)  # the burst is after midnight
    assert 0 < (at - decision.timestamp).total_seconds() <= PERIOD
    into_burst = (at.timestamp() - loop.burst_at) % PERIOD  # the log's bursts: BURST long
    assert into_burst <= BURST + 1.5 or into_burst >= PERIOD - 1.5, (at, decision.reason)
    assert decision.action == "scale_up" and decision.target_replicas == 3  # 110/s over 50/s
    assert "pre-scaling for the burst expected at" in decision.reason
    assert "(period 20s, seen " in decision.reason and "100/s needs 3" in decision.reason


async def docktor(path: Path, *args: str) -> str:
    result = await run_docktor(path, *args)
    assert result.returncode == 0, f"docktor {' '.join(args)}: {result.stderr}"
    return result.stdout


async def test_docktor_forecast_shows_what_the_running_loop_learnt(loop: Loop) -> None:
    config, path = loop.config, loop.path
    # The loop's first decision took its history from the log. Asked now, well before the
    # burst it expects: one that did not come (nothing publishes) would rightly put the
    # rhythm in doubt.
    await async_wait_for(first_decision(config), 30, "the loop's first decision")

    learnt = json.loads(await docktor(path, "forecast", "consumer", "--json"))
    assert learnt["service"] == "consumer" and learnt["enabled"] is True
    # What the loop found in the earlier run's rhythm (the live rate, 0, only adds to it).
    assert learnt["period_s"] == PERIOD
    assert learnt["confidence"] > 0
    assert learnt["history_s"] >= 240 and 0 < learnt["state_bytes"] < 32 * 1024
    assert learnt["next_peak_at"] is not None and learnt["next_peak_rate"] == 100
    assert learnt["lead_s"] == 1 + 5 and learnt["min_cycles"] == 3

    text = await docktor(path, "forecast", "consumer")
    lines = dict(line.split(None, 1) for line in text.splitlines() if line.strip())
    assert lines["service"] == "consumer"
    assert lines["period"].startswith("20s (seen ")
    assert lines["next"].startswith("peak ") and "100 msg/s (lead 6s)" in lines["next"]
