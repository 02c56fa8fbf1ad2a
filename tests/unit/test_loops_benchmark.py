"""benchmarks/loops.py reads the decision log across its rotations: a window measured from the
current file alone saw only what came after the last cut, and hid the late loops."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

from docktor.journal import rotated

REPO = Path(__file__).resolve().parents[2]


def load_loops() -> ModuleType:
    spec = importlib.util.spec_from_file_location("loops_benchmark", REPO / "benchmarks/loops.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def line(n: int) -> str:
    stamp = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=5 * n)
    return (
        json.dumps(
            {
                "decision_id": f"d{n}",
                "workflow_id": "w",
                "timestamp": stamp.isoformat(),
                "action": "hold",
            }
        )
        + "\n"
    )


def test_the_log_is_read_across_rotations_and_each_line_once(tmp_path: Path) -> None:
    loops = load_loops()
    journal = tmp_path / "decisions.jsonl"
    journal.write_text(line(1) + line(2))
    log = loops.DecisionLog(journal)
    assert len(log.read()) == 2
    journal.rename(rotated(journal, 1))  # the log is cut: the current file starts again
    journal.write_text(line(3))
    with rotated(journal, 1).open("a") as old:
        old.write(line(4)[:20])  # a half-written line is left for the next read
    assert sorted(d[1] for d in log.read()) == sorted(
        datetime.fromisoformat(json.loads(line(n))["timestamp"]) for n in (1, 2, 3)
    )
    with journal.open("a") as current:
        current.write(line(5))
    assert len(log.read()) == 4
    assert log.offsets[journal.stat().st_ino] == journal.stat().st_size
