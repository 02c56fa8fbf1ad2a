"""One worker replica of the redis-streams example: reads jobs through a consumer group and
"processes" them.

Each entry costs `--work-ms` of simulated work, so one replica handles about 1000 / work_ms
entries per second (50/s at the default 20 ms), as in examples/nats-multi. docktor starts and
stops copies of this script; they share one consumer group, so Redis spreads the entries
between them (XREADGROUP ... >), and each acknowledges what it finished (XACK).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Entries read per XREADGROUP. Small, so a replica never hoards work idle replicas could do;
# 10 x 20 ms is 0.2 s of work, which a stopping replica finishes before it leaves.
DEFAULT_BATCH = 10
# How long a read blocks for new entries: short, so a stop request is noticed within a second.
BLOCK_MS = 1000
# An entry another consumer has held unacknowledged this long belongs to a replica that died:
# it is claimed (XAUTOCLAIM) and worked again, as JetStream redelivers after ack_wait. Far above
# the ~0.2 s a batch takes, so a busy replica never has its entries taken away.
CLAIM_IDLE_MS = 30_000
CLAIM_EVERY_SECONDS = 5.0
REPORT_EVERY_SECONDS = 5.0
# Between attempts while Redis is away; a replica keeps trying until stopped, since one that
# gave up would have to be restarted by hand after an outage.
RETRY_SECONDS = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Read jobs from a Redis stream through a consumer group, simulate work on "
        "each and acknowledge it.",
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
        help="stream key (env JOBS_STREAM)",
    )
    parser.add_argument(
        "--group",
        default=os.environ.get("JOBS_GROUP", "workers"),
        help="consumer group shared by all replicas, created if missing (env JOBS_GROUP)",
    )
    parser.add_argument(
        "--name",
        default=os.environ.get("JOBS_CONSUMER", f"consumer-{os.environ.get('DOCKTOR_REPLICA', 0)}"),
        help="this replica's consumer name in the group (env JOBS_CONSUMER)",
    )
    parser.add_argument(
        "--work-ms",
        type=float,
        default=float(os.environ.get("WORK_MS", "20")),
        help="simulated processing time per entry in ms (env WORK_MS)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=int(os.environ.get("READ_BATCH", str(DEFAULT_BATCH))),
        help="entries per read (env READ_BATCH)",
    )
    args = parser.parse_args(argv)
    if args.work_ms < 0:
        parser.error("--work-ms must not be negative")
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    return args


def problem(exc: BaseException) -> str:
    """An error as one line: its type and message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def ensure_group(client: redis.Redis, stream: str, group: str, log: str) -> None:
    """Create the group (and the stream, if the producer has not yet) reading from the start,
    so nothing added before the first replica came up is skipped. Replicas start together, so
    losing the race to another one (BUSYGROUP) is expected."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
        print(f"{log} created group {group} on {stream}", flush=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def pause_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class Replica:
    def __init__(self, args: argparse.Namespace, client: redis.Redis, log: str) -> None:
        self.args = args
        self.client = client
        self.log = log
        self.work_seconds = args.work_ms / 1000.0
        self.done = 0
        # "0": first this consumer's own pending entries (a replica restarted under the same
        # name picks up what its predecessor read and never acknowledged), then ">" for new ones.
        self.next_id = "0"
        self.claimed_at = 0.0

    async def read(self) -> list[tuple[str, dict[str, str]]]:
        args = self.args
        block = None if self.next_id == "0" else BLOCK_MS
        reply = await self.client.xreadgroup(
            args.group, args.name, {args.stream: self.next_id}, count=args.batch, block=block
        )
        entries = reply[0][1] if reply else []
        if self.next_id == "0" and not entries:
            self.next_id = ">"  # its own pending list is worked off
        return entries

    async def claim_abandoned(self) -> list[tuple[str, dict[str, str]]]:
        """Entries a replica that died left unacknowledged for CLAIM_IDLE_MS, now this one's."""
        now = time.monotonic()
        if now - self.claimed_at < CLAIM_EVERY_SECONDS:
            return []
        self.claimed_at = now
        args = self.args
        reply = await self.client.xautoclaim(
            args.stream, args.group, args.name, CLAIM_IDLE_MS, "0-0", count=args.batch
        )
        # [next start id, claimed entries, ids of deleted entries (Redis >= 7)]
        return [entry for entry in reply[1] if entry[1] is not None]

    async def work(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        """The whole batch is finished even when a stop comes meanwhile (0.2 s at the
        defaults): Redis has no way to hand entries back, so an unfinished one would wait
        CLAIM_IDLE_MS for another replica."""
        for entry_id, _fields in entries:
            await asyncio.sleep(self.work_seconds)  # stands in for real work
            await self.client.xack(self.args.stream, self.args.group, entry_id)
            self.done += 1

    async def leave(self) -> None:
        """Leave the group when nothing is pending on this consumer (deleting a consumer drops
        its pending entries, so one that still holds some stays for a successor to claim): the
        group's consumer count then counts live replicas."""
        args = self.args
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError, ResponseError):
            mine = await self.client.xpending_range(
                args.stream, args.group, "-", "+", 1, consumername=args.name
            )
            if not mine:
                await self.client.xgroup_delconsumer(args.stream, args.group, args.name)


async def run(args: argparse.Namespace) -> int:
    log = f"[consumer {os.environ.get('DOCKTOR_REPLICA', '0')}]"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    client = redis.Redis.from_url(
        args.url, decode_responses=True, client_name=f"docktor-example-{args.name}"
    )
    replica = Replica(args, client, log)
    ready = False
    reported_at = time.monotonic()
    done_at_report = 0
    try:
        while not stop.is_set():
            try:
                if not ready:
                    await ensure_group(client, args.stream, args.group, log)
                    ready = True
                    print(
                        f"{log} reading {args.stream}/{args.group} as {args.name}, "
                        f"{args.work_ms:g} ms/entry",
                        flush=True,
                    )
                entries = await replica.claim_abandoned() or await replica.read()
                await replica.work(entries)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                # Redis away: one line per attempt, then again after a pause. What was read
                # and not acknowledged stays pending on this consumer and is read again ("0").
                print(f"{log} redis: {problem(exc)}; retrying", flush=True)
                replica.next_id = "0"
                await pause_unless_stopped(stop, RETRY_SECONDS)
                continue
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The stream or group was deleted under us: create them again.
                print(f"{log} {problem(exc)}; creating it again", flush=True)
                ready = False
                continue

            now = time.monotonic()
            if now - reported_at >= REPORT_EVERY_SECONDS:
                rate = (replica.done - done_at_report) / (now - reported_at)
                print(f"{log} processed {replica.done} ({rate:.1f} msg/s)", flush=True)
                reported_at, done_at_report = now, replica.done
    finally:
        await replica.leave()
        await client.aclose()
        print(f"{log} stopped after {replica.done} entries", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
