"""Breaking the real parts, one fault at a time per part: each fault records when it began and
when its part was back, which is what the recovery bounds are measured from."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field

from docktor.dev.bench.chaos.plan import RESOURCE, FaultKind, PlannedFault
from docktor.dev.bench.chaos.stack import Stack, fill
from docktor.dev.bench.chaos.watch import Violation, running_replicas

# An operator's command gets this long for its answer (the CLI's --timeout).
CONTROL_TIMEOUT = 10.0
# Resume is sent until it is taken (everything is back by then): a loop left paused or held
# would be a loop the operator lost.
RESUME_DEADLINE = 120.0


@dataclass
class FaultRecord:
    kind: FaultKind
    planned_at: float  # epoch seconds
    started: float
    ended: float = 0.0  # the part back (or, for an instant fault, the fault itself)
    detail: str = ""
    # controls: each command as the operator ran it, with its exit code and last line.
    commands: list[dict[str, object]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "planned_at": round(self.planned_at, 3),
            "started": round(self.started, 3),
            "ended": round(self.ended, 3),
            "down_seconds": round(self.ended - self.started, 2),
            "detail": self.detail,
            "commands": self.commands,
        }


class Injector:
    # An operator's next try at a command that was not taken.
    retry_every = 2.0

    def __init__(self, stack: Stack, seed: int) -> None:
        self.stack = stack
        self.rng = random.Random(seed ^ 0x5EED)
        self.locks = {resource: asyncio.Lock() for resource in set(RESOURCE.values())}
        self.records: list[FaultRecord] = []
        self.violations: list[Violation] = []
        # Faults whose part is down right now (for the live view).
        self.active: set[str] = set()

    async def run(self, fault: PlannedFault, planned_at: float) -> None:
        if fault.kind == "controls":
            async with self.locks["operator"]:
                await self.controls(fault, planned_at)
            return
        async with self.locks[RESOURCE[fault.kind]]:
            await self.break_part(fault.kind, fault.down_for, fault.target, planned_at)

    async def break_part(
        self,
        kind: FaultKind,
        down_for: float,
        target: str,
        planned_at: float,
        down: asyncio.Event | None = None,
    ) -> FaultRecord:
        """Take the part down, keep it down for `down_for`, bring it back; `down` is set once it
        is down (an operator's command arrives then)."""
        record = FaultRecord(kind, planned_at, time.time())
        self.records.append(record)
        self.active.add(kind)
        try:
            restore = await self._take_down(kind, target, record)
            if down is not None:
                down.set()
            await asyncio.sleep(down_for)
            if restore is not None:
                await asyncio.to_thread(restore)
        finally:
            record.ended = time.time()
            self.active.discard(kind)
            if down is not None:
                down.set()
        return record

    async def _take_down(self, kind: FaultKind, target: str, record: FaultRecord):  # noqa: ANN202
        stack = self.stack
        if kind == "worker_kill":
            alive = [i for i, w in enumerate(stack.workers) if w is not None]
            index = self.rng.choice(alive)
            record.detail = f"worker {index} (pid {stack.workers[index].pid}) SIGKILLed"  # type: ignore[union-attr]
            await asyncio.to_thread(stack.kill_worker, index)
            return lambda: stack.start_worker(index)
        if kind == "workers_down":
            indexes = list(range(len(stack.workers)))
            record.detail = f"all {len(indexes)} workers SIGKILLed"
            for index in indexes:
                await asyncio.to_thread(stack.kill_worker, index)

            def restart_all() -> None:
                for index in indexes:
                    stack.start_worker(index)

            return restart_all
        if kind == "temporal_restart":
            record.detail = "Temporal dev server stopped, started again on its database"
            await asyncio.to_thread(stack.stop_temporal)
            return stack.start_temporal
        if kind == "nats_restart":
            record.detail = "nats-server stopped, started again on its store"
            await asyncio.to_thread(stack.stop_nats)
            return stack.start_nats
        if kind == "redis_restart":
            record.detail = "redis-server stopped, started again (empty)"
            await asyncio.to_thread(stack.stop_redis)
            return stack.start_redis
        if kind == "replica_kill":
            found = running_replicas(stack.project).get(target, [])
            if not found:
                record.detail = f"{target}: no replica running to kill"
                return None
            pid, number = self.rng.choice(sorted(found))
            record.detail = f"{target} replica {number} (pid {pid}) SIGKILLed"
            os.kill(pid, signal.SIGKILL)
            return None
        if kind == "journal_unwritable":
            return await self._journal_unwritable(record)
        raise ValueError(kind)

    async def _journal_unwritable(self, record: FaultRecord):  # noqa: ANN202
        folder = self.stack.journal.parent
        if self.stack.journal_disk is not None:
            filler = await asyncio.to_thread(fill, folder)
            record.detail = "the decision log's disk full (a filled tmpfs)"
            return filler.unlink
        # Without a disk of its own: a file where the log's folder should be (root ignores
        # permissions, so a folder made read-only would not stop the worker).
        away = folder.with_name(folder.name + ".away")
        blocker = folder.with_name(folder.name + ".blocker")
        blocker.write_text("not a folder\n")
        os.rename(folder, away)
        os.rename(blocker, folder)
        record.detail = "a file where the decision log's folder should be"

        def mend() -> None:
            folder.unlink()
            if folder.exists():  # a worker made the folder again meanwhile
                shutil.rmtree(folder)
            os.rename(away, folder)

        return mend

    # ---- an operator, mid-fault -------------------------------------------------------------

    async def controls(self, fault: PlannedFault, planned_at: float) -> None:
        """`docktor pause`, `docktor scale` while another part is down, then `docktor resume`
        once it is back, as an operator at a terminal would."""
        assert fault.companion is not None
        record = FaultRecord("controls", planned_at, time.time())
        record.detail = f"{fault.target}: pause, scale {fault.replicas}, during {fault.companion}"
        self.records.append(record)
        down = asyncio.Event()
        async with self.locks[RESOURCE[fault.companion]]:
            companion = asyncio.create_task(
                self.break_part(fault.companion, fault.companion_down_for, "", planned_at, down)
            )
            await down.wait()
            self.active.add("controls")
            pause = ("pause", fault.target, "--reason", "chaos")
            paused = await self.command(record, *pause) == 0
            scale = ("scale", fault.target, str(fault.replicas), "--hold", "60s")
            scaled = await self.command(record, *scale) == 0
            await companion
        deadline = time.monotonic() + RESUME_DEADLINE
        # Both refused while the part was down (Temporal unreachable, say): the operator tries
        # again once it is back, then resumes what was taken.
        if paused or scaled or await self.until_taken(record, fault, deadline, pause):
            await self.until_taken(record, fault, deadline, ("resume", fault.target))
        record.ended = time.time()
        self.active.discard("controls")

    async def until_taken(
        self, record: FaultRecord, fault: PlannedFault, deadline: float, args: tuple[str, ...]
    ) -> bool:
        """Run an operator's command until it is taken; past the deadline, a violation."""
        while True:
            if await self.command(record, *args) == 0:
                return True
            if time.monotonic() > deadline:
                self.violations.append(
                    Violation(
                        "operator_answered",
                        time.time(),
                        fault.target,
                        f"`docktor {args[0]}` not taken within {RESUME_DEADLINE:g}s of the "
                        f"{fault.companion} ending",
                    )
                )
                return False
            await asyncio.sleep(self.retry_every)

    async def command(self, record: FaultRecord, *args: str) -> int:
        env = {**os.environ, "DOCKTOR_CONFIG": str(self.stack.config_path)}
        env["PYTHONPATH"] = str(self.stack.options.code)
        env.pop("TEMPORAL_ADDRESS", None)
        began = time.time()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "docktor",
            args[0],
            *args[1:],
            "--timeout",
            f"{CONTROL_TIMEOUT:g}",
            cwd=self.stack.options.code,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        lines = output.decode(errors="replace").strip().splitlines()
        code = process.returncode if process.returncode is not None else -1
        record.commands.append(
            {
                "at": round(began, 3),
                "command": "docktor " + " ".join(args),
                "exit": code,
                "said": lines[-1][:300] if lines else "",
            }
        )
        return code
