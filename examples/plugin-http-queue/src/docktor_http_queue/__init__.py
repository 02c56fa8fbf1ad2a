"""A docktor metric source (`queue.kind: http`): queue depth and counters from a JSON endpoint.

One GET per sample, in a thread (urllib is blocking), with a short timeout so that an endpoint
that does not answer becomes a retried MetricUnavailable well within the observe activity.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any, Literal

from pydantic import Field, field_validator

from docktor.sources import MetricConfigError, MetricUnavailable, queue_block
from docktor.spec import PositiveDuration, QueueSpec, ServiceSpec

# The largest document read: a queue-depth endpoint answers with a few numbers.
MAX_BODY = 64 * 1024


class HttpQueueSpec(QueueSpec):
    """`queue: {kind: http, url: ...}`: which keys of the JSON document hold what."""

    kind: Literal["http"] = "http"
    url: str = Field(min_length=1)
    backlog: str = "depth"
    in_flight: str | None = "in_flight"
    # Monotonic counters of the queue's life; the rates come from two consecutive samples.
    added: str | None = "enqueued_total"
    done: str | None = "processed_total"
    timeout: PositiveDuration = 2.0

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, not {value!r}")
        return value


class HttpQueueSource:
    """MetricSource: one instance per worker, for every service whose queue is `kind: http`."""

    config_model = HttpQueueSpec
    provides = ("queue.backlog", "queue.ack_pending", "queue.rate_in", "queue.rate_out")
    rates = {"queue.added_total": "queue.rate_in", "queue.done_total": "queue.rate_out"}

    async def sample(self, spec: ServiceSpec) -> tuple[dict[str, float], dict[str, float]]:
        queue = queue_block(spec, HttpQueueSpec)
        document = await asyncio.to_thread(_get, queue)
        gauges = {"queue.backlog": _number(document, queue.backlog, queue)}
        if queue.in_flight and queue.in_flight in document:
            gauges["queue.ack_pending"] = _number(document, queue.in_flight, queue)
        counters: dict[str, float] = {}
        for key, counter in ((queue.added, "queue.added_total"), (queue.done, "queue.done_total")):
            if key and key in document:
                counters[counter] = _number(document, key, queue)
        return gauges, counters

    async def validate(self, spec: ServiceSpec) -> None:
        await self.sample(spec)

    async def close(self) -> None:
        return None  # no connection is kept between samples


def _get(queue: HttpQueueSpec) -> dict[str, Any]:
    request = urllib.request.Request(queue.url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=queue.timeout) as response:  # noqa: S310
            body = response.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            raise MetricConfigError(f"{queue.url}: no queue here (HTTP {exc.code})") from None
        raise MetricUnavailable(f"{queue.url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MetricUnavailable(f"{queue.url}: cannot read ({reason})") from None
    if len(body) > MAX_BODY:
        raise MetricConfigError(f"{queue.url}: the answer is over {MAX_BODY} bytes")
    try:
        document = json.loads(body)
    except ValueError:
        raise MetricConfigError(f"{queue.url}: the answer is not JSON") from None
    if not isinstance(document, dict):
        raise MetricConfigError(f"{queue.url}: the answer is not a JSON object")
    return document


def _number(document: dict[str, Any], key: str, queue: HttpQueueSpec) -> float:
    value = document.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetricConfigError(f"{queue.url}: key {key!r} is not a number ({value!r})")
    return float(value)
