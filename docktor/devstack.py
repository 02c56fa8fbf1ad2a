"""`docktor dev`: the embedded stack for local work, until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from urllib.parse import urlparse

from docktor.config import DocktorConfig
from docktor.embedded import EmbeddedError, ManagedProcess, start_nats, start_temporal
from docktor.exits import EXIT_OK, error, read_config

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def local_nats_port(config: DocktorConfig) -> int | None:
    """The port of the first NATS server the config expects on this machine, if any."""
    for service in config.services:
        if service.queue is not None and service.queue.kind == "nats":
            url = urlparse(service.queue.url)
            if url.hostname in LOCAL_HOSTS:
                return url.port or 4222
    return None


def temporal_port(config: DocktorConfig) -> int:
    return int(config.temporal.address.rsplit(":", 1)[-1])


def run_dev(args: argparse.Namespace) -> int:
    config = read_config(args.config)
    state_dir = Path(args.state_dir or config.state_dir)
    nats_port = args.nats_port or local_nats_port(config)
    started: list[ManagedProcess] = []
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        try:
            temporal = start_temporal(
                state_dir,
                port=args.temporal_port or temporal_port(config),
                ui_port=args.temporal_ui_port,
            )
            started.append(temporal)
            print(f"Temporal  {temporal.address}  (namespace {temporal.namespace})")
            print(f"Web UI    {temporal.ui_url}")
            if nats_port is not None:
                nats = start_nats(state_dir, port=nats_port, monitor_port=args.nats_monitor_port)
                started.append(nats)
                print(f"NATS      {nats.url}  (JetStream, monitoring {nats.monitor_url})")
        except EmbeddedError as exc:
            return error(exc)
        print(f"state in {state_dir.resolve()}; Ctrl-C stops everything")
        print("next: python -m worker --config ...  and  python -m starter --service NAME")
        stop.wait()
        print("stopping...")
        return EXIT_OK
    finally:
        for process in reversed(started):
            process.stop()
