"""The chaos soak, short: every kind of fault once, in a seeded order and at seeded times, over
a few minutes, against the real stack (its own Temporal dev server, nats-server and redis-server,
since it restarts them; two `python -m worker`; the examples' consumers and producers). Every
invariant of benchmarks/chaos.py must hold: replicas within bounds and numbered once, the
decision log equal to history, no loop stuck, no scale-down on missing data, the controlled
services back to what their load needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import require_redis_server

from docktor.dev.bench.chaos.plan import KINDS, ChaosOptions, Load
from docktor.dev.bench.chaos.run import run_chaos

pytestmark = pytest.mark.slow

# Eight faults, one of each kind, about 12 s apart, each part down for half its usual time.
SHORT = ChaosOptions(
    loops=8,
    duration=100.0,
    seed=20,
    fault_every=12.5,
    fault_scale=0.5,
    idle_interval=2.0,
    controlled_interval=2.0,
    down_window=15.0,
    load=Load(rate=60.0, burst=200.0, burst_seconds=8.0, burst_every=40.0),
    stuck_after=40.0,
    settle_after=30.0,
)


async def test_a_short_chaos_run_breaks_no_invariant(tmp_path: Path) -> None:
    require_redis_server()
    report = await run_chaos(SHORT, tmp_path)
    (tmp_path / "chaos-report.json").write_text(json.dumps(report, indent=1))

    # Each kind once (the operator's controls add one more of the fault they land in).
    injected = report["faults_by_kind"]
    assert isinstance(injected, dict) and all(injected[kind] >= 1 for kind in KINDS), injected
    decisions = report["decisions"]
    assert isinstance(decisions, dict) and decisions["in_history"] > 100
    violations = report["violations"]
    assert isinstance(violations, list)
    shown = "\n".join(f"{v['invariant']} {v['service']}: {v['detail']}" for v in violations)
    assert not violations, shown
    assert decisions["log_lines_matching_history"] == decisions["in_history"]
