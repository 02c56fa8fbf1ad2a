"""Load generator for the redis-streams example: a steady baseline with periodic bursts, added
to a Redis stream.

The load is examples/nats-multi's, to the entry: `--rate` entries/s, `--burst-rate` for
`--burst-seconds` at the end of every `--burst-every` seconds (its Schedule and pacing loop are
loaded from ../nats-multi/producer.py, so both queues see the same load and one pacing loop
is kept up to date). Every flag can also be set by an environment variable (see `--help`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import redis.asyncio as redis
from redis.exceptions import RedisError

# Bounds the stream (approximate trim, cheap for Redis) so a forgotten demo does not fill
# memory; far longer than any backlog the example builds up, so no unread entry is trimmed.
STREAM_MAX_LENGTH = 100_000


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
    load.add_load_arguments(parser)
    return load.check_load_arguments(parser, parser.parse_args(argv))


async def run(args: argparse.Namespace) -> int:
    stop = load.stop_on_signals()
    client = redis.Redis.from_url(args.url, client_name="docktor-example-producer")

    async def send(first: int, count: int) -> None:
        # One round trip per batch (a pipeline without MULTI: order is kept, and a failure
        # surfaces here rather than as entries silently missing).
        pipe = client.pipeline(transaction=False)
        for index in range(first, first + count):
            body = json.dumps({"n": index, "ts": time.time()})
            pipe.xadd(args.stream, {"job": body}, maxlen=STREAM_MAX_LENGTH, approximate=True)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            # Redis away or refusing: the pacing loop goes on, and the pool connects again
            # for a later batch once the server is back.
            raise load.SendFailed(load.problem(exc)) from exc

    try:
        await load.pace(args, send, stop)
    finally:
        # Nothing to flush: what was not confirmed is counted as failed already.
        with contextlib.suppress(RedisError, OSError):
            await client.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
