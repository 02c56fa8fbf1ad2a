"""The Temporal dev server stops and starts again on its database file (the same state dir,
the same port). A `python -m worker` rides it out; the loop carries on in the same run, with its
cooldown where it was, and nobody runs the starter again."""

from __future__ import annotations

import uuid
from pathlib import Path

import yaml
from helpers import (
    IDLE_COMMAND,
    WorkerProcess,
    assert_gapless,
    async_wait_for,
    queue_with_backlog,
    replica_pids,
    start_worker,
)

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.client.temporal import connect
from docktor.dev.embedded import EmbeddedNats, start_temporal
from docktor.spec import load_config
from docktor.values import Decision

COOLDOWN_UP = 600  # far longer than the test: it must still be running after the restart


async def test_loops_resume_after_a_temporal_restart_with_cooldowns_intact(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    temporal = start_temporal(tmp_path / "temporal")
    worker: WorkerProcess | None = None
    tag = uuid.uuid4().hex[:6]
    stream, subject = f"TR_{tag}", f"tr.{tag}"
    document = {
        "project": f"restart-{tag}",
        "state_dir": str(tmp_path / "state"),
        "journal": str(tmp_path / "decisions.jsonl"),
        "temporal": {"address": temporal.address, "task_queue": f"docktor-tr-{tag}"},
        "services": [
            {
                "name": "consumer",
                "backend": "processes",
                "command": IDLE_COMMAND,
                "min_replicas": 1,
                "max_replicas": 4,
                "check_interval": "1s",
                "stop_grace_period": "1s",
                "cooldown": {"up": COOLDOWN_UP, "down": COOLDOWN_UP},
                # The backlog is over the threshold throughout: only the cooldown holds it.
                "rules": {"scale_up_when": [{"metric": "queue.backlog", "op": ">", "value": 10}]},
                "queue": {
                    "kind": "nats",
                    "url": nats_server.url,
                    "stream": stream,
                    "consumer": "workers",
                },
            }
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    project = config.project or ""
    try:
        await queue_with_backlog(nats_server.url, stream, subject, 100)
        worker = start_worker(path, tmp_path / "worker.log")
        client = await connect(config)
        started = await LoopClient(client, config).start(config.services[0])

        async def in_cooldown() -> bool:
            decisions = await LoopClient(client, config).decisions("consumer", tail=100)
            return any("cooldown" in d.reason for d in decisions)

        # 0 -> 1 (min_replicas) starts the up cooldown; then holds in it.
        await async_wait_for(in_cooldown, 30, "a hold in the up cooldown")
        before = await LoopClient(client, config).status("consumer")
        assert before.cooldown_up_until is not None and before.replicas == 1
        assert before.last_decision is not None
        last_before = before.last_decision.sequence

        temporal.stop()
        temporal = start_temporal(
            tmp_path / "temporal", port=temporal.port, ui_port=temporal.ui_port
        )
        client = await connect(config)

        async def went_on() -> bool:
            decisions = await LoopClient(client, config).decisions("consumer", tail=100)
            return len([d for d in decisions if d.sequence > last_before]) >= 3

        await async_wait_for(went_on, 60, "3 decisions after the restart")
        after = await LoopClient(client, config).status("consumer")
        handle = client.get_workflow_handle(config.workflow_id("consumer"))
        assert (await handle.describe()).run_id == started.run_id  # the same run, not a new one
        assert after.cooldown_up_until == before.cooldown_up_until
        assert worker.process.poll() is None, "the worker died with the server"
        await LoopClient(client, config).stop("consumer", timeout=30)
        made = await handle.query("decisions", 1000, result_type=list[Decision])
        replicas = len(replica_pids(project, "consumer"))
    finally:
        if worker is not None:
            worker.stop()
        await ProcessScaler(config.services[0], project=project).stop_all()
        temporal.stop()

    assert_gapless([d.sequence for d in made], "decision sequences")
    assert [d.action for d in made].count("scale_up") == 1  # 0 -> 1, then the cooldown held
    later = [d for d in made if d.sequence > last_before]
    assert all("cooldown" in d.reason for d in later if d.action == "hold")
    assert replicas == 1
