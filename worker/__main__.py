"""`python -m worker`: serve the ServiceAutoscaler workflow and its activities.

Runs until SIGINT or SIGTERM, then stops polling, lets running activities finish, closes the
pooled metric connections and exits (0 after SIGTERM, 130 after Ctrl-C, as every entry point).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from activities import LoopActivities
from docktor.client.temporal import (
    TemporalUnreachable,
    connect,
    ensure_search_attributes,
    resolve,
)
from docktor.dev.embedded import free_port
from docktor.exits import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    error,
    interrupted,
    leave,
    read_config,
    report_config_error,
)
from docktor.loop.authority import WorkerConfig
from docktor.loop.worker import build_worker
from docktor.spec import ConfigError, DocktorConfig, default_config_path
from docktor.telemetry import MetricsServer
from worker.health import HealthServer, PortUnavailable, polling

log = logging.getLogger("docktor.worker")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description="Run the docktor worker: one scaling loop per service started by the starter.",
    )
    parser.add_argument(
        "--config",
        default=None,
        help=f"docktor.yaml to read (default: $DOCKTOR_CONFIG or {default_config_path()})",
    )
    parser.add_argument(
        "--address", default=None, help="Temporal address (default: config, or $TEMPORAL_ADDRESS)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics (docktor's and the Temporal SDK's) on this port "
        "(default: off)",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address for --metrics-port (default: 127.0.0.1; 0.0.0.0 for a remote Prometheus)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="serve /healthz (the process runs) and /readyz (connected to Temporal and polling "
        "its task queue) on this port (default: off)",
    )
    parser.add_argument(
        "--health-host",
        default="127.0.0.1",
        help="address for --health-port (default: 127.0.0.1; 0.0.0.0 for a probe from outside "
        "the host or container)",
    )
    return parser.parse_args(argv)


class LLMRequired(Exception):
    """llm.required is set and the model cannot be reached: refuse to start."""


async def check_llm_at_start(config: DocktorConfig) -> None:
    """One look at the model server before serving. Unreachable: the loops run on rules and
    record a fallback, unless llm.required says the model is not optional."""
    if config.llm.provider == "none":
        return
    from docktor.advisor import api_key_for, check_llm

    api_key_for(config.llm)  # a missing OPENAI_API_KEY is a configuration error (exit 2)
    problem = await check_llm(config.llm)
    if problem is None:
        log.info(
            "LLM ready: %s %s at %s", config.llm.provider, config.llm.model, config.llm.base_url
        )
    elif config.llm.required:
        raise LLMRequired(f"{problem} (llm.required is true)")
    else:
        log.warning("LLM not available (%s); deciding by rules and recording the fallback", problem)


def sdk_runtime(metrics_port: int | None = None) -> Runtime:
    """The SDK's runtime for this process: its core's log lines (warnings such as a poll that
    keeps failing) go through Python logging, in the worker's one format and without the
    terminal colours the core writes itself; with `metrics_port`, its metrics on that loopback
    port. Must be made the default before anything creates the SDK's own default Runtime."""
    core_logs = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(
            logger=logging.getLogger("temporalio.core"), prepend_target_on_message=False
        ),
    )
    metrics = PrometheusConfig(bind_address=f"127.0.0.1:{metrics_port}") if metrics_port else None
    runtime = Runtime(telemetry=TelemetryConfig(logging=core_logs, metrics=metrics))
    # The default Runtime is what docktor.client.temporal.connect's Client uses, and so the Worker.
    Runtime.set_default(runtime, error_if_already_set=True)
    return runtime


class MetricsPortUnavailable(Exception):
    """--metrics-port cannot be bound (taken, or not ours to use)."""


