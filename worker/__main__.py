"""`python -m worker`: serve the ServiceAutoscaler workflow and its activities.

Runs until SIGINT or SIGTERM, then stops polling, lets running activities finish, closes the
pooled metric connections and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from temporalio.worker import Worker

from activities import LoopActivities
from docktor.client import TemporalUnreachable, connect, ensure_search_attributes
from docktor.config import ConfigError, DocktorConfig, default_config_path, load_config
from workflows import ServiceAutoscaler

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
    return parser.parse_args(argv)


async def serve(config: DocktorConfig, address: str | None) -> None:
    client = await connect(config, address)
    try:
        added = await ensure_search_attributes(client)
        if added:
            log.info("registered search attributes: %s", ", ".join(added))
    except Exception as exc:  # a namespace we may not administer: run without them
        log.warning("could not register search attributes (%s); continuing", exc)
    loop_activities = LoopActivities()
    worker = Worker(
        client,
        task_queue=config.temporal.task_queue,
        workflows=[ServiceAutoscaler],
        activities=[
            loop_activities.observe,
            loop_activities.evaluate,
            loop_activities.apply,
            loop_activities.record,
        ],
        graceful_shutdown_timeout=_grace(config),
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    log.info(
        "worker serving task queue '%s' on %s (namespace %s) for project '%s': services %s",
        config.temporal.task_queue,
        address or config.temporal.address,
        config.temporal.namespace,
        config.project,
        ", ".join(config.service_names()),
    )
    async with worker:
        await stop.wait()
        log.info("shutting down: finishing running activities")
    await loop_activities.close()
    log.info("worker stopped")


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
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config, args.address))
    except TemporalUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # temporalio/sdk-python#300: a process that ran a workflow worker can abort at interpreter
    # exit; everything is already shut down here, so leave without the finaliser.
    os._exit(code)
