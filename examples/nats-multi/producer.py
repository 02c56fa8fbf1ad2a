"""Load generator for the nats-multi example: a steady baseline with periodic bursts.

Publishes to a JetStream subject at `--rate` msg/s, switching to `--burst-rate` for
`--burst-seconds` at the end of every `--burst-every` seconds, so an autoscaler sees both a
steady state it should settle in and a spike it must react to. Every flag can also be set by an
environment variable (shown in `--help`) so the same script runs unchanged under compose.

The schedule and its pacing (Schedule, add_load_arguments, pace) know nothing of NATS:
examples/redis-streams/producer.py drives the same load into a Redis stream with them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.js import JetStreamContext

# Ticks per second of the pacing loop. 20 Hz keeps batches small (5 messages at 100 msg/s,
# 25 at 500 msg/s), so the load is smooth at the scale a consumer sees it, while the loop
# itself costs next to nothing.
TICK_SECONDS = 0.05
# If the loop stalls (server slow, laptop suspended), catch up at most this much schedule
# at once; beyond it the messages are skipped and counted, instead of a flood that would look
# like a burst that was never asked for.
MAX_CATCH_UP_SECONDS = 1.0
REPORT_EVERY_SECONDS = 5.0
# Bounds the stream so a forgotten demo does not fill the disk; far longer than any backlog the
# example builds up.
STREAM_MAX_AGE_SECONDS = 3600.0


@dataclass(frozen=True)
class Schedule:
    rate: float
    burst_rate: float
    burst_seconds: float
    burst_every: float

    def in_burst(self, elapsed: float) -> bool:
        """The burst is the last `burst_seconds` of each period, so a run starts calm and the
        autoscaler has settled before the first spike arrives."""
        if self.burst_every <= 0 or self.burst_seconds <= 0:
            return False
        return elapsed % self.burst_every >= self.burst_every - self.burst_seconds

    def rate_at(self, elapsed: float) -> float:
        return self.burst_rate if self.in_burst(elapsed) else self.rate


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        sys.exit(f"producer: {name}={raw!r} is not a number")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Publish a baseline load with periodic bursts to a JetStream subject.",
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
        help="subject to publish to (env JOBS_SUBJECT)",
    )
    add_load_arguments(parser)
    return check_load_arguments(parser, parser.parse_args(argv))


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The schedule's flags (rate, bursts, duration), each with its environment variable."""
    parser.add_argument(
        "--rate",
        type=float,
        default=env_float("PRODUCER_RATE", 100.0),
        help="baseline messages per second (env PRODUCER_RATE)",
    )
    parser.add_argument(
        "--burst-rate",
        type=float,
        default=env_float("PRODUCER_BURST_RATE", 500.0),
        help="messages per second during a burst (env PRODUCER_BURST_RATE)",
    )
    parser.add_argument(
        "--burst-seconds",
        type=float,
        default=env_float("PRODUCER_BURST_SECONDS", 10.0),
        help="length of each burst (env PRODUCER_BURST_SECONDS)",
    )
    parser.add_argument(
        "--burst-every",
        type=float,
        default=env_float("PRODUCER_BURST_EVERY", 60.0),
        help="period of the bursts; 0 disables them (env PRODUCER_BURST_EVERY)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=env_float("PRODUCER_DURATION", 0.0),
        help="seconds to run; 0 runs until SIGINT/SIGTERM (env PRODUCER_DURATION)",
    )


def check_load_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.Namespace:
    for name in ("rate", "burst_rate", "burst_seconds", "burst_every", "duration"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    if args.burst_every > 0 and args.burst_seconds > args.burst_every:
        parser.error("--burst-seconds must not exceed --burst-every")
    return args


async def ensure_stream(js: JetStreamContext, stream: str, subject: str) -> None:
    """Create the stream unless it exists. The consumer does the same, and either may start
    first, so losing the creation race to the other one is not an error."""
    from nats.js.errors import BadRequestError, NotFoundError

    try:
        await js.stream_info(stream)
        return
    except NotFoundError:
        pass
    try:
        await js.add_stream(name=stream, subjects=[subject], max_age=STREAM_MAX_AGE_SECONDS)
        print(f"producer: created stream {stream} ({subject})", flush=True)
    except BadRequestError:
        # Created by the other side between our two calls (with a config that differs only in
        # detail); it exists now, which is all we need.
        await js.stream_info(stream)


# Adds `count` messages numbered from `first`; returns once the queue has taken them.
Send = Callable[[int, int], Awaitable[None]]


def stop_on_signals() -> asyncio.Event:
    """Set on SIGINT/SIGTERM, so the pacing loop ends and the connection is closed cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def pace(args: argparse.Namespace, send: Send, stop: asyncio.Event) -> None:
    """Send the schedule's load until `--duration` is up or `stop` is set, reporting every
    REPORT_EVERY_SECONDS (the demo's live view shows the latest report's phase)."""
    schedule = Schedule(args.rate, args.burst_rate, args.burst_seconds, args.burst_every)
    start = last = time.monotonic()
    due = 0.0  # messages the schedule has asked for so far (fractional)
    sent = skipped = 0
    reported_at = start
    sent_at_report = 0
    tick = 0
    try:
        while not stop.is_set():
            now = time.monotonic()
            elapsed = now - start
            if args.duration and elapsed >= args.duration:
                break
            # Integrate the schedule over the real time that passed since the last tick, so a
            # late wake-up is made up for instead of silently lowering the rate.
            rate = schedule.rate_at(elapsed)
            due += rate * (now - last)
            last = now
            backlog = int(due) - sent - skipped
            cap = max(1, int(rate * MAX_CATCH_UP_SECONDS))
            if backlog > cap:
                skipped += backlog - cap
                backlog = cap
            if backlog > 0:
                await send(sent, backlog)
                sent += backlog

            if now - reported_at >= REPORT_EVERY_SECONDS:
                window = now - reported_at
                phase = "burst" if schedule.in_burst(elapsed) else "baseline"
                print(
                    f"producer: t={elapsed:6.1f}s phase={phase:8s} target={rate:5.0f} msg/s "
                    f"actual={(sent - sent_at_report) / window:6.1f} msg/s "
                    f"sent={sent} skipped={skipped}",
                    flush=True,
                )
                reported_at = now
                sent_at_report = sent

            # Ticks sit on a fixed grid from the start, so the time spent publishing does not
            # push every later tick back.
            tick += 1
            delay = start + tick * TICK_SECONDS - time.monotonic()
            if delay < 0:
                # Fell more than a tick behind: resynchronise the grid; `due` still catches up.
                tick = int((time.monotonic() - start) / TICK_SECONDS)
                delay = 0
            # Sleep until the next tick, but wake at once on SIGINT/SIGTERM.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
    finally:
        print(f"producer: stopping after {sent} messages ({skipped} skipped)", flush=True)


async def run(args: argparse.Namespace) -> int:
    import nats

    stop = stop_on_signals()
    nc = await nats.connect(args.url, name="docktor-example-producer")
    js = nc.jetstream()
    await ensure_stream(js, args.stream, args.subject)

    async def send(first: int, count: int) -> None:
        futures = [
            await js.publish_async(
                args.subject, json.dumps({"n": first + i, "ts": time.time()}).encode()
            )
            for i in range(count)
        ]
        # Wait for this batch's acks so a stream that refuses messages shows up here rather
        # than as an ever-growing pile of pending futures.
        await asyncio.gather(*futures)

    try:
        await pace(args, send, stop)
    finally:
        await nc.drain()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
