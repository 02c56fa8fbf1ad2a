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
from pathlib import Path

import yaml
from helpers import (
    REPO,
    process_alive,
    replica_pids,
    start_worker,
    wait_for,
    write_idle_config,
)

from docktor.config import load_config
from docktor.embedded import free_port, port_in_use
from docktor.scalers.processes import ProcessScaler


def write_config(tmp_path: Path, temporal_port: int, nats_port: int) -> Path:
    config = {
        "temporal": {"address": f"127.0.0.1:{temporal_port}"},
        "services": [
            {
                "name": "consumer",
                "backend": "processes",
                "command": ["python", "consumer.py"],
                "queue": {"url": f"nats://127.0.0.1:{nats_port}", "stream": "S", "consumer": "c"},
            }
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def wait_ready(process: subprocess.Popen[str]) -> str:
    """The dev stack's output up to its `Ctrl-C stops everything` line."""
    lines: list[str] = []

    def ready() -> bool:
        line = process.stdout.readline()  # type: ignore[union-attr]
        lines.append(line)
        return "Ctrl-C stops everything" in line or line == ""

    wait_for(ready, timeout=90, message="docktor dev ready")
    return "".join(lines)


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
    process = dev(
        config,
        "--state-dir",
        str(tmp_path / "state"),
        "--temporal-ui-port",
        str(ui_port),
        "--nats-monitor-port",
        str(monitor_port),
    )
    try:
        text = wait_ready(process)
        assert f"127.0.0.1:{temporal_port}" in text
        assert f"http://127.0.0.1:{ui_port}" in text
        assert f"nats://127.0.0.1:{nats_port}" in text
        assert port_in_use(temporal_port) and port_in_use(nats_port)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert not port_in_use(temporal_port) and not port_in_use(nats_port)


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
    # A processes service without a queue (so no NATS): the loop brings it up to min_replicas 1.
    tag = uuid.uuid4().hex[:8]
    path = write_idle_config(tmp_path, f"127.0.0.1:{free_port()}", "dev", tag)
    project = f"dev-{tag}"
    process = dev(path, "--temporal-ui-port", str(free_port()))
    worker = None
    try:
        wait_ready(process)
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
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output
        assert "stopped 1 replica of consumer" in output
        assert replica_pids(project, "consumer") == []
        assert not any(process_alive(pid) for pid in pids)  # type: ignore[union-attr]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if worker is not None:
            worker.stop()
        config = load_config(path)
        asyncio.run(ProcessScaler(config.services[0], project=project).stop_all())
