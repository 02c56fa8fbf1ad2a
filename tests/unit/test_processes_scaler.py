"""The processes backend, with real processes.

Each replica runs a small Python script that records what it saw (replica number, service,
cwd, interpreter, pid) in a file named after itself, then idles. Tests poll for conditions with
a deadline; every process a test starts is killed by the `scalers` fixture.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from docktor.backends import Backends, ScalerConfigError
from docktor.backends.processes import ProcessesBackend, ProcessScaler
from docktor.spec import ServiceSpec

# Installs its signal handling before announcing itself, so a test that has seen the
# announcement knows a SIGTERM will be handled (or ignored) as the test intends.
REPLICA_SCRIPT = """
import json, os, signal, sys, time
if sys.argv[2] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
seen = {
    "replica": os.environ["DOCKTOR_REPLICA"],
    "service": os.environ["DOCKTOR_SERVICE"],
    "cwd": os.getcwd(),
    "executable": sys.executable,
    "pid": os.getpid(),
}
out = os.path.join(sys.argv[1], "seen-%s-%d.json" % (seen["replica"], seen["pid"]))
with open(out + ".tmp", "w") as f:
    json.dump(seen, f)
os.replace(out + ".tmp", out)
while True:
    time.sleep(0.2)
"""


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, message: str = "") -> Any:
    """Poll an (a)sync predicate until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    """Exists and is not a zombie (adopted replicas may linger as zombies of init)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


class Replicas:
    """Builds specs and scalers for one test and remembers every pid it might have to kill."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.seen_dir = tmp_path / "seen"
        self.seen_dir.mkdir()
        self.workdir = tmp_path / "workdir"
        self.workdir.mkdir()
        self.state_dir = tmp_path / "state"
        self.extra_pids: list[int] = []
        # One backend, as a worker holds one for its life: its scalers share its locks and
        # the children it started.
        self.backend = ProcessesBackend()

    def spec(self, mode: str = "normal", grace: float = 5.0, **overrides: Any) -> ServiceSpec:
        fields: dict[str, Any] = {
            "name": "worker",
            "backend": "processes",
            # `python`, not sys.executable: the scaler must map it to the venv's interpreter.
            "command": ["python", "-c", REPLICA_SCRIPT, str(self.seen_dir), mode],
            "state_dir": str(self.state_dir),
            "workdir": str(self.workdir),
            "stop_grace_period": grace,
        }
        fields.update(overrides)
        return ServiceSpec(**fields)

    def scaler(self, mode: str = "normal", grace: float = 5.0, **overrides: Any) -> ProcessScaler:
        return self.backend.service(self.spec(mode, grace, **overrides), project="test")

    def seen(self) -> dict[int, dict[str, Any]]:
        """What each running-or-past replica recorded, by pid."""
        out: dict[int, dict[str, Any]] = {}
        for path in self.seen_dir.glob("seen-*.json"):
            data = json.loads(path.read_text())
            out[int(data["pid"])] = data
        return out

    def pid_files(self) -> dict[int, dict[str, Any]]:
        """Replica number -> pid file contents."""
        out: dict[int, dict[str, Any]] = {}
        for path in self.state_dir.glob("replica-*.pid"):
            out[int(path.stem.split("-")[1])] = json.loads(path.read_text())
        return out

    def live_by_replica(self) -> dict[int, int]:
        """Replica number -> pid, from the pid files, for processes that are alive."""
        return {n: rec["pid"] for n, rec in self.pid_files().items() if alive(rec["pid"])}

    def kill_everything(self) -> None:
        pids = set(self.seen()) | {r["pid"] for r in self.pid_files().values()}
        for pid in pids | set(self.extra_pids):
            if alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Replicas]:
    helper = Replicas(tmp_path)
    try:
        yield helper
    finally:
        helper.kill_everything()


