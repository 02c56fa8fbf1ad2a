"""One worker replica of the rabbitmq example: consumes jobs from a RabbitMQ queue and
"processes" them.

Each message costs `--work-ms` of simulated work, so one replica handles about 1000 / work_ms
messages per second (50/s at the default 20 ms), as in examples/nats-multi. docktor starts and
stops copies of this script; they all consume the one queue, so the broker spreads the messages
between them, at most `--prefetch` unacknowledged at a time each, and each acknowledges a
message once it is done with it (a replica that dies leaves its unacknowledged messages to the
broker, which hands them to another replica, marked redelivered).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

# Messages the broker hands a replica before it acknowledges any. Small, so a replica never
# hoards work idle replicas could do; 10 x 20 ms is 0.2 s of work.
DEFAULT_PREFETCH = 10
# As the producer declares it: both may start first, and RabbitMQ refuses a second declaration
# whose arguments differ.
QUEUE_ARGUMENTS = {"x-max-length": 100_000}
REPORT_EVERY_SECONDS = 5.0
# aio-pika's robust connection reconnects after this pause while the broker is away, for as
# long as the replica runs: one that gave up would have to be restarted by hand.
RECONNECT_SECONDS = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Consume jobs from a RabbitMQ queue, simulate work on each and acknowledge it.",
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
        help="queue shared by all replicas, declared durable if missing (env JOBS_QUEUE)",
    )
    parser.add_argument(
        "--work-ms",
        type=float,
        default=float(os.environ.get("WORK_MS", "20")),
        help="simulated processing time per message in ms (env WORK_MS)",
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        default=int(os.environ.get("PREFETCH", str(DEFAULT_PREFETCH))),
        help="unacknowledged messages the broker hands this replica at most (env PREFETCH)",
    )
    args = parser.parse_args(argv)
    if args.work_ms < 0:
        parser.error("--work-ms must not be negative")
    if args.prefetch < 1:
        parser.error("--prefetch must be at least 1")
    return args


class Replica:
    def __init__(self, args: argparse.Namespace, log: str) -> None:
        self.work_seconds = args.work_ms / 1000.0
        self.log = log
        self.done = 0
        # One message worked at a time, in the order the broker sent them; the rest of the
        # prefetch waits here, unacknowledged.
        self.inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def receive(self, message: AbstractIncomingMessage) -> None:
        await self.inbox.put(message)

    async def work(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            getting = asyncio.ensure_future(self.inbox.get())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not getting.done():
                getting.cancel()
                return
            message = getting.result()
            await asyncio.sleep(self.work_seconds)  # stands in for real work
            try:
                await message.ack()
                self.done += 1
            except Exception as exc:  # the channel went away with the broker: redelivered later
                print(f"{self.log} ack lost ({type(exc).__name__}); redelivered later", flush=True)

    async def hand_back(self) -> None:
        """Messages received but not started go back to the queue at once (a stopping replica
        need not sit on them until its channel closes)."""
        while not self.inbox.empty():
            message = self.inbox.get_nowait()
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)


async def run(args: argparse.Namespace) -> int:
    log = f"[consumer {os.environ.get('DOCKTOR_REPLICA', '0')}]"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    replica = Replica(args, log)
    connection = None
    while connection is None and not stop.is_set():
        try:
            connection = await aio_pika.connect_robust(
                args.url,
                reconnect_interval=RECONNECT_SECONDS,
                client_properties={"connection_name": f"docktor-example-consumer{log}"},
            )
        except (OSError, aio_pika.exceptions.AMQPError) as exc:
            print(f"{log} rabbitmq: {type(exc).__name__}: {exc}; retrying", flush=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), RECONNECT_SECONDS)
    if connection is None:
        return 0

    def lost(*_: object) -> None:
        print(f"{log} rabbitmq: connection lost; reconnecting", flush=True)

    def back(*_: object) -> None:
        print(f"{log} rabbitmq: reconnected", flush=True)

    connection.close_callbacks.add(lost)
    connection.reconnect_callbacks.add(back)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=args.prefetch)
        queue = await channel.declare_queue(args.queue, durable=True, arguments=QUEUE_ARGUMENTS)
        tag = await queue.consume(replica.receive)
        print(
            f"{log} consuming {args.queue} with prefetch {args.prefetch}, "
            f"{args.work_ms:g} ms/message",
            flush=True,
        )
        worker = asyncio.create_task(replica.work(stop))
        reported_at, done_at_report = time.monotonic(), 0
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), REPORT_EVERY_SECONDS)
            now = time.monotonic()
            rate = (replica.done - done_at_report) / (now - reported_at)
            print(f"{log} processed {replica.done} ({rate:.1f} msg/s)", flush=True)
            reported_at, done_at_report = now, replica.done
        # Stop: no new deliveries, the message in hand finished, the rest handed back.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(queue.cancel(tag), RECONNECT_SECONDS)
        await worker
        await replica.hand_back()
    finally:
        connection.close_callbacks.discard(lost)  # this close is no loss
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), RECONNECT_SECONDS)
        print(f"{log} stopped after {replica.done} messages", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
