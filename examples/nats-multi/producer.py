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
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
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
# A batch the queue has not confirmed within this long is given up: its server may have died
# with it unanswered, and a confirmation that never comes must not stall the load for good.
SEND_TIMEOUT_SECONDS = 5.0
# Between reconnect attempts while NATS is away; the producer keeps trying until stopped.
RECONNECT_WAIT_SECONDS = 2.0
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


T = TypeVar("T")

# Adds `count` messages numbered from `first`; returns once the queue has taken them, raises
# SendFailed when it did not.
Send = Callable[[int, int], Awaitable[None]]


class SendFailed(Exception):
    """The queue did not take a batch (server away, refused it): the load goes on without it."""


def problem(exc: BaseException) -> str:
    """An error as one line: its type and message (the message may be empty or span lines)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def unless_stopped(
    work: Awaitable[T], stop: asyncio.Event, timeout: float | None = None
) -> asyncio.Future[T] | None:
    """Run `work` until it finishes (the finished future, holding its result or exception), or
    until `stop` is set or `timeout` passes (None, `work` cancelled): SIGTERM is never stuck
    behind a server that does not answer."""
    running = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({running, stopping}, timeout=timeout, return_when=FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if running.done():
        return running
    running.cancel()
    # Let it clean up (release what it holds), but never wait on it for long.
    await asyncio.wait({running}, timeout=1.0)
    return None


async def attempt(batch: Awaitable[None], stop: asyncio.Event) -> str | None:
    """Run one send; None once the queue confirmed it, else why it did not."""
    done = await unless_stopped(batch, stop, SEND_TIMEOUT_SECONDS)
    if done is None:
        return "stopped" if stop.is_set() else f"no answer within {SEND_TIMEOUT_SECONDS:g}s"
    error = done.exception()
    if error is None:
        return None
    if isinstance(error, SendFailed):
        return str(error)
    raise error


def stop_on_signals() -> asyncio.Event:
    """Set on SIGINT/SIGTERM, so the pacing loop ends and the connection is closed cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def pace(args: argparse.Namespace, send: Send, stop: asyncio.Event) -> None:
    """Send the schedule's load until `--duration` is up or `stop` is set, reporting every
    REPORT_EVERY_SECONDS (the demo's live view shows the latest report's phase).

    A batch the queue does not take is counted as failed and not sent again (the schedule goes
    on; replaying an outage's worth at once would be a burst nobody asked for), with one line
    when sending starts failing and one when it works again."""
    schedule = Schedule(args.rate, args.burst_rate, args.burst_seconds, args.burst_every)
    start = last = time.monotonic()
    due = 0.0  # messages the schedule has asked for so far (fractional)
    sent = skipped = failed = 0
    failing_since: float | None = None  # when the current run of failed batches began
    failed_at_first = 0
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
            backlog = int(due) - sent - skipped - failed
            cap = max(1, int(rate * MAX_CATCH_UP_SECONDS))
            if backlog > cap:
                skipped += backlog - cap
                backlog = cap
            if backlog > 0:
                why = await attempt(send(sent + failed, backlog), stop)
                if why is None:
                    sent += backlog
                    if failing_since is not None:
                        print(
                            f"producer: sending again after {now - failing_since:.1f}s "
                            f"({failed - failed_at_first} messages failed)",
                            flush=True,
                        )
                        failing_since = None
                else:
                    failed += backlog
                    if failing_since is None and not stop.is_set():
                        print(f"producer: cannot send ({why}); going on", flush=True)
                        failing_since, failed_at_first = now, failed - backlog

            if now - reported_at >= REPORT_EVERY_SECONDS:
                window = now - reported_at
                phase = "burst" if schedule.in_burst(elapsed) else "baseline"
                print(
                    f"producer: t={elapsed:6.1f}s phase={phase:8s} target={rate:5.0f} msg/s "
                    f"actual={(sent - sent_at_report) / window:6.1f} msg/s "
                    f"sent={sent} skipped={skipped} failed={failed}",
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
        print(
            f"producer: stopping after {sent} messages ({skipped} skipped, {failed} failed)",
            flush=True,
        )


async def connect(url: str, stop: asyncio.Event) -> NATS:
    """A connection that reconnects for as long as the producer runs, reporting each problem
    in one line (the client's default error callback logs a traceback per failed attempt, and
    gives up after 60 of them)."""
    import nats

    async def on_error(exc: Exception) -> None:
        print(f"producer: nats: {problem(exc)}", flush=True)

    async def on_disconnect() -> None:
        if not stop.is_set():  # closing at the end disconnects too: not worth a line
            print(f"producer: disconnected from {url}; reconnecting", flush=True)

    async def on_reconnect() -> None:
        print(f"producer: reconnected to {url}", flush=True)

    return await nats.connect(
        url,
        name="docktor-example-producer",
        max_reconnect_attempts=-1,
        reconnect_time_wait=RECONNECT_WAIT_SECONDS,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )


async def close(nc: NATS) -> None:
    """Close at once. Not drain(): while the server is away it refuses or waits up to 30 s, and
    a producer asked to stop must stop; batches not confirmed by now are counted as failed."""
    from nats.errors import Error as NatsError

    with contextlib.suppress(NatsError, OSError):
        await nc.close()


async def run(args: argparse.Namespace) -> int:
    from nats.errors import Error as NatsError
    from nats.js.errors import NoStreamResponseError

    stop = stop_on_signals()
    # Started before NATS is up (or during an outage), the first connect retries until it is
    # there, as later reconnects do; only a stop ends the wait.
    connected = await unless_stopped(connect(args.url, stop), stop)
    if connected is None:
        print(f"producer: stopped before {args.url} could be reached", flush=True)
        return 0
    try:
        nc = connected.result()
    except (NatsError, OSError) as exc:
        print(f"producer: cannot reach {args.url}: {problem(exc)}", flush=True)
        return 1
    js = nc.jetstream()

    async def send(first: int, count: int) -> None:
        if not nc.is_connected:
            # The client would buffer the batch and deliver it after the reconnect, piling an
            # outage's worth of stale load on top of the schedule.
            raise SendFailed("not connected to NATS")
        futures: list[asyncio.Future[object]] = []
        try:
            for i in range(count):
                body = json.dumps({"n": first + i, "ts": time.time()}).encode()
                futures.append(await js.publish_async(args.subject, body))
            # Wait for this batch's acks so a stream that refuses messages shows up here rather
            # than as an ever-growing pile of pending futures.
            await asyncio.gather(*futures)
        except NoStreamResponseError as exc:
            # No stream takes the subject: a server restarted without its store (or JetStream
            # not up yet). Create it again for the next batch.
            with contextlib.suppress(NatsError, OSError):
                await ensure_stream(js, args.stream, args.subject)
            raise SendFailed(problem(exc)) from exc
        except (NatsError, OSError) as exc:
            raise SendFailed(problem(exc)) from exc
        finally:
            # An ack that never comes (its server died with the batch) would hold one of the
            # client's 4000 publish slots forever: cancelling frees it.
            for future in futures:
                future.cancel()

    try:
        await ensure_stream(js, args.stream, args.subject)
        await pace(args, send, stop)
    finally:
        await close(nc)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
