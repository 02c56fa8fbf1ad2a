"""The figures the alert rules read (deploy/prometheus/docktor-rules.yaml): a loop's bounds and
pace, when it last decided, failure counters that exist before the first failure, and gauges
that go away when the loop is stopped, so a stopped loop raises no alert."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from docktor.telemetry import DocktorMetrics
from docktor.values import Decision, Observation, Provenance

AT = datetime(2026, 6, 1, 10, 30, tzinfo=UTC)


# Each decision its own: the counters count a decision id once.
SEQUENCES = itertools.count(1)


def decision(action: str, target: int = 2, **metadata: object) -> Decision:
    return Decision(
        sequence=next(SEQUENCES),
        timestamp=AT,
        service="web",
        action=action,  # type: ignore[arg-type]
        current_replicas=target,
        target_replicas=target,
        reason="test",
        metadata=Provenance(**metadata),  # type: ignore[arg-type]
    )


def value(metrics: DocktorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"service": "web", **labels})


def test_the_plan_gives_the_bounds_and_pace() -> None:
    metrics = DocktorMetrics()
    metrics.planned("web", max_replicas=8, check_interval=4.0)
    assert value(metrics, "docktor_max_replicas") == 8
    assert value(metrics, "docktor_check_interval_seconds") == 4.0
    metrics.planned("web", max_replicas=10, check_interval=30.0)  # after an update
    assert value(metrics, "docktor_max_replicas") == 10
    assert value(metrics, "docktor_check_interval_seconds") == 30.0


def test_each_source_counts_its_failures_from_zero() -> None:
    metrics = DocktorMetrics()
    metrics.observed("web", Observation(taken_at=AT, replicas=2), ["nats", "docker"])
    for source in ("nats", "docker", "scaler"):
        assert value(metrics, "docktor_metric_fetch_failures_total", source=source) == 0
    failed = Observation(taken_at=AT, replicas=2, errors=["nats: connection refused"])
    metrics.observed("web", failed, ["nats", "docker"])
    assert value(metrics, "docktor_metric_fetch_failures_total", source="nats") == 1
    assert value(metrics, "docktor_metric_fetch_failures_total", source="docker") == 0


def test_every_decision_stamps_the_time_and_a_stop_removes_the_gauges() -> None:
    metrics = DocktorMetrics()
    metrics.planned("web", max_replicas=4, check_interval=4.0)
    metrics.recorded(decision("hold"), written=True)
    assert value(metrics, "docktor_last_decision_timestamp_seconds") == AT.timestamp()
    # A retried record (nothing written) still stamps the time: the loop did decide.
    later = decision("hold").model_copy(update={"timestamp": AT.replace(minute=31)})
    metrics.recorded(later, written=False)
    assert value(metrics, "docktor_last_decision_timestamp_seconds") == later.timestamp.timestamp()
    assert value(metrics, "docktor_decisions_total", action="hold") == 1

    metrics.recorded(decision("stopped"), written=True)
    for gauge in (
        "docktor_replicas",
        "docktor_desired_replicas",
        "docktor_max_replicas",
        "docktor_check_interval_seconds",
        "docktor_last_decision_timestamp_seconds",
    ):
        assert value(metrics, gauge) is None, gauge
    # The counters stay: a rate over them still covers the loop's life.
    assert value(metrics, "docktor_decisions_total", action="stopped") == 1
    assert value(metrics, "docktor_decisions_total", action="hold") == 1
    # A stop recorded again (a retry) finds nothing to remove.
    metrics.recorded(decision("stopped"), written=False)


def test_fallbacks_and_model_calls_are_counted_for_the_failing_model_alert() -> None:
    metrics = DocktorMetrics()
    metrics.recorded(decision("hold", llm_used=True, latency_ms=120.0), written=True)
    metrics.recorded(decision("hold", fallback="timeout", latency_ms=30000.0), written=True)
    assert value(metrics, "docktor_llm_latency_seconds_count") == 2
    assert value(metrics, "docktor_llm_fallbacks_total") == 1


def test_a_decision_decided_again_under_its_id_counts_once() -> None:
    metrics = DocktorMetrics()
    first = decision("hold").model_copy(update={"sequence": 7, "workflow_id": "docktor:p:web"})
    # Its workflow task failed to complete; decided again, the loop scaled up instead, and the
    # log's line was superseded.
    again = first.model_copy(update={"action": "scale_up", "target_replicas": 4})
    metrics.recorded(first, written=True)
    metrics.recorded(again, written=True)
    counted = sum(
        value(metrics, "docktor_decisions_total", action=action) or 0
        for action in ("hold", "scale_up")
    )
    assert counted == 1
    metrics.recorded(first.model_copy(update={"sequence": 8}), written=True)
    assert value(metrics, "docktor_decisions_total", action="hold") == 2
