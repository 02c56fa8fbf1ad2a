"""`python -m worker`, except that each replica takes a while to start, as a real service's
start-up does: a test can then kill the worker while its apply activity is starting replicas.

    DOCKTOR_TEST_START_DELAY=1.5 python -m tests.faults.slow_worker --config docktor.yaml
"""

from __future__ import annotations

import os
import runpy
import time
from pathlib import Path

from docktor.backends import processes

DELAY = float(os.environ.get("DOCKTOR_TEST_START_DELAY", "1.0"))
_real_start = processes.ProcessScaler._start


def _slow_start(self: processes.ProcessScaler, replica: int, program: str) -> processes.PidRecord:
    record = _real_start(self, replica, program)
    # Blocking on purpose: the starts run inline in the activity, so this is where a slow
    # start-up really makes the scale take time.
    time.sleep(DELAY)
    return record


processes.ProcessScaler._start = _slow_start  # type: ignore[method-assign]

if __name__ == "__main__":
    os.chdir(Path(__file__).parents[2])
    runpy.run_module("worker", run_name="__main__", alter_sys=True)
