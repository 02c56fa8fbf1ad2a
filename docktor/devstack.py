"""`docktor dev`: the embedded stack for local work, until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from urllib.parse import urlparse

from docktor.config import DocktorConfig, load_config
from docktor.embedded import (
    EmbeddedError,
    ManagedProcess,
    start_nats,
    start_redis,
    start_temporal,
)

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# The port a queue URL without one means, per queue kind the embedded stack can start.
DEFAULT_QUEUE_PORTS = {"nats": 4222, "redis": 6379}


def local_queue_port(config: DocktorConfig, kind: str) -> int | None:
    """The port of the first `kind` server (nats, redis) the config expects on this machine."""
    for service in config.services:
        if service.queue is not None and service.queue.kind == kind:
            url = urlparse(str(getattr(service.queue, "url", "")))
            if url.hostname in LOCAL_HOSTS:
                return url.port or DEFAULT_QUEUE_PORTS[kind]
    return None


def local_nats_port(config: DocktorConfig) -> int | None:
    """The port of the first NATS server the config expects on this machine, if any."""
    return local_queue_port(config, "nats")


def temporal_port(config: DocktorConfig) -> int:
    return int(config.temporal.address.rsplit(":", 1)[-1])


def run_dev(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    state_dir = Path(args.state_dir or config.state_dir)
    nats_port = args.nats_port or local_nats_port(config)
    redis_port = getattr(args, "redis_port", None) or local_queue_port(config, "redis")
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
            if redis_port is not None:
                redis = start_redis(state_dir, port=redis_port)
                started.append(redis)
                print(f"Redis     {redis.url}  (no persistence)")
        except EmbeddedError as exc:
            print(f"error: {exc}")
            return 1
        print(f"state in {state_dir.resolve()}; Ctrl-C stops everything")
        print("next: python -m worker --config ...  and  python -m starter --service NAME")
        stop.wait()
        print("stopping...")
        return 0
    finally:
        for process in reversed(started):
            process.stop()
