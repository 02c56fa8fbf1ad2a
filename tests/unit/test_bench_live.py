"""docktor bench live: the arithmetic that turns live samples into the simulation's figures."""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from docktor.dev.bench.live import (
    Figures,
    LiveBench,
    LiveResult,
    Sample,
    check_phase,
    control_actions,
    disagreements,
    live_figures,
    measured_per_replica,
    print_result,
    simulated_figures,
)
from docktor.dev.demo.stack import override_config, write_demo_config
from docktor.exits import read_config
from docktor.spec import ServiceSpec
from docktor.values import Decision

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LOAD = {"rate": 100.0, "burst_rate": 500.0, "burst_seconds": 10.0, "burst_every": 60.0}


def test_live_figures_integrate_like_the_simulation() -> None:
    samples = [Sample(0, 10, 0, 2), Sample(0.5, 30, 0, 4), Sample(1.5, 0, 0, 4)]
    figures = live_figures(samples, actions=1)
    assert figures.backlog_s == pytest.approx(10 * 0.5 + 30 * 1.0)
    assert figures.replica_s == pytest.approx(2 * 0.5 + 4 * 1.0)
    assert figures.peak_backlog == 30
    assert figures.actions == 1


def test_the_per_replica_rate_comes_from_busy_steady_windows_only() -> None:
    busy = [Sample(t * 0.5, 500, 48 * 4 * t * 0.5, 4) for t in range(40)]
    assert measured_per_replica(busy) == pytest.approx(48)
    idle = [Sample(t * 0.5, 0, 100 * t * 0.5, 4) for t in range(40)]
    assert measured_per_replica(idle) is None
    changing = [Sample(t * 0.5, 500, 100 * t, 2 + t % 2) for t in range(40)]
    assert measured_per_replica(changing) is None


def test_check_phase_is_a_circular_median() -> None:
    assert check_phase([1.0, 5.0, 9.2, 13.0], 4.0) == pytest.approx(1.0)
    # Around the wrap: 3.9 and 0.1 are 0.2 s apart, not 3.8.
    assert check_phase([3.9, 8.1, 11.9], 4.0) in (pytest.approx(3.9), pytest.approx(0.1))
    assert check_phase([], 4.0) == 0.0


def test_the_simulation_runs_at_the_live_phase() -> None:
    spec = ServiceSpec(
        name="c", min_replicas=2, max_replicas=12, queue={"stream": "J", "consumer": "w"}
    )
    aligned = simulated_figures(spec, LOAD, 300, 48, 1.0, 2, phase=0.0)
    shifted = simulated_figures(spec, LOAD, 300, 48, 1.0, 2, phase=3.0)
    wrapped = simulated_figures(spec, LOAD, 300, 48, 1.0, 2, phase=55.0)
    for figures in (aligned, shifted, wrapped):
        assert figures.backlog_s > 0 and figures.replica_s > 0
    # Where the checks fall relative to the bursts changes the backlog.
    assert aligned.backlog_s != shifted.backlog_s


def test_the_verdict_judges_backlog_replicas_and_actions() -> None:
    close = {"backlog_s": -0.24, "peak_backlog": -0.9, "replica_s": 0.1, "actions": 0.25}
    # Peak backlog is shown, not judged: one sample decides it.
    assert disagreements(close) == []
    assert disagreements({**close, "actions": -0.5}) == ["actions"]
    assert disagreements({**close, "backlog_s": -0.42, "replica_s": 0.3}) == [
        "backlog·s",
        "replica·s",
    ]
    # One side 0 and the other not cannot agree; both 0 (no scaling on either side) do.
    assert disagreements({**close, "actions": float("inf")}) == ["actions"]
    assert disagreements({**close, "actions": None}) == []


def test_bringing_the_service_up_to_min_replicas_is_no_control_action() -> None:
    def decision(action: str, current: int, target: int) -> Decision:
        return Decision(
            timestamp=T0,
            service="consumer",
            action=action,  # type: ignore[arg-type]
            current_replicas=current,
            target_replicas=target,
            reason="",
        )

    # The simulation starts at min_replicas; the live loop first starts them from 0.
    decisions = [
        decision("scale_up", 0, 2),
        decision("scale_up", 2, 3),
        decision("hold", 3, 3),
        decision("scale_up", 3, 12),
        decision("scale_down", 12, 10),
    ]
    assert control_actions(decisions, min_replicas=2) == 3


def test_the_printed_verdict_names_what_disagrees() -> None:
    live = Figures(backlog_s=20_000, peak_backlog=1_400, replica_s=6_000, actions=4)
    simulated = Figures(backlog_s=18_000, peak_backlog=1_300, replica_s=6_100, actions=8)
    result = LiveResult(
        service="consumer",
        duration=600,
        per_replica_rate=48,
        startup=1,
        check_phase=0,
        load=LOAD,
        live=live,
        simulated=simulated,
        differences={"backlog_s": -0.1, "peak_backlog": -0.07, "replica_s": 0.02, "actions": 1.0},
    )
    console = Console(record=True, width=120)
    print_result(result, console)
    assert "DISAGREE: actions differ by more than 25%" in console.export_text()


def test_the_bench_measures_the_service_the_worker_runs(tmp_path: Path) -> None:
    """Replicas are counted in the demo's state folder and the queue read on the demo's NATS,
    not where the example's file points."""
    example = Path(__file__).parents[2] / "examples" / "nats-multi" / "docktor.yaml"
    args = argparse.Namespace(
        service=None, duration=10, state_dir=str(tmp_path), no_live=True, **LOAD
    )
    bench = LiveBench(args, example, read_config(example))
    # What Demo.start does once the servers are up.
    override_config(bench.config, bench.state_dir, "127.0.0.1:1", {"nats": "nats://127.0.0.1:9"})
    bench.worker_config, bench.config = write_demo_config(bench.config, bench.state_dir)
    plan = bench.measured_plan()
    assert plan.state_dir == str(tmp_path.resolve() / "consumer")
    assert plan.queue is not None and plan.queue.url == "nats://127.0.0.1:9"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "0"], "--duration: must be greater than 0"),
        (["--burst-seconds", "70"], "--burst-seconds: must be greater than 0 and less than"),
        (["--service", "nope"], "--service: no service 'nope'"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "docktor.cli.main", "bench", "live", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
