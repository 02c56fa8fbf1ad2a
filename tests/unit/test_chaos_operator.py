"""The chaos soak's operator: commands refused while a part is down are tried again once it is
back, and only what was taken is resumed."""

from __future__ import annotations

import asyncio
from typing import Any

from docktor.dev.bench.chaos.faults import FaultRecord, Injector
from docktor.dev.bench.chaos.plan import PlannedFault


class Terminal(Injector):
    """The injector with the part and the CLI replaced by a script of exit codes: what this
    tests is the operator's reaction to them, not the CLI (tests/faults/test_chaos.py runs it)."""

    def __init__(self, answers: dict[str, list[int]]) -> None:
        super().__init__(stack=None, seed=1)  # type: ignore[arg-type]
        self.answers = answers
        self.ran: list[str] = []

    async def break_part(  # type: ignore[override]
        self, kind: Any, down_for: float, target: str, planned_at: float, down: Any = None
    ) -> FaultRecord:
        if down is not None:
            down.set()
        await asyncio.sleep(0)
        return FaultRecord(kind, planned_at, 0.0)

    async def command(self, record: FaultRecord, *args: str) -> int:
        self.ran.append(args[0])
        script = self.answers[args[0]]
        return script.pop(0) if len(script) > 1 else script[0]


def fault() -> PlannedFault:
    return PlannedFault(
        at=0.0,
        kind="controls",
        down_for=0.0,
        target="idle-000",
        companion="temporal_restart",
        companion_down_for=5.0,
        replicas=2,
    )


def run(answers: dict[str, list[int]]) -> Terminal:
    terminal = Terminal(answers)
    terminal.retry_every = 0.0
    asyncio.run(terminal.controls(fault(), 0.0))
    return terminal


def test_refused_while_temporal_was_down_then_paused_and_resumed_once_back() -> None:
    # Temporal unreachable: pause and scale refused; once back, pause is taken, then resume.
    terminal = run({"pause": [1, 1, 0], "scale": [1], "resume": [0]})
    assert terminal.ran == ["pause", "scale", "pause", "pause", "resume"]
    assert terminal.violations == []


def test_what_was_taken_is_resumed_without_pausing_again() -> None:
    terminal = run({"pause": [1], "scale": [0], "resume": [1, 0]})
    assert terminal.ran == ["pause", "scale", "resume", "resume"]
    assert terminal.violations == []
