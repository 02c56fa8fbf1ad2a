"""Scenario files for the control benchmark: strict parsing, traces, noise."""

from __future__ import annotations

from pathlib import Path

import pytest

from docktor.dev.bench.scenario import load_scenario
from docktor.spec import ConfigError

BASE = """\
name: t
duration: 20
per_replica_rate: 50
startup: 3
initial_replicas: 2
min_replicas: 1
max_replicas: 12
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    assert len(caught.value.problems) == 1
    assert "\n" not in caught.value.problems[0]
    return caught.value.problems[0]


def test_points_step_linear_and_repeat(tmp_path: Path) -> None:
    step = load_scenario(write(tmp_path, BASE + "points: [[0, 100], [5, 500]]\nrepeat_every: 10"))
    assert [step.base_rate(t) for t in (0, 4.9, 5, 9.9, 10, 15)] == [100, 100, 500, 500, 100, 500]
    linear = load_scenario(write(tmp_path, BASE + "points: [[0, 0], [10, 100]]\nshape: linear"))
    assert [linear.base_rate(t) for t in (0, 5, 10, 15)] == [0, 50, 100, 100]
    assert len(linear.rates(0.1)) == 200


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("points: [[0, 1]]\nstartup_s: 3", "startup_s: unknown field"),
        ("points: [[0, 1]]\nper_replica_rate: -1", "per_replica_rate: must be greater than 0"),
        ("points: [[0, 1], [5, -2]]", "points[1]: rate must be a finite number >= 0"),
        ("points: [[0, 1], [0, 2]]", "points[1]: times must increase"),
        ("points: [[0, 1], [5]]", "points[1]"),
        ("points: [[0, 1]]\nshape: smooth", "shape: must be 'step' or 'linear'"),
        ("points: [[0, 1]]\nnoise: {amplitude: 2}", "noise.amplitude"),
        ("trace: x.csv\npoints: [[0, 1]]", "points: give the load as either"),
        ("", "points: give the load as either"),
        ("points: [[0, 1]]\ninitial_replicas: 20", "initial_replicas: must be within [1, 12]"),
    ],
)
def test_errors_name_the_field(tmp_path: Path, extra: str, expected: str) -> None:
    text = BASE.replace("initial_replicas: 2\n", "") if "initial_replicas" in extra else BASE
    message = error_of(write(tmp_path, text + extra))
    assert expected in message
    assert message.startswith(str(tmp_path / "s.yaml"))


def test_a_missing_field_and_bad_yaml(tmp_path: Path) -> None:
    assert "duration: required field is missing" in error_of(
        write(tmp_path, BASE.replace("duration: 20\n", "") + "points: [[0, 1]]")
    )
    assert "YAML syntax error" in error_of(write(tmp_path, "name: [unclosed"))
    assert "no such file" in error_of(tmp_path / "absent.yaml")


def test_a_trace_is_read_relative_to_the_scenario_file(tmp_path: Path) -> None:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    rows = "t,rate\n" + "".join(f"{t},{t * 10}\n" for t in range(20))
    (folder / "load.csv").write_text(rows, encoding="utf-8")
    scenario = load_scenario(write(folder, BASE + "trace: load.csv"))
    assert scenario.base_rate(0) == 0
    assert scenario.base_rate(7.5) == 70  # one row per second, held through the second
    assert scenario.rates(1.0) == [t * 10.0 for t in range(20)]


def test_a_bad_or_short_trace_is_refused(tmp_path: Path) -> None:
    (tmp_path / "short.csv").write_text("0,1\n1,2\n", encoding="utf-8")
    assert "covers 2 s, shorter than duration" in error_of(
        write(tmp_path, BASE + "trace: short.csv")
    )
    (tmp_path / "gap.csv").write_text("0,1\n2,2\n", encoding="utf-8")
    assert "row 2: expected t = 1" in error_of(write(tmp_path, BASE + "trace: gap.csv"))
    assert "trace: cannot read" in error_of(write(tmp_path, BASE + "trace: none.csv"))


def test_noise_is_seeded(tmp_path: Path) -> None:
    noisy = BASE + "points: [[0, 100]]\nnoise: {amplitude: 0.3, seed: 7}"
    first = load_scenario(write(tmp_path, noisy)).rates(0.1)
    again = load_scenario(write(tmp_path, noisy)).rates(0.1)
    other = load_scenario(write(tmp_path, noisy.replace("seed: 7", "seed: 8"))).rates(0.1)
    assert first == again != other
    assert all(70 <= r <= 130 for r in first)
    assert len(set(first[:10])) == 1  # one draw per second


def test_the_shipped_scenarios_load() -> None:
    folder = Path(__file__).resolve().parents[2] / "benchmarks" / "scenarios"
    names = {load_scenario(p).name for p in folder.glob("*.yaml")}
    assert {"example-bursts", "step-100-400", "ramp", "sawtooth", "noisy-bursts"} <= names
    assert "diurnal" in names
