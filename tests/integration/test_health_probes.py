"""`python -m worker --health-port N`: /healthz while the process runs; /readyz 503 until the
worker is connected and polling, 200 then, and 503 again once Temporal is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from helpers import REPO, wait_for, write_idle_config

from docktor.dev.embedded import free_port, start_temporal


def probe(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # not listening yet


def test_readyz_follows_the_connection_to_temporal(tmp_path: Path) -> None:
    temporal = start_temporal(tmp_path / "temporal")
    worker: subprocess.Popen[bytes] | None = None
    try:
        config = write_idle_config(tmp_path, temporal.address, "health", uuid.uuid4().hex[:6])
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        # Frozen, the server accepts connections and answers nothing: the worker is up and
        # still connecting, for as long as the test needs to look.
        os.kill(temporal.process.pid, signal.SIGSTOP)
        log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker", "--config", str(config), "--health-port", str(port)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: probe(f"{base}/healthz") == 200, 30, "/healthz answering")
        assert probe(f"{base}/readyz") == 503
        os.kill(temporal.process.pid, signal.SIGCONT)
        wait_for(lambda: probe(f"{base}/readyz") == 200, 60, "/readyz 200 once polling")

        temporal.stop()
        wait_for(lambda: probe(f"{base}/readyz") == 503, 30, "/readyz 503 without Temporal")
        assert probe(f"{base}/healthz") == 200  # the process still runs
        assert probe(f"{base}/metrics") == 404
    finally:
        if temporal.process.poll() is None:
            os.kill(temporal.process.pid, signal.SIGCONT)
            temporal.stop()
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    assert "Traceback" not in (tmp_path / "worker.log").read_text()
