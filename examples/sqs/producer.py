"""Load generator for the sqs example: a steady baseline with periodic bursts, sent to an SQS
queue.

The load is examples/nats-multi's, to the message: `--rate` messages/s, `--burst-rate` for
`--burst-seconds` at the end of every `--burst-every` seconds (its Schedule and pacing loop are
loaded from ../nats-multi/producer.py, so every queue kind sees the same load). Messages go out
ten at a time (SendMessageBatch, SQS's most). Every flag can also be set by an environment
variable (see `--help`).
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

from botocore.exceptions import BotoCoreError, ClientError
from sqs_client import DEFAULT_QUEUE_URL, client, ensure_queue

# SendMessageBatch takes at most ten messages.
BATCH = 10


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
        description="Send a baseline load with periodic bursts to an SQS queue.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--queue-url",
        default=os.environ.get("QUEUE_URL", DEFAULT_QUEUE_URL),
        help="the queue's URL (env QUEUE_URL); a local one is created if missing",
    )
    parser.add_argument(
        "--region",
        default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        help="region to sign for (env AWS_DEFAULT_REGION)",
    )
    load.add_load_arguments(parser)
    return load.check_load_arguments(parser, parser.parse_args(argv))


async def run(args: argparse.Namespace) -> int:
    stop = load.stop_on_signals()
    sqs = client(args.queue_url, args.region)
    ensure_queue(sqs, args.queue_url)

    def send_batches(first: int, count: int) -> None:
        for start in range(first, first + count, BATCH):
            entries = [
                {"Id": str(n), "MessageBody": json.dumps({"n": n, "ts": time.time()})}
                for n in range(start, min(start + BATCH, first + count))
            ]
            reply = sqs.send_message_batch(QueueUrl=args.queue_url, Entries=entries)
            if reply.get("Failed"):
                raise RuntimeError(f"{len(reply['Failed'])} messages refused: {reply['Failed'][0]}")

    async def send(first: int, count: int) -> None:
        # botocore blocks: in a thread, so the pacing loop's clock keeps running.
        await asyncio.to_thread(send_batches, first, count)

    try:
        await load.pace(args, send, stop)
    finally:
        sqs.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (BotoCoreError, ClientError) as exc:
        print(f"producer: {args.queue_url}: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
