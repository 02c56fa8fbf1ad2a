"""CPU averaged over metrics_window (docktor/sources/docker.py), on stats shaped as the engine
returns them: cumulative counters, the host's summed over its online CPUs. The real engine's
figures are checked in tests/integration/test_docker_metrics.py."""

from __future__ import annotations

from typing import Any

import pytest

from docktor.sources.docker import MAX_READINGS, CpuWindows, cpu_percent

CPUS = 2
SECOND = 1e9  # ns


def block(at: float, busy: float) -> dict[str, Any]:
    """Counters at `at` seconds, the container having used `busy` CPU-seconds so far."""
    return {
        "cpu_usage": {"total_usage": busy * SECOND},
        "system_cpu_usage": (1000 + at) * CPUS * SECOND,
        "online_cpus": CPUS,
    }


def stats(at: float, busy: float, busy_last_second: float) -> dict[str, Any]:
    """What `stats(stream=False)` answers at `at`: now and one second earlier."""
    return {"cpu_stats": block(at, busy), "precpu_stats": block(at - 1, busy - busy_last_second)}


def test_the_first_reading_is_the_engines_one_second_figure() -> None:
    one = stats(10, busy=5, busy_last_second=1)
    assert CpuWindows().average(("p", "s"), {"c1": one}, 60) == [pytest.approx(100)]
    assert cpu_percent(one) == pytest.approx(100)


def test_cpu_is_averaged_over_the_window() -> None:
    windows = CpuWindows()
    # A core busy for the first 10 s, then idle: readings every 5 s, at 0, 5, 10 and 15.
    timeline = [(0, 0, 0), (5, 5, 1), (10, 10, 1), (15, 10, 0)]
    figures = [windows.average(("p", "s"), {"c1": stats(*point)}, 15) for point in timeline]
    # At 15 s: 10 busy seconds of 15.
    assert figures[-1] == [pytest.approx(100 * 10 / 15)]
    # Before a whole window has passed: over what was seen (the reading at 0 s).
    assert figures[2] == [pytest.approx(100)]


def test_a_window_of_one_interval_averages_the_last_interval() -> None:
    windows = CpuWindows()
    for point in [(0, 0, 0), (5, 5, 1), (10, 10, 1)]:
        windows.average(("p", "s"), {"c1": stats(*point)}, 5)
    # Idle for the last 5 s; busy until then.
    assert windows.average(("p", "s"), {"c1": stats(15, 10, 0)}, 5) == [pytest.approx(0)]


def test_a_restarted_container_starts_its_window_again() -> None:
    windows = CpuWindows()
    windows.average(("p", "s"), {"c1": stats(0, 50, 1)}, 60)
    # Same id, counter back near zero: the engine's own second is all there is to go by.
    assert windows.average(("p", "s"), {"c1": stats(5, 1, 0.5)}, 60) == [pytest.approx(50)]


def test_each_container_has_its_own_window_and_gone_ones_are_forgotten() -> None:
    windows = CpuWindows()
    windows.average(("p", "s"), {"a": stats(0, 0, 0), "b": stats(0, 0, 0)}, 10)
    figures = windows.average(("p", "s"), {"a": stats(10, 10, 1), "b": stats(10, 2, 0)}, 10)
    assert figures == [pytest.approx(100), pytest.approx(20)]
    windows.average(("p", "s"), {"a": stats(20, 20, 1)}, 10)
    # b was not listed: a new container by that id would start from the engine's figure.
    assert windows.average(("p", "s"), {"b": stats(30, 12, 0)}, 10) == [pytest.approx(0)]


def test_few_readings_are_kept_however_long_the_window() -> None:
    windows = CpuWindows()
    for second in range(1, 2000):
        windows.average(("p", "s"), {"c1": stats(second, second / 2, 0.5)}, 3600)
    kept = windows._readings[("p", "s")]["c1"]
    assert 0 < len(kept) <= MAX_READINGS