def start_metrics(host: str, port: int) -> MetricsServer:
    """docktor's figures plus the Temporal SDK's on one endpoint.

    The SDK's core serves its own metrics only through a Runtime made before the client
    connects; it listens on a private loopback port and the endpoint appends what it serves.
    Must run before anything in this process creates the SDK's default Runtime.
    """
    sdk_port = free_port()
    sdk_runtime(sdk_port)
    try:
        server = MetricsServer(host, port, extra_urls=[f"http://127.0.0.1:{sdk_port}/metrics"])
    except OSError as exc:
        raise MetricsPortUnavailable(
            f"cannot serve metrics on {host}:{port} ({exc.strerror or exc})"
        ) from None
    server.start()
    log.info("Prometheus metrics on %s", server.url)
    return server


async def serve(
    config: DocktorConfig,
    address: str | None,
    metrics: tuple[str, int] | None = None,
    config_path: str | Path | None = None,
    health: tuple[str, int] | None = None,
) -> int:
    """Serve until SIGINT or SIGTERM; returns the signal that stopped the worker. The loops run
    what `config` says (re-read from `config_path` when that file changes), and nothing else.
    With `health`, the probes answer from the start: /readyz says 503 until the worker polls."""
    health_server = HealthServer(*health).start() if health else None
    metrics_server: MetricsServer | None = None
    try:
        await check_llm_at_start(config)
        if metrics:
            metrics_server = start_metrics(*metrics)
        else:
            sdk_runtime()
        return await _serve(config, address, config_path, health_server)
    finally:
        if metrics_server is not None:
            metrics_server.stop()
        if health_server is not None:
            health_server.stop()


async def _serve(
    config: DocktorConfig,
    address: str | None,
    config_path: str | Path | None,
    health: HealthServer | None = None,
) -> int:
    client = await connect(config, address)
    try:
        added = await ensure_search_attributes(client)
        if added:
            log.info("registered search attributes: %s", ", ".join(added))
    except Exception as exc:  # a namespace we may not administer: run without them
        log.warning("could not register search attributes (%s); continuing", exc)
    loop_activities = LoopActivities(WorkerConfig(config, config_path))
    worker = build_worker(
        client,
        config.temporal.task_queue,
        loop_activities.all(),
        graceful_shutdown_timeout=_grace(config),
    )
    stop = asyncio.Event()
    stopped_by: list[int] = []

    def on_signal(sig: int) -> None:
        stopped_by.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, on_signal, sig)
    log.info(
        "worker serving task queue '%s' on %s for project '%s': services %s",
        config.temporal.task_queue,
        resolve(config, address).describe(),
        config.project,
        ", ".join(config.service_names()),
    )
    async with worker:
        if health is not None:
            health.ready_when(lambda: polling(client, config.temporal.task_queue))
        await stop.wait()
        if health is not None:
            health.not_ready()
        log.info("shutting down: finishing running activities")
    await loop_activities.close()
    log.info("worker stopped")
    return stopped_by[0]


def _grace(config: DocktorConfig):
    from datetime import timedelta

    longest = max(s.stop_grace_period for s in config.services)
    return timedelta(seconds=longest + 5)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("DOCKTOR_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    args = parse_args(argv)
    try:
        config = read_config(args.config)
    except ConfigError as exc:
        return report_config_error(exc)
    try:
        metrics = (args.metrics_host, args.metrics_port) if args.metrics_port else None
        config_path = args.config or default_config_path()
        health = (args.health_host, args.health_port) if args.health_port else None
        stopped_by = asyncio.run(serve(config, args.address, metrics, config_path, health))
    except KeyboardInterrupt:  # Ctrl-C before serving began (connecting, checking the model)
        return interrupted()
    except ConfigError as exc:
        return report_config_error(exc)
    except LLMRequired as exc:
        return error(exc, EXIT_USAGE)
    except (TemporalUnreachable, MetricsPortUnavailable, PortUnavailable) as exc:
        return error(exc)
    return EXIT_INTERRUPTED if stopped_by == signal.SIGINT else EXIT_OK


if __name__ == "__main__":
    leave(main())