async def wait_seen(helper: Replicas, pids: set[int] | list[int]) -> dict[int, dict[str, Any]]:
    """Wait until each of these pids has announced itself; returns their records."""
    await wait_for(lambda: set(pids) <= set(helper.seen()), message=f"replicas {pids} to start")
    seen = helper.seen()
    return {pid: seen[pid] for pid in pids}


async def test_scale_up_from_zero_starts_numbered_replicas(replicas: Replicas) -> None:
    scaler = replicas.scaler()
    assert await scaler.replicas() == 0

    assert await scaler.scale_to(3) == 3

    by_replica = replicas.live_by_replica()
    assert sorted(by_replica) == [1, 2, 3]
    seen = await wait_seen(replicas, set(by_replica.values()))
    for number, pid in by_replica.items():
        assert seen[pid]["replica"] == str(number)
        assert seen[pid]["service"] == "worker"
        assert seen[pid]["cwd"] == str(replicas.workdir)
        assert os.path.samefile(seen[pid]["executable"], sys.executable)
    assert await scaler.replicas() == 3
    for number in (1, 2, 3):
        assert (replicas.state_dir / f"replica-{number}.log").exists()
    await scaler.stop_all()


async def test_scale_to_is_idempotent(replicas: Replicas) -> None:
    scaler = replicas.scaler()
    assert await scaler.scale_to(3) == 3
    before = replicas.live_by_replica()

    assert await scaler.scale_to(3) == 3

    assert replicas.live_by_replica() == before
    await scaler.scale_to(0)


async def test_scale_down_stops_highest_numbers(replicas: Replicas) -> None:
    scaler = replicas.scaler()
    await scaler.scale_to(3)
    before = replicas.live_by_replica()
    await wait_seen(replicas, set(before.values()))

    assert await scaler.scale_to(1) == 1

    assert sorted(replicas.pid_files()) == [1]
    assert alive(before[1])
    assert not alive(before[2])
    assert not alive(before[3])
    assert await scaler.scale_to(0) == 0
    assert not alive(before[1])
    assert replicas.pid_files() == {}


async def test_dead_replica_is_noticed_and_replaced_with_the_same_number(
    replicas: Replicas,
) -> None:
    scaler = replicas.scaler()
    await scaler.scale_to(3)
    before = replicas.live_by_replica()

    os.kill(before[2], signal.SIGKILL)
    await wait_for(
        lambda: _count_is(scaler, 2), message="the killed replica to drop out of the count"
    )
    assert sorted(replicas.pid_files()) == [1, 3]

    assert await scaler.scale_to(3) == 3

    after = replicas.live_by_replica()
    assert after[1] == before[1] and after[3] == before[3]
    assert after[2] != before[2]
    seen = await wait_seen(replicas, [after[2]])
    assert seen[after[2]]["replica"] == "2"
    await scaler.scale_to(0)


async def _count_is(scaler: ProcessScaler, expected: int) -> bool:
    return await scaler.replicas() == expected


