"""Running loops outlive releases: every recorded history replays against today's workflow code.

The histories in histories/ were recorded from real loops on a real Temporal dev server (see
record.py for how, and for when to re-record rather than use `workflow.patched`). A change to
workflows/ that would make a running loop fail on its next workflow task - a command added,
removed or reordered, a handler renamed - fails here first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows import ServiceAutoscaler

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_every_path_of_the_loop_has_a_recording() -> None:
    names = {path.name.split(".")[0] for path in HISTORIES}
    assert names >= {
        "scale_up_down_hold_cancel",
        "pause_manual_resume_nudge",
        "approval_granted_refused_lapsed",
        "llm_fallback",
        "continue_as_new",
        "manual_hold_resume",
    }


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text(encoding="utf-8"))
    replayer = Replayer(workflows=[ServiceAutoscaler], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
