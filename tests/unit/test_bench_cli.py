"""`docktor bench control` end to end on small scenarios: JSON shape, determinism, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from docktor.cli.main import main

REPO = Path(__file__).resolve().parents[2]
BURSTS = REPO / "benchmarks" / "scenarios" / "example-bursts.yaml"
EXAMPLE_CONFIG = REPO / "examples" / "nats-multi" / "docktor.yaml"
SHORT = """\
name: short
duration: 120
per_replica_rate: 50
startup: 3
initial_replicas: 2
min_replicas: 1
max_replicas: 12
points: [[0, 100], [50, 500], [60, 100]]
"""


@pytest.fixture
def short(tmp_path: Path) -> Path:
    path = tmp_path / "short.yaml"
    path.write_text(SHORT, encoding="utf-8")
    return path


def run_json(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "out.json"
    assert main(["bench", "control", *args, "--json", str(out)]) == 0
    return json.loads(out.read_text(encoding="utf-8"))


def test_json_shape(tmp_path: Path, short: Path) -> None:
    data = run_json(tmp_path, "--scenario", str(short), "--config", str(EXAMPLE_CONFIG))
    [scenario] = data["scenarios"]
    assert scenario["name"] == "short"
    policies = [r["policy"] for r in scenario["results"]]
    assert policies == [
        "seed",
        "keda-hpa",
        "keda-hpa-cached",
        "hpa-behavior",
        "docktor-default",
        "docktor-predict",
        "docktor-predict-warm",
        "config:consumer",
        "oracle",
    ]
    for result in scenario["results"]:
        for key in ("backlog_s", "peak_backlog", "replica_s", "actions", "wait_p95_s"):
            assert isinstance(result[key], int | float)
        assert "backlog_s_over_oracle" in result
    oracle = scenario["results"][-1]
    assert oracle["policy"] == "oracle" and oracle["backlog_s_over_oracle"] == 0


def test_two_runs_give_identical_json(tmp_path: Path) -> None:
    noisy = REPO / "benchmarks" / "scenarios" / "noisy-bursts.yaml"
    first = run_json(tmp_path, "--scenario", str(noisy), "--scenario", str(BURSTS))
    second = run_json(tmp_path, "--scenario", str(noisy), "--scenario", str(BURSTS))
    assert first == second
    assert [s["name"] for s in first["scenarios"]] == ["noisy-bursts", "example-bursts"]


def test_a_bad_scenario_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SHORT.replace("startup: 3", "startup: soon"), encoding="utf-8")
    assert main(["bench", "control", "--scenario", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: ") and "startup" in err[0]


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["bench", "control", "--help"])
    assert done.value.code == 0
    assert "--scenario" in capsys.readouterr().out


def test_plot(tmp_path: Path, short: Path) -> None:
    png = tmp_path / "out.png"
    assert main(["bench", "control", "--scenario", str(short), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
