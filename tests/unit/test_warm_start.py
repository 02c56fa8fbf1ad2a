"""Warm start: a loop started beside an existing decision log rebuilds its forecast's history
from it (docktor/journal.py warm_start), with what one replica handles, and can pre-scale in
its first iteration."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from docktor import journal
from docktor.journal import journal_files, logged_samples, warm_start
from docktor.loop.messages import LoopState, ObserveInput
from docktor.policy import decide
from docktor.policy.forecast import model as forecast
from docktor.values import Observation, PolicyMemory, PolicyState, WarmStart
from tests.helpers import write_rate_log
from tests.unit.test_forecast import STEP, spec
from tests.unit.test_journal_files import split_log

WORKFLOW = "docktor-test-consumer"
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def bursts(t: float) -> float:
    """100 msg/s, 500 msg/s for the last 12 s of every 60 s (t in seconds since the epoch)."""
    return 500.0 if t % 60 >= 48 else 100.0


def write_log(path: Path, seconds: float, service: str = "consumer", workflow: str = WORKFLOW):
    write_rate_log(path, workflow, bursts, seconds, STEP, NOW, service=service)


def test_the_log_gives_the_forecast_its_rhythm(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    write_log(log, 600)
    memory = warm_start(log, spec(), WORKFLOW, NOW).forecast
    chosen = forecast.best_period(memory, 3)
    assert chosen is not None
    period = chosen[1]
    assert period.seconds == 60 and period.confidence > 0.9 and period.cycles >= 5


def test_a_rotated_log_gives_its_whole_history(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    write_log(log, 600)
    split_log(log, 3)  # decisions.jsonl.2, .1 and the current file, as rotation leaves them
    samples = logged_samples(log, "consumer", WORKFLOW, NOW - timedelta(hours=1), NOW)
    assert len(samples) == 600 / STEP
    assert [s.taken_at for s in samples] == sorted(s.taken_at for s in samples)
    chosen = forecast.best_period(warm_start(log, spec(), WORKFLOW, NOW).forecast, 3)
    assert chosen is not None and chosen[1].seconds == 60 and chosen[1].cycles >= 5


def test_a_warm_start_reads_whole_lines_from_the_end_of_the_log_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "decisions.jsonl"
    write_log(log, 600)
    split_log(log, 3)
    data = b"".join(path.read_bytes() for path in journal_files(log))
    budget = len(data) // 2 + 7  # reaches back into decisions.jsonl.1, mid-line
    monkeypatch.setattr(journal, "_SEED_BYTES", budget)
    whole = data[-budget:].split(b"\n", 1)[1].count(b"\n")
    samples = logged_samples(log, "consumer", WORKFLOW, NOW - timedelta(hours=1), NOW)
    assert len(samples) == whole
    assert samples[-1].taken_at == NOW - timedelta(seconds=STEP)


def test_other_loops_and_lines_without_a_rate_are_left_out(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    write_log(log, 60)
    write_log(log, 60, service="other")
    write_log(log, 60, workflow="docktor-elsewhere-consumer")
    with log.open("a") as handle:
        handle.write("not json\n")
        handle.write(json.dumps({"service": "consumer", "workflow_id": WORKFLOW}) + "\n")
    samples = logged_samples(log, "consumer", WORKFLOW, NOW - timedelta(hours=1), NOW)
    assert len(samples) == 60 / STEP
    times = [s.taken_at for s in samples]
    assert times == sorted(times)
    # Only what falls within the span asked for.
    recent = logged_samples(log, "consumer", WORKFLOW, NOW - timedelta(seconds=20), NOW)
    assert recent[0].taken_at >= NOW - timedelta(seconds=20)


def test_no_log_gives_an_empty_history(tmp_path: Path) -> None:
    seed = warm_start(tmp_path / "missing.jsonl", spec(), WORKFLOW, NOW)
    assert seed.forecast.rings == [] and seed.per_replica_rate is None


def test_what_one_replica_handles_is_learnt_from_saturated_samples(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    # Two replicas busy throughout (work waiting at every sample), 96 msg/s out between them.
    write_rate_log(
        log, WORKFLOW, bursts, 60, STEP, NOW, also={"queue.backlog": 200, "queue.rate_out": 96}
    )
    assert warm_start(log, spec(), WORKFLOW, NOW).per_replica_rate == 48
    # Never saturated: nothing to learn it from.
    calm = tmp_path / "calm.jsonl"
    write_rate_log(calm, WORKFLOW, bursts, 60, STEP, NOW, also={"queue.rate_out": 96})
    assert warm_start(calm, spec(), WORKFLOW, NOW).per_replica_rate is None


def test_a_seeded_loop_pre_scales_in_its_first_iteration(tmp_path: Path) -> None:
    # What one replica handles is not configured: the log's busy samples (2 replicas, 100 msg/s
    # out, work waiting) teach it, 50 msg/s, as the forecast learns the bursts from it.
    learnt = spec()
    learnt.rate = learnt.rate.model_copy(update={"per_replica": None})
    log = tmp_path / "decisions.jsonl"
    busy = {"queue.backlog": 200.0, "queue.rate_out": 100.0}
    write_rate_log(log, WORKFLOW, bursts, 600, STEP, NOW, also=busy)
    # NOW is on a whole minute: the next burst starts 48 s after it; the loop starts 44 s in,
    # a lead (4 s check + 3 s start-up) before it. First iteration: no previous sample, no rate.
    start = NOW + timedelta(seconds=44)
    sample = Observation(
        taken_at=start,
        replicas=2,
        metrics={"queue.backlog": 0.0, "queue.ack_pending": 0.0},
        warm_start=warm_start(log, learnt, WORKFLOW, start),
    )
    proposal = decide(learnt, sample, PolicyState(memory=PolicyMemory()), start)
    assert proposal.predicted and proposal.action == "scale_up"
    assert proposal.target_replicas == 11
    assert "pre-scaling for the burst expected at 10:00:48 (period 1m" in proposal.reason
    assert proposal.memory is not None and proposal.memory.per_replica_rate == 50
    # Without the seed the same first iteration knows nothing.
    cold = decide(learnt, sample.model_copy(update={"warm_start": None}), PolicyState(), start)
    assert not cold.predicted


def test_the_seed_is_asked_for_once_and_only_with_predict_on() -> None:
    state = LoopState()
    assert state.forecast_seed_from(spec(), "/var/log/d.jsonl") == "/var/log/d.jsonl"
    assert state.forecast_seed_from(spec(enabled=False), "/var/log/d.jsonl") is None
    assert state.forecast_seed_from(spec(), None) is None
    sample = Observation(taken_at=NOW, replicas=2, metrics={"queue.backlog": 0.0})
    # An empty seed (no log yet) still counts as the history: the log is not read again.
    seeded = decide(
        spec(), sample.model_copy(update={"warm_start": WarmStart()}), PolicyState(), NOW
    )
    state.memory = seeded.memory or PolicyMemory()
    assert state.forecast_seed_from(spec(), "/var/log/d.jsonl") is None


def test_payloads_of_older_releases_decode() -> None:
    old_input = {"project": "p", "service": spec().model_dump(mode="json")}
    assert ObserveInput.model_validate(old_input).forecast_seed_from is None
    old_sample = {"taken_at": NOW.isoformat(), "replicas": 2, "metrics": {}}
    assert Observation.model_validate(old_sample).warm_start is None
