"""Load generator for the redis-streams example: a steady baseline with periodic bursts.

Adds entries to a Redis stream at `--rate` entries/s, switching to `--burst-rate` for
`--burst-seconds` at the end of every `--burst-every` seconds, the same schedule as
examples/nats-multi/producer.py, so either queue sees the same load. Every flag can also be set
by an environment variable (shown in `--help`).
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
from dataclasses import dataclass

import redis.asyncio as redis

# Ticks per second of the pacing loop: small batches, so the load is smooth at the scale a
# consumer sees it (5 entries a tick at 100/s, 25 at 500/s).
TICK_SECONDS = 0.05
# A stalled loop catches up at most this much schedule at once; the rest is skipped and
# counted, so a stall does not turn into a burst nobody asked for.
MAX_CATCH_UP_SECONDS = 1.0
REPORT_EVERY_SECONDS = 5.0
# Bounds the stream (approximate trim, cheap for Redis) so a forgotten demo does not fill
# memory; far longer than any backlog the example builds up, so no unread entry is trimmed.
STREAM_MAX_LENGTH = 100_000


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
        description="Add a baseline load with periodic bursts to a Redis stream.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis server URL (env REDIS_URL)",
    )
    parser.add_argument(
        "--stream",
        default=os.environ.get("JOBS_STREAM", "jobs"),
        help="stream key, created by the first entry (env JOBS_STREAM)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=env_float("PRODUCER_RATE", 100.0),
        help="baseline entries per second (env PRODUCER_RATE)",
    )
    parser.add_argument(
        "--burst-rate",
        type=float,
        default=env_float("PRODUCER_BURST_RATE", 500.0),
        help="entries per second during a burst (env PRODUCER_BURST_RATE)",
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
    args = parser.parse_args(argv)
    for name in ("rate", "burst_rate", "burst_seconds", "burst_every", "duration"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    if args.burst_every > 0 and args.burst_seconds > args.burst_every:
        parser.error("--burst-seconds must not exceed --burst-every")
    return args


async def add_batch(client: redis.Redis, stream: str, first: int, count: int) -> None:
    """`count` entries in one round trip (a pipeline without MULTI: order is kept, and a
    failure surfaces here rather than as entries silently missing)."""
    pipe = client.pipeline(transaction=False)
    for index in range(first, first + count):
        body = json.dumps({"n": index, "ts": time.time()})
        pipe.xadd(stream, {"job": body}, maxlen=STREAM_MAX_LENGTH, approximate=True)
    await pipe.execute()


async def run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    client = redis.Redis.from_url(args.url, client_name="docktor-example-producer")
    schedule = Schedule(args.rate, args.burst_rate, args.burst_seconds, args.burst_every)
    start = last = time.monotonic()
    due = 0.0  # entries the schedule has asked for so far (fractional)
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
            # Integrate the schedule over the real time since the last tick, so a late wake-up
            # is made up for instead of silently lowering the rate.
            rate = schedule.rate_at(elapsed)
            due += rate * (now - last)
            last = now
            backlog = int(due) - sent - skipped
            cap = max(1, int(rate * MAX_CATCH_UP_SECONDS))
            if backlog > cap:
                skipped += backlog - cap
                backlog = cap
            if backlog > 0:
                await add_batch(client, args.stream, sent, backlog)
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

            # Ticks sit on a fixed grid from the start, so time spent adding does not push
            # every later tick back.
            tick += 1
            delay = start + tick * TICK_SECONDS - time.monotonic()
            if delay < 0:
                tick = int((time.monotonic() - start) / TICK_SECONDS)
                delay = 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
    finally:
        print(f"producer: stopping after {sent} entries ({skipped} skipped)", flush=True)
        await client.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (OSError, redis.ConnectionError) as exc:
        print(f"producer: cannot reach {args.url}: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