async def test_new_scaler_adopts_replicas_of_a_previous_worker(replicas: Replicas) -> None:
    # A real previous worker: another Python process starts two replicas and exits, so the
    # replicas are no children of this process and must be found through their pid files.
    spec = replicas.spec(grace=5.0)
    previous_worker = (
        "import asyncio, sys\n"
        "from docktor.spec import ServiceSpec\n"
        "from docktor.backends.processes import ProcessScaler\n"
        "spec = ServiceSpec.model_validate_json(sys.argv[1])\n"
        "print(asyncio.run(ProcessScaler(spec).scale_to(2)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", previous_worker, spec.model_dump_json()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
    adopted = replicas.live_by_replica()
    assert sorted(adopted) == [1, 2]
    await wait_seen(replicas, set(adopted.values()))

    scaler = ProcessScaler(spec)
    assert await scaler.replicas() == 2
    assert await scaler.scale_to(2) == 2
    assert replicas.live_by_replica() == adopted

    assert await scaler.scale_to(0) == 0
    for pid in adopted.values():
        assert not alive(pid)
    assert replicas.pid_files() == {}


async def test_replica_of_a_worker_killed_before_its_pid_file_is_adopted_not_doubled(
    replicas: Replicas,
) -> None:
    # A real worker SIGKILLed at the worst moment: its replica has started (Popen returned)
    # but no pid file says so yet. The retried scale must find that replica, not start a
    # second replica 1 beside it.
    spec = replicas.spec(grace=5.0)
    killed_worker = (
        "import asyncio, os, signal, subprocess, sys\n"
        "from docktor.spec import ServiceSpec\n"
        "from docktor.backends.processes import ProcessScaler\n"
        "class Popen(subprocess.Popen):\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        super().__init__(*args, **kwargs)\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "subprocess.Popen = Popen\n"
        "spec = ServiceSpec.model_validate_json(sys.argv[1])\n"
        "asyncio.run(ProcessScaler(spec).scale_to(1))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", killed_worker, spec.model_dump_json()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    orphan = await wait_for(lambda: list(replicas.seen()), message="the orphan to announce itself")
    assert len(orphan) == 1 and replicas.pid_files() == {}

    scaler = ProcessScaler(spec)
    assert await scaler.replicas() == 1
    assert await scaler.scale_to(1) == 1
    assert replicas.live_by_replica() == {1: orphan[0]}
    assert await scaler.scale_to(2) == 2
    live = replicas.live_by_replica()
    assert sorted(live) == [1, 2]
    await wait_seen(replicas, set(live.values()))
    # Only the new replica 2 started: one replica 1 ever ran.
    assert sorted(seen["replica"] for seen in replicas.seen().values()) == ["1", "2"]

    assert await scaler.scale_to(0) == 0
    assert not alive(orphan[0])


async def test_replica_ignoring_sigterm_is_killed_after_the_grace_period(
    replicas: Replicas,
) -> None:
    grace = 0.5
    scaler = replicas.scaler(mode="ignore-term", grace=grace)
    await scaler.scale_to(1)
    pid = replicas.live_by_replica()[1]
    # Only once it has announced itself has it installed SIG_IGN for SIGTERM.
    await wait_seen(replicas, [pid])

    started = time.monotonic()
    assert await scaler.scale_to(0) == 0
    elapsed = time.monotonic() - started

    assert elapsed >= grace
    assert not alive(pid)
    assert replicas.pid_files() == {}


async def test_stopping_several_replicas_that_ignore_sigterm(replicas: Replicas) -> None:
    # Four replicas that all sit out their grace period are all stopped (SIGKILL after it).
    # That the four stops overlap (one grace period, not four) is measured by
    # benchmarks/scale_down.py rather than asserted on the clock here.
    grace = 0.5
    scaler = replicas.scaler(mode="ignore-term", grace=grace)
    await scaler.scale_to(5)
    by_replica = replicas.live_by_replica()
    await wait_seen(replicas, set(by_replica.values()))

    assert await scaler.scale_to(1) == 1
    assert [n for n, pid in by_replica.items() if alive(pid)] == [1]
    await scaler.scale_to(0)


async def test_missing_program_is_a_config_error(replicas: Replicas) -> None:
    scaler = replicas.scaler(command=["docktor-no-such-program-xyz", "--flag"])

    with pytest.raises(ScalerConfigError) as caught:
        await scaler.validate()
    assert str(caught.value) == (
        "services.worker.command: program 'docktor-no-such-program-xyz' not found"
    )
    with pytest.raises(ScalerConfigError):
        await scaler.scale_to(1)

    missing_path = replicas.scaler(command=["./bin/nothing-here"])
    with pytest.raises(ScalerConfigError, match="program './bin/nothing-here' not found"):
        await missing_path.validate()


async def test_validate_accepts_a_good_spec_and_creates_the_state_dir(
    replicas: Replicas,
) -> None:
    scaler = replicas.scaler()
    await scaler.validate()
    assert replicas.state_dir.is_dir()

    blocker = replicas.tmp_path / "a-file"
    blocker.write_text("not a folder")
    blocked = replicas.scaler(state_dir=str(blocker / "state"))
    with pytest.raises(ScalerConfigError, match=r"^services\.worker\.state_dir: cannot create"):
        await blocked.validate()


async def test_negative_count_is_refused(replicas: Replicas) -> None:
    with pytest.raises(ValueError):
        await replicas.scaler().scale_to(-1)


async def test_pid_file_of_a_process_that_is_gone_is_cleaned(replicas: Replicas) -> None:
    # A pid that certainly does not exist now: a child that has exited and been reaped.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    replicas.state_dir.mkdir(parents=True)
    stale = replicas.state_dir / "replica-1.pid"
    stale.write_text(json.dumps({"pid": gone.pid, "fingerprint": "whatever"}))
    garbage = replicas.state_dir / "replica-2.pid"
    garbage.write_text("{not json")

    scaler = replicas.scaler()
    assert await scaler.replicas() == 0

    assert not stale.exists()
    assert not garbage.exists()


async def test_pid_file_whose_fingerprint_does_not_match_is_ignored_not_killed(
    replicas: Replicas,
) -> None:
    # A live process with the recorded pid but another identity stands for a pid reused after
    # a reboot: it is not ours, so it must be neither counted nor signalled.
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time\nwhile True: time.sleep(0.2)"],
        start_new_session=True,
    )
    replicas.extra_pids.append(stranger.pid)
    try:
        replicas.state_dir.mkdir(parents=True)
        pid_file = replicas.state_dir / "replica-1.pid"
        pid_file.write_text(json.dumps({"pid": stranger.pid, "fingerprint": "other-boot:123"}))

        scaler = replicas.scaler()
        assert await scaler.replicas() == 0
        assert not pid_file.exists()

        pid_file.write_text(json.dumps({"pid": stranger.pid, "fingerprint": "other-boot:123"}))
        assert await scaler.scale_to(0) == 0
        assert stranger.poll() is None, "a process docktor did not start was signalled"
        assert not pid_file.exists()
    finally:
        stranger.kill()
        stranger.wait()


async def test_concurrent_calls_for_one_service_do_not_overshoot(replicas: Replicas) -> None:
    # Two activities for the same service at once, through the worker's one backend.
    first, second = replicas.scaler(), replicas.scaler()

    results = await asyncio.gather(first.scale_to(2), second.scale_to(2), first.replicas())

    assert results[:2] == [2, 2]
    assert sorted(replicas.live_by_replica()) == [1, 2]
    assert await first.stop_all() == 2
    assert await second.replicas() == 0


async def test_the_worker_holds_one_processes_backend_from_its_entry_point(
    replicas: Replicas,
) -> None:
    backends = Backends()
    spec = replicas.spec()
    backend = backends.of(spec)
    assert isinstance(backend, ProcessesBackend)
    assert backends.of(spec) is backend
    assert await backend.scale_to(spec, "test", 1) == 1
    assert await backend.replicas(spec, "test") == 1
    assert await backend.scale_to(spec, "test", 0) == 0
    await backends.close()


async def test_program_from_path_logs_to_the_replica_log(replicas: Replicas) -> None:
    # A program found on PATH (not python), whose output goes to replica-<n>.log; the shell
    # execs sleep, so stopping the replica stops the process that prints nothing more.
    scaler = replicas.scaler(
        command=["sh", "-c", 'echo "hello from $DOCKTOR_SERVICE/$DOCKTOR_REPLICA"; exec sleep 60']
    )
    await scaler.validate()
    assert await scaler.scale_to(2) == 2
    log = replicas.state_dir / "replica-2.log"
    await wait_for(
        lambda: "hello from worker/2" in log.read_text(), message="replica 2 to write its log"
    )

    assert await scaler.stop_all() == 2
    assert await scaler.replicas() == 0
