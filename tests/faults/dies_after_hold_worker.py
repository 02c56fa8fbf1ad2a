"""`python -m worker`, except that the process SIGKILLs itself right after it has written its
first hold's line to the decision log. A hold's line is written by a local activity inside the
workflow task the timer woke, so that task never completes: what the log holds is a decision
that the loop's history does not.

    python -m tests.faults.dies_after_hold_worker --config docktor.yaml
"""

from __future__ import annotations

import os
import runpy
import signal
from pathlib import Path
from typing import Any

from docktor.loop import activities
from docktor.values import Decision

_real_append = activities.append_decision


def _append_then_die(path: Any, decision: Decision, *args: Any, **kwargs: Any) -> bool:
    written = _real_append(path, decision, *args, **kwargs)
    if decision.action == "hold":
        os.kill(os.getpid(), signal.SIGKILL)
    return written


activities.append_decision = _append_then_die  # type: ignore[assignment]

if __name__ == "__main__":
    os.chdir(Path(__file__).parents[2])
    runpy.run_module("worker", run_name="__main__", alter_sys=True)
