"""Running loops outlive releases: every recorded history replays against today's workflow code.

The histories in histories/ were recorded from real loops on a real Temporal dev server (see
record.py for how), one per scenario for each generation of runs that can still be open
(docs/upgrading.md, "Workflow patches", says when a generation goes). A change to the workflow
that would make a running loop fail on its next workflow task - a command added, removed or
reordered, a handler renamed - fails here first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.replay.record import SCENARIOS
from workflows import ServiceAutoscaler

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_every_generation_has_every_path_of_the_loop() -> None:
    """Each generation kept (a TAG of record.py) has a recording of every scenario: a path
    recorded only by runs that can no longer be open guards nothing."""
    scenarios: dict[str, set[str]] = {}
    for path in HISTORIES:
        name, tag, _index = path.stem.split(".")
        scenarios.setdefault(tag, set()).add(name)
    assert scenarios, "no recordings"
    for tag, names in scenarios.items():
        assert names == set(SCENARIOS), f"generation {tag}: {sorted(set(SCENARIOS) ^ names)}"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text(encoding="utf-8"))
    replayer = Replayer(workflows=[ServiceAutoscaler], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
