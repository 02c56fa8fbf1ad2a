"""One worker replica of the nats-multi example: pulls jobs from JetStream and "processes" them.

Each message costs `--work-ms` of simulated work, so one replica handles about
1000 / work_ms messages per second (50 msg/s at the default 20 ms) and the number of replicas
needed follows directly from the producer's rate. docktor starts and stops copies of this
script; they share one durable pull consumer, so JetStream spreads the messages between them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable
from typing import TypeVar

import nats
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError, NotFoundError

# Messages fetched per pull. Small, so a replica never hoards work that idle replicas could do
# and a stopping replica has little to hand back; 10 x 20 ms is 0.2 s of work per batch.
DEFAULT_BATCH = 10
# How long a pull waits for messages. Short, so a stop request is noticed within a second even
# when the queue is empty.
FETCH_TIMEOUT_SECONDS = 1.0
# Redelivery deadline for an unacked message: far above the ~0.2 s a batch takes, so a busy
# replica never sees its messages redelivered to another one, yet a crashed replica's messages
# come back within half a minute.
ACK_WAIT_SECONDS = 30.0
# In-flight limit for the whole consumer, shared by every replica: 10 replicas x 10 per batch is
# 100, and 1000 leaves room for more replicas or bigger batches before the server starts
# withholding messages (which would look like backlog and mislead the autoscaler).
MAX_ACK_PENDING = 1000
REPORT_EVERY_SECONDS = 5.0
# Between reconnect attempts while the server is away; the client keeps trying until stopped,
# since a replica that gave up would have to be restarted by hand after an outage.
RECONNECT_WAIT_SECONDS = 2.0
# At the end, how long to wait for the server to confirm the last acks before closing anyway.
FLUSH_TIMEOUT_SECONDS = 2.0
STREAM_MAX_AGE_SECONDS = 3600.0  # keep in step with producer.py

T = TypeVar("T")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Pull jobs from a JetStream durable consumer and simulate work on each.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        help="NATS server URL (env NATS_URL)",
    )
    parser.add_argument(
        "--stream",
        default=os.environ.get("JOBS_STREAM", "JOBS"),
        help="stream name, created if missing (env JOBS_STREAM)",
    )
    parser.add_argument(
        "--subject",
        default=os.environ.get("JOBS_SUBJECT", "jobs.work"),
        help="subject the stream holds and the consumer filters on (env JOBS_SUBJECT)",
    )
    parser.add_argument(
        "--durable",
        default=os.environ.get("JOBS_DURABLE", "workers"),
        help="durable consumer name shared by all replicas (env JOBS_DURABLE)",
    )
    parser.add_argument(
        "--work-ms",
        type=float,
        default=float(os.environ.get("WORK_MS", "20")),
        help="simulated processing time per message in ms (env WORK_MS)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=int(os.environ.get("FETCH_BATCH", str(DEFAULT_BATCH))),
        help="messages per fetch (env FETCH_BATCH)",
    )
    args = parser.parse_args(argv)
    if args.work_ms < 0:
        parser.error("--work-ms must not be negative")
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    return args


async def ensure_stream(js: JetStreamContext, stream: str, subject: str, log: str) -> None:
    """Create the stream unless it exists; the producer does the same and may win the race."""
    try:
        await js.stream_info(stream)
        return
    except NotFoundError:
        pass
    try:
        await js.add_stream(name=stream, subjects=[subject], max_age=STREAM_MAX_AGE_SECONDS)
        print(f"{log} created stream {stream} ({subject})", flush=True)
    except BadRequestError:
        await js.stream_info(stream)


async def ensure_consumer(js: JetStreamContext, stream: str, durable: str, subject: str) -> None:
    """Create the shared durable consumer unless it exists. Several replicas start at once, so
    the creation race is expected: the server accepts an identical config twice, and anything
    else that failed is settled by reading back what is there."""
    try:
        await js.consumer_info(stream, durable)
        return
    except NotFoundError:
        pass
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ACK_WAIT_SECONDS,
        max_ack_pending=MAX_ACK_PENDING,
        filter_subject=subject,
    )
    try:
        await js.add_consumer(stream, config)
    except BadRequestError:
        await js.consumer_info(stream, durable)


def problem(exc: BaseException) -> str:
    """An error as one line: its type and message (the message may be empty or span lines)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def connect(url: str, replica: str, log: str, stop: asyncio.Event) -> NATS:
    """A connection that reconnects for as long as the replica runs, reporting each problem
    in one line (the client's default error callback logs a traceback per failed attempt)."""

    async def on_error(exc: Exception) -> None:
        print(f"{log} nats: {problem(exc)}", flush=True)

    async def on_disconnect() -> None:
        if not stop.is_set():  # closing at the end disconnects too: not worth a line
            print(f"{log} disconnected from {url}; reconnecting", flush=True)

    async def on_reconnect() -> None:
        print(f"{log} reconnected to {url}", flush=True)

    return await nats.connect(
        url,
        name=f"docktor-example-consumer-{replica}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=RECONNECT_WAIT_SECONDS,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )


async def unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> asyncio.Future[T] | None:
    """Run `work` until it finishes (the finished future, holding its result or exception), or
    until `stop` is set (None, `work` cancelled)."""
    running = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if running.done():
        return running
    running.cancel()
    await asyncio.wait({running}, timeout=1.0)  # let it clean up, never for long
    return None


async def pause_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Wait a moment before trying again, but not a moment longer once asked to stop."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def close(nc: NATS, log: str) -> None:
    """Get the acks written so far to the server when it is there, then close at once.

    Not drain(): while the server is away it refuses (or waits up to its 30 s timeout), and a
    replica asked to stop must stop. An ack that does not reach the server is no loss: that
    message is redelivered after ack_wait."""
    if nc.is_connected:
        with contextlib.suppress(NatsError, asyncio.TimeoutError, OSError):
            await nc.flush(timeout=FLUSH_TIMEOUT_SECONDS)
    try:
        await nc.close()
    except (NatsError, OSError) as exc:
        # While reconnecting, the client still holds what it buffered meanwhile (acks, pull
        # requests) and close() writes it to the lost connection, which fails. Nothing is
        # lost that ack_wait does not bring back.
        print(f"{log} closed without reaching the server ({problem(exc)})", flush=True)


async def run(args: argparse.Namespace) -> int:
    replica = os.environ.get("DOCKTOR_REPLICA", "0")
    log = f"[consumer {replica}]"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    # Started during an outage (or before NATS is up), the first connect retries until NATS is
    # there, as later reconnects do; a stop ends the wait (a replica must stop when told).
    connected = await unless_stopped(connect(args.url, replica, log, stop), stop)
    if connected is None:
        print(f"{log} stopped before {args.url} could be reached", flush=True)
        return 0
    nc = connected.result()
    js = nc.jetstream()
    await ensure_stream(js, args.stream, args.subject, log)
    await ensure_consumer(js, args.stream, args.durable, args.subject)
    sub = await js.pull_subscribe_bind(durable=args.durable, stream=args.stream)
    print(f"{log} pulling from {args.stream}/{args.durable}, {args.work_ms:g} ms/msg", flush=True)

    work_seconds = args.work_ms / 1000.0
    done = handed_back = 0
    reported_at = time.monotonic()
    done_at_report = 0
    try:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(args.batch, timeout=FETCH_TIMEOUT_SECONDS)
            except TimeoutError:
                # Nothing came within the pull's timeout: an empty queue (the normal idle
                # state) or a server that is away, which the connection callbacks report. The
                # client raises its own TimeoutError or, near the deadline, asyncio's plain one.
                msgs = []
            except (NatsError, OSError) as exc:
                # The connection callbacks have reported an outage once already, so only a
                # problem on a live connection gets its own line.
                if nc.is_connected:
                    print(f"{log} fetch failed: {problem(exc)}", flush=True)
                await pause_unless_stopped(stop, FETCH_TIMEOUT_SECONDS)
                continue
            try:
                for index, msg in enumerate(msgs):
                    if stop.is_set():
                        # Stopping: hand the rest of the batch back at once, so another
                        # replica takes it now rather than after ack_wait.
                        for rest in msgs[index:]:
                            await rest.nak()
                        handed_back += len(msgs) - index
                        break
                    # Stands in for real work; the message finishes even if SIGTERM arrives now.
                    await asyncio.sleep(work_seconds)
                    await msg.ack()
                    done += 1
            except (NatsError, OSError) as exc:
                # Lost the server mid-batch: the unacked rest comes back after ack_wait.
                print(f"{log} ack failed: {problem(exc)}", flush=True)

            now = time.monotonic()
            if now - reported_at >= REPORT_EVERY_SECONDS:
                rate = (done - done_at_report) / (now - reported_at)
                print(f"{log} processed {done} ({rate:.1f} msg/s)", flush=True)
                reported_at, done_at_report = now, done
    finally:
        await close(nc, log)
        print(f"{log} stopped after {done} messages ({handed_back} handed back)", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
