"""The `queue:` block of `kind: redis`, as a user's file is checked: the Redis source's own model
(docktor.sources.redis.RedisQueueSpec), its field paths and its metric names, offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from docktor.sources import queue_block
from docktor.sources.redis import RedisQueueSpec
from docktor.spec import load_config
from tests.unit.test_config import problems, write

SERVICE = "services:\n  - name: web\n    backend: processes\n    command: [python, w.py]\n"


def test_a_redis_queue_loads_with_its_defaults(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, SERVICE + "    queue: {kind: redis, stream: jobs, group: g}\n")
    )
    queue = queue_block(config.services[0], RedisQueueSpec)
    assert (queue.url, queue.stream, queue.group) == ("redis://127.0.0.1:6379/0", "jobs", "g")
    # The rules the NATS examples use need nothing else: the target policy's defaults fill in.
    assert config.services[0].policy == "target"


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        pytest.param(
            "{kind: redis, stream: jobs}",
            "services[0].queue.group: required field is missing",
            id="missing-group",
        ),
        pytest.param(
            "{kind: redis, stream: jobs, group: g, consumer: c}",
            "services[0].queue.consumer: unknown field",
            id="nats-field-on-redis",
        ),
        pytest.param(
            "{kind: redis, stream: jobs, grop: g, group: g}",
            "services[0].queue.grop: unknown field (did you mean 'group'?)",
            id="typo",
        ),
        pytest.param(
            "{kind: redis, url: 'nats://127.0.0.1:4222', stream: jobs, group: g}",
            "services[0].queue.url: must be a redis:// (or rediss://, unix://) URL, e.g. "
            "redis://127.0.0.1:6379/0",
            id="url-scheme",
        ),
        pytest.param(
            "{kind: redis, stream: jobs, group: g, metrics: [queue.waiting]}",
            "services[0].queue.metrics: unknown redis metric 'queue.waiting' (known: "
            "queue.backlog, queue.ack_pending, queue.redelivered, queue.consumers, "
            "queue.rate_in, queue.rate_out)",
            id="nats-only-metric",
        ),
    ],
)
def test_a_bad_redis_queue_is_one_line_naming_the_field(
    tmp_path: Path, block: str, problem: str
) -> None:
    found = problems(SERVICE + f"    queue: {block}\n", tmp_path)
    assert any(line.startswith(problem) for line in found), found
