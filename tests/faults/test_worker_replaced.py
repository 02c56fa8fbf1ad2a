"""A replaced worker resumes at once: with 30 loops running, the worker is killed and
a new one started; every loop records a new decision within a few intervals. Real `python -m
worker` processes on the session's Temporal dev server."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import yaml
from helpers import WorkerProcess, async_wait_for, start_worker, stop_loop_within

from docktor.client.loops import LoopClient
from docktor.client.temporal import connect
from docktor.dev.embedded import EmbeddedTemporal
from docktor.spec import load_config
from tests.faults import test_worker_crash as crash

workers = crash.workers  # the fixture: every worker started is stopped by its pid

LOOPS = 30
INTERVAL = 5.0
# A few intervals: the new worker's start (imports, connecting), the server moving the dead
# worker's sticky tasks to the shared queue (3 s, worker/build.py), one replay per loop and the
# next tick.
RESUME_DEADLINE = 5 * INTERVAL


def latest_decisions(journal: Path) -> dict[str, datetime]:
    """The time of each loop's latest decision in the log."""
    latest: dict[str, datetime] = {}
    text = journal.read_text() if journal.exists() else ""
    # Complete lines only: the worker may be appending one as this reads.
    for raw in text[: text.rfind("\n") + 1].splitlines():
        line = json.loads(raw)
        stamp = datetime.fromisoformat(line["timestamp"])
        latest[line["workflow_id"]] = max(stamp, latest.get(line["workflow_id"], stamp))
    return latest


async def test_every_loop_decides_again_soon_after_the_worker_is_replaced(
    tmp_path: Path, temporal_dev: EmbeddedTemporal, workers: list[WorkerProcess]
) -> None:
    # Idle services at 0 replicas (min 0): the loops hold, nothing is started.
    path = crash.write_config(tmp_path, temporal_dev, {f"s{i:02d}": 0 for i in range(LOOPS)})
    document = yaml.safe_load(path.read_text())
    for service in document["services"]:
        service["check_interval"] = INTERVAL
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    journal = Path(config.journal_path or "")
    client = await connect(config)
    workers.append(start_worker(path, tmp_path / "first.log"))
    await asyncio.gather(*(LoopClient(client, config).start(s) for s in config.services))
    ids = {config.workflow_id(name) for name in config.service_names()}
    try:

        async def every_loop_decided_since(moment: datetime) -> bool:
            latest = latest_decisions(journal)
            return all(latest.get(i, moment) > moment for i in ids)

        since_start = datetime.now(UTC)
        await async_wait_for(
            lambda: every_loop_decided_since(since_start), 60, "every loop decided once"
        )

        workers[0].kill()  # a crash: the server learns of it only from its timeouts
        replaced_at = datetime.now(UTC)
        workers.append(start_worker(path, tmp_path / "second.log"))
        await async_wait_for(
            lambda: every_loop_decided_since(replaced_at),
            RESUME_DEADLINE,
            f"all {LOOPS} loops deciding again after the worker was replaced",
        )
        assert "exceeded" not in workers[1].log(), workers[1].log()
    finally:
        await asyncio.gather(*(stop_loop_within(client, config, n) for n in config.service_names()))
