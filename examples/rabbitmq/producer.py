"""Load generator for the rabbitmq example: a steady baseline with periodic bursts, published to
a RabbitMQ queue.

The load is examples/nats-multi's, to the message: `--rate` messages/s, `--burst-rate` for
`--burst-seconds` at the end of every `--burst-every` seconds (its Schedule and pacing loop are
loaded from ../nats-multi/producer.py, so every example's queue sees the same load). Messages go
to the default exchange with the queue's name as routing key, persistent, on a channel in
publisher-confirm mode: a message counts as sent once the broker has taken it. Every flag can
also be set by an environment variable (see `--help`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import aio_pika
from aio_pika.exceptions import AMQPError

# The queue's bound, for a forgotten demo: far longer than any backlog the example builds up,
# so no unread message is dropped. The consumer declares the queue the same way.
QUEUE_ARGUMENTS = {"x-max-length": 100_000}


def load_generator() -> ModuleType:
    """nats-multi's producer.py as a module (by path: both files are called producer.py)."""
    path = Path(__file__).resolve().parents[1] / "nats-multi" / "producer.py"
    spec = importlib.util.spec_from_file_location("nats_multi_producer", path)
    if spec is None or spec.loader is None:
        sys.exit(f"producer: the load generator {path} is missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


load = load_generator()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Publish a baseline load with periodic bursts to a RabbitMQ queue.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("RABBITMQ_URL", "amqp://127.0.0.1:5672/"),
        help="AMQP URL of the broker (env RABBITMQ_URL)",
    )
    parser.add_argument(
        "--queue",
        default=os.environ.get("JOBS_QUEUE", "jobs"),
        help="queue name, declared durable if missing (env JOBS_QUEUE)",
    )
    load.add_load_arguments(parser)
    return load.check_load_arguments(parser, parser.parse_args(argv))


async def run(args: argparse.Namespace) -> int:
    stop = load.stop_on_signals()
    connection = await aio_pika.connect_robust(
        args.url, client_properties={"connection_name": "docktor-example-producer"}
    )
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(args.queue, durable=True, arguments=QUEUE_ARGUMENTS)
        exchange = channel.default_exchange

        async def send(first: int, count: int) -> None:
            # All of a tick's messages in flight at once; each is confirmed by the broker.
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            json.dumps({"n": index, "ts": time.time()}).encode(),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=args.queue,
                    )
                    for index in range(first, first + count)
                )
            )

        await load.pace(args, send, stop)
    finally:
        await connection.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (OSError, AMQPError) as exc:
        print(f"producer: cannot reach {args.url}: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
