"""`docktor dev`: the embedded stack starts, reports where it listens, and Ctrl-C stops it all,
the replicas its loops started included."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from helpers import (
    REPO,
    process_alive,
    replica_pids,
    require_redis_server,
    start_worker,
    wait_for,
    write_idle_config,
)

from docktor.backends.processes import ProcessScaler
from docktor.dev.embedded import free_port, port_in_use
from docktor.spec import load_config


def write_config(
    tmp_path: Path, temporal_port: int, nats_port: int, queue: dict[str, str] | None = None
) -> Path:
    """One processes service on a local NATS queue (or the `queue:` block given)."""
    config = {
        "temporal": {"address": f"127.0.0.1:{temporal_port}"},
        "services": [
            {
                "name": "consumer",
                "backend": "processes",
                "command": ["python", "consumer.py"],
                "queue": queue
                or {"url": f"nats://127.0.0.1:{nats_port}", "stream": "S", "consumer": "c"},
            }
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def dev(config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "docktor", "dev", "--config", str(config), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_dev_starts_temporal_and_nats_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    temporal_port, nats_port = free_port(), free_port()
    ui_port, monitor_port = free_port(), free_port()
    config = write_config(tmp_path, temporal_port, nats_port)
    state, ui, monitor = str(tmp_path / "state"), str(ui_port), str(monitor_port)
    extra = ("--state-dir", state, "--temporal-ui-port", ui, "--nats-monitor-port", monitor)
    with running_dev(config, *extra) as (process, text):
        assert f"127.0.0.1:{temporal_port}" in text
        assert f"http://127.0.0.1:{ui_port}" in text
        assert f"nats://127.0.0.1:{nats_port}" in text
        assert port_in_use(temporal_port) and port_in_use(nats_port)
        # What to run next, as it would be typed: no placeholder.
        assert f"python -m worker --config {config}\n" in text
        assert f"python -m starter --service consumer --config {config}\n" in text

        # The starter links to this stack's Web UI, on whatever port it took.
        started = subprocess.run(
            [sys.executable, "-m", "starter", "--service", "consumer", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "TEMPORAL_UI_URL"},
        )
        assert started.returncode == 0, started.stderr
        assert f"Web UI: http://127.0.0.1:{ui_port}/namespaces/default/workflows/" in started.stdout
    assert process.returncode == 0
    assert not port_in_use(temporal_port) and not port_in_use(nats_port)


@contextmanager
def running_dev(config: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`docktor dev` and what it printed up to its "Ctrl-C stops everything" line; Ctrl-C
    at the end (killed if it does not stop)."""
    process = dev(config, *extra)
    lines: list[str] = []

    def ready() -> bool:
        line = process.stdout.readline()  # type: ignore[union-attr]
        lines.append(line)
        return "Ctrl-C stops everything" in line or line == ""

    try:
        wait_for(ready, timeout=90, message="docktor dev ready")
        yield process, "".join(lines)
    finally:
        # Ctrl-C also when an assertion failed: killed outright, dev would leave the servers
        # it started (each in its own session) running.
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_dev_starts_redis_for_a_local_redis_queue(tmp_path: Path) -> None:
    require_redis_server()
    temporal_port, redis_port, ui_port = free_port(), free_port(), free_port()
    url = f"redis://127.0.0.1:{redis_port}/0"
    queue = {"kind": "redis", "url": url, "stream": "s", "group": "g"}
    config = write_config(tmp_path, temporal_port, 0, queue)
    extra = ("--state-dir", str(tmp_path / "state"), "--temporal-ui-port", str(ui_port))
    with running_dev(config, *extra) as (process, text):
        assert f"redis://127.0.0.1:{redis_port}/0" in text
        assert "nats" not in text.lower()
        assert port_in_use(redis_port)
    assert process.returncode == 0
    assert not port_in_use(temporal_port) and not port_in_use(redis_port)


def test_dev_says_which_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, port, free_port())
        process = dev(config, "--state-dir", str(tmp_path / "state"))
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert f"port {port}" in output and "Traceback" not in output


def test_ctrl_c_stops_the_replicas_the_loops_started(tmp_path: Path) -> None:
    # A processes service without a queue (so no broker): the loop brings it up to min 1.
    tag = uuid.uuid4().hex[:8]
    path = write_idle_config(tmp_path, f"127.0.0.1:{free_port()}", "dev", tag)
    project = f"dev-{tag}"
    worker = None
    try:
        with running_dev(path, "--temporal-ui-port", str(free_port())) as (process, _):
            worker = start_worker(path, tmp_path / "worker.log")
            started = subprocess.run(
                [sys.executable, "-m", "starter", "--service", "consumer", "--config", str(path)],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert started.returncode == 0, started.stderr
            pids = wait_for(
                lambda: replica_pids(project, "consumer"), timeout=60, message="the loop's replica"
            )
        # Ctrl-C: the servers, then the replica, with the worker still running beside it.
        assert process.returncode == 0
        assert replica_pids(project, "consumer") == []
        assert not any(process_alive(pid) for pid in pids)  # type: ignore[union-attr]
    finally:
        if worker is not None:
            worker.stop()
        config = load_config(path)
        asyncio.run(ProcessScaler(config.services[0], project=project).stop_all())
