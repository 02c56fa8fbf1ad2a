"""One worker replica of the sqs example: receives jobs from an SQS queue and "processes" them.

Each message costs `--work-ms` of simulated work, so one replica handles about 1000 / work_ms
messages per second (50/s at the default 20 ms), as in examples/nats-multi. docktor starts and
stops copies of this script; SQS spreads the messages between them. A received message is in
flight (invisible to the others, `queue.ack_pending`) until this replica deletes it once its
work is done; one that dies leaves its messages to reappear after the visibility timeout.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from sqs_client import DEFAULT_QUEUE_URL, client, ensure_queue

# Messages per ReceiveMessage (SQS's most is 10). Small, so a replica never hoards work idle
# replicas could do.
DEFAULT_BATCH = 10
# Long polling: a receive waits this long for a message, so an idle replica costs few requests
# and still notices a stop request within a second or two.
WAIT_SECONDS = 1
REPORT_EVERY_SECONDS = 5.0
# Between attempts while the endpoint is away; a replica keeps trying until stopped.
RETRY_SECONDS = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Receive jobs from an SQS queue, simulate work on each and delete it.",
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
    parser.add_argument(
        "--work-ms",
        type=float,
        default=float(os.environ.get("WORK_MS", "20")),
        help="simulated processing time per message in ms (env WORK_MS)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=int(os.environ.get("RECEIVE_BATCH", str(DEFAULT_BATCH))),
        help="messages per receive, 1..10 (env RECEIVE_BATCH)",
    )
    args = parser.parse_args(argv)
    if args.work_ms < 0:
        parser.error("--work-ms must not be negative")
    if not 1 <= args.batch <= 10:
        parser.error("--batch must be 1..10")
    return args


def problem(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Replica:
    def __init__(self, args: argparse.Namespace, sqs: Any, stop: threading.Event) -> None:
        self.args, self.sqs, self.stop = args, sqs, stop
        self.done = 0

    def receive(self) -> list[dict[str, Any]]:
        reply = self.sqs.receive_message(
            QueueUrl=self.args.queue_url,
            MaxNumberOfMessages=self.args.batch,
            WaitTimeSeconds=WAIT_SECONDS,
        )
        return list(reply.get("Messages", []))

    def work(self, messages: list[dict[str, Any]]) -> None:
        """Work each message and delete it; on a stop request, hand the rest back at once
        (visibility 0) so another replica takes them now rather than after the timeout."""
        for index, message in enumerate(messages):
            if self.stop.is_set():
                self.release(messages[index:])
                return
            time.sleep(self.args.work_ms / 1000)  # stands in for real work
            self.sqs.delete_message(
                QueueUrl=self.args.queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
            self.done += 1

    def release(self, messages: list[dict[str, Any]]) -> None:
        self.sqs.change_message_visibility_batch(
            QueueUrl=self.args.queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(messages)
            ],
        )


def run(args: argparse.Namespace) -> int:
    log = f"[consumer {os.environ.get('DOCKTOR_REPLICA', '0')}]"
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    sqs = client(args.queue_url, args.region)
    replica = Replica(args, sqs, stop)
    ready = False
    reported_at = time.monotonic()
    done_at_report = 0
    try:
        while not stop.is_set():
            try:
                if not ready:
                    ensure_queue(sqs, args.queue_url)
                    ready = True
                    print(
                        f"{log} receiving from {args.queue_url}, {args.work_ms:g} ms/message",
                        flush=True,
                    )
                replica.work(replica.receive())
            except (BotoCoreError, ClientError) as exc:
                # The endpoint away, or the queue gone: one line per attempt, then again after
                # a pause. What was received and not deleted reappears after its timeout.
                print(f"{log} sqs: {problem(exc)}; retrying", flush=True)
                ready = False
                stop.wait(RETRY_SECONDS)
                continue

            now = time.monotonic()
            if now - reported_at >= REPORT_EVERY_SECONDS:
                rate = (replica.done - done_at_report) / (now - reported_at)
                print(f"{log} processed {replica.done} ({rate:.1f} msg/s)", flush=True)
                reported_at, done_at_report = now, replica.done
    finally:
        sqs.close()
        print(f"{log} stopped after {replica.done} messages", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
