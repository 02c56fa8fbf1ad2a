"""what_if's given metrics: refused in one line when not a finite number, capped as the loop's
sampler caps them otherwise. The refusal comes before anything is asked of Temporal or a
backend, so these need neither."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from docktor.client import operate
from docktor.client.operate import BadArgument, given_metrics
from docktor.sources.sampling import METRIC_LIMIT
from docktor.spec import DocktorConfig, parse_config

STEP = """
project: shop
services:
  - name: worker
    backend: compose
    min_replicas: 1
    max_replicas: 10
    rules:
      scale_up_when:
        - {metric: queue.backlog, op: ">", value: 500}
"""
TARGET = """
project: shop
services:
  - name: worker
    backend: compose
    min_replicas: 1
    max_replicas: 10
    policy: target
    target: {queue.backlog_per_replica: 100}
"""


def config(text: str) -> DocktorConfig:
    return parse_config(text, base_dir=Path("."))


@pytest.mark.parametrize("text", [STEP, TARGET], ids=["step", "target"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
async def test_a_value_that_is_not_a_finite_number_is_refused_naming_the_metric(
    text: str, value: float
) -> None:
    # The target policy raised ValueError/OverflowError; the step policy answered on it.
    with pytest.raises(BadArgument) as refused:
        await operate.what_if(config(text), "worker", None, {"queue.backlog": value}, 2)  # type: ignore[arg-type]
    assert str(refused.value) == f"metrics: 'queue.backlog' must be a finite number, not {value}"


def test_a_hostile_metric_name_stays_one_short_line() -> None:
    with pytest.raises(BadArgument) as refused:
        given_metrics({"a\nb\x1b[2J" + "x" * 10_000: math.nan})
    message = str(refused.value)
    assert "\n" not in message and "\x1b" not in message and len(message) < 200


def test_finite_values_are_capped_as_the_loop_caps_them() -> None:
    assert given_metrics({"queue.backlog": 1e308, "cpu.avg_pct": -1e308, "x": 5.0}) == {
        "queue.backlog": METRIC_LIMIT,
        "cpu.avg_pct": -METRIC_LIMIT,
        "x": 5.0,
    }
