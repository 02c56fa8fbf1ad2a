"""`docktor dev`: the embedded stack for local work, until Ctrl-C.

Ctrl-C (or SIGTERM) stops the servers and then the replicas the `processes` backend runs for
the config's services: they are local processes started for this stack, and left behind they
would retry a broker (NATS, Redis, RabbitMQ) that is gone for ever. Compose and Swarm replicas
are the engine's to keep (`docktor down --replicas` stops those).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

from docktor.backends.base import ScalerConfigError, ScalerUnavailable
from docktor.dev.embedded import (
    EmbeddedError,
    EmbeddedTemporal,
    ManagedProcess,
    start_nats,
    start_rabbitmq,
    start_redis,
    start_temporal,
)
from docktor.exits import EXIT_OK, error, read_config
from docktor.plan import ServicePlan
from docktor.spec import DocktorConfig, ServiceSpec

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# The port a queue URL without one means, per queue kind the embedded stack can start.
DEFAULT_QUEUE_PORTS = {"nats": 4222, "redis": 6379, "rabbitmq": 5672}
# Where a running `docktor dev` says where its Web UI is, in the config's state_dir, so the
# starter links to it whatever port it took.
UI_FILE = "dev-web-ui.json"


def local_queue_port(config: DocktorConfig, kind: str) -> int | None:
    """The port of the first `kind` server (nats, redis) the config expects on this machine."""
    for service in config.services:
        if service.queue is not None and service.queue.kind == kind:
            url = urlparse(str(getattr(service.queue, "url", "")))
            if url.hostname in LOCAL_HOSTS:
                return url.port or DEFAULT_QUEUE_PORTS[kind]
    return None


def local_management_port(config: DocktorConfig) -> int | None:
    """The management API port of the first local RabbitMQ queue (None: the broker's default,
    15672, unless it is taken)."""
    for service in config.services:
        if service.queue is not None and service.queue.kind == "rabbitmq":
            url = urlparse(str(getattr(service.queue, "management_url", None) or ""))
            if url.hostname in LOCAL_HOSTS:
                return url.port or 15672
            return None
    return None


def local_nats_port(config: DocktorConfig) -> int | None:
    """The port of the first NATS server the config expects on this machine, if any."""
    return local_queue_port(config, "nats")


def temporal_port(config: DocktorConfig) -> int:
    return int(config.temporal.address.rsplit(":", 1)[-1])


async def stop_local_replicas(config: DocktorConfig) -> list[str]:
    """Stop every replica of the config's `processes` services (found by their pid files in
    the config's state_dir); one line per service that had some, or that failed."""
    from docktor.backends.processes import ProcessScaler

    async def stop(spec: ServiceSpec) -> str | None:
        scaler = ProcessScaler(ServicePlan.from_spec(spec), project=config.project or "")
        if not scaler.state_dir.is_dir():
            return None  # never ran here (and stop_all would create the folder)
        try:
            stopped = await scaler.stop_all()
        except (ScalerConfigError, ScalerUnavailable, OSError) as exc:
            return f"error: cannot stop the replicas of {spec.name}: {exc}"
        if not stopped:
            return None
        return f"stopped {stopped} replica{'s' if stopped != 1 else ''} of {spec.name}"

    services = [s for s in config.services if s.backend == "processes"]
    lines = await asyncio.gather(*(stop(spec) for spec in services))
    return [line for line in lines if line]


def record_ui(state_dir: Path, temporal: EmbeddedTemporal) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / UI_FILE
    path.write_text(json.dumps({"address": temporal.address, "ui_url": temporal.ui_url}))
    return path


def recorded_ui_url(config: DocktorConfig, address: str | None = None) -> str | None:
    """The Web UI of the `docktor dev` serving this config's Temporal, when one runs."""
    try:
        recorded = json.loads((Path(config.state_dir) / UI_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or recorded.get("address") != (
        address or config.temporal.address
    ):
        return None
    url = recorded.get("ui_url")
    return url if isinstance(url, str) else None


def next_steps(args: argparse.Namespace, config: DocktorConfig, address: str) -> list[str]:
    """The commands that use this stack, as they would be typed."""
    options = ["--config", args.config] if args.config else []
    if address != config.temporal.address:
        options += ["--address", address]
    where = f" {shlex.join(options)}" if options else ""
    services = config.service_names()
    service = f"--service {shlex.quote(services[0])}" if len(services) == 1 else "--all"
    return [f"python -m worker{where}", f"python -m starter {service}{where}"]


def run_dev(args: argparse.Namespace) -> int:
    config = read_config(args.config)
    state_dir = Path(args.state_dir or config.state_dir)
    nats_port = args.nats_port or local_nats_port(config)
    redis_port = getattr(args, "redis_port", None) or local_queue_port(config, "redis")
    rabbitmq_port = getattr(args, "rabbitmq_port", None) or local_queue_port(config, "rabbitmq")
    started: list[ManagedProcess] = []
    ui_file: Path | None = None
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
            if rabbitmq_port is not None:
                rabbitmq = start_rabbitmq(
                    state_dir,
                    port=rabbitmq_port,
                    management_port=local_management_port(config) or 15672,
                )
                started.append(rabbitmq)
                print(f"RabbitMQ  {rabbitmq.url}  (management {rabbitmq.management_url})")
        except EmbeddedError as exc:
            return error(exc)
        ui_file = record_ui(Path(config.state_dir), temporal)
        print("next, in other terminals:")
        for command in next_steps(args, config, temporal.address):
            print(f"  {command}")
        print(f"state in {state_dir.resolve()}; Ctrl-C stops everything")
        stop.wait()
        print("stopping...")
        return EXIT_OK
    finally:
        if ui_file is not None:
            ui_file.unlink(missing_ok=True)
        for process in reversed(started):
            process.stop()
        # After Temporal: with the servers gone no loop can start a replica again.
        if started:
            for line in asyncio.run(stop_local_replicas(config)):
                print(line, file=sys.stderr if line.startswith("error:") else sys.stdout)
