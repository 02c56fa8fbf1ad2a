"""The processes backend keeps the worker's secrets and its state_dir to itself: replicas get a
small environment, state_dir is private, a pid file is a claim checked against the process, a
planted symlink is never written through, and replica logs are rotated. Real replicas, started
by the real backend; every process a test starts is killed at its end."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from docktor.backends import ScalerConfigError
from docktor.backends.processes import ProcessScaler, fingerprint
from tests.unit.test_processes_scaler import Replicas, alive, wait_for

# Writes its whole environment to <folder>/env-<replica>.json, then idles.
ENV_SCRIPT = """
import json, os, sys, time
out = os.path.join(sys.argv[1], "env-%s.json" % os.environ["DOCKTOR_REPLICA"])
with open(out + ".tmp", "w") as f:
    json.dump(dict(os.environ), f)
os.replace(out + ".tmp", out)
while True:
    time.sleep(0.2)
"""

# Writes 3000 bytes of one letter for each go-<k> file that appears in <folder> (k = 0, 1, ...)
# then says so with done-<k>: the test decides when the log grows.
CHATTY_SCRIPT = """
import os, sys, time
folder, phase = sys.argv[1], 0
while True:
    if os.path.exists(os.path.join(folder, "go-%d" % phase)):
        sys.stdout.write(chr(ord("a") + phase) * 2999 + "\\n")
        sys.stdout.flush()
        open(os.path.join(folder, "done-%d" % phase), "w").close()
        phase += 1
    time.sleep(0.02)
"""


@pytest.fixture
def helper(tmp_path: Path) -> Iterator[Replicas]:
    replicas = Replicas(tmp_path)
    try:
        yield replicas
    finally:
        replicas.kill_everything()


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process of the same user, leading a group of its own as a replica would."""
    process = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_replica_sees_none_of_the_workers_secrets(
    helper: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-worker-only")
    monkeypatch.setenv("REDIS_PASSWORD", "redis-worker-only")
    monkeypatch.setenv("LC_TIME", "C")
    monkeypatch.setenv("TZ", "UTC")
    scaler = helper.scaler(
        command=["python", "-c", ENV_SCRIPT, str(helper.seen_dir)], env={"QUEUE": "jobs"}
    )

    assert await scaler.scale_to(1) == 1

    out = helper.seen_dir / "env-1.json"
    await wait_for(out.exists, message="the replica to write its environment")
    env = json.loads(out.read_text())
    assert "OPENAI_API_KEY" not in env
    assert "REDIS_PASSWORD" not in env
    assert env["QUEUE"] == "jobs"
    assert env["PATH"] == os.environ["PATH"]
    assert env["LC_TIME"] == "C" and env["TZ"] == "UTC"
    assert env["DOCKTOR_REPLICA"] == "1" and env["DOCKTOR_SERVICE"] == "worker"
    docktor_set = {"DOCKTOR_REPLICA", "DOCKTOR_SERVICE", "DOCKTOR_PROJECT", "DOCKTOR_START_ID"}
    passed = {"PATH", "HOME", "LANG", "TZ", "QUEUE"} | docktor_set
    assert {k for k in env if not k.startswith("LC_")} <= passed
    assert await scaler.scale_to(0) == 0


async def test_a_forged_pid_file_is_neither_counted_nor_signalled(
    helper: Replicas, stranger: subprocess.Popen[bytes]
) -> None:
    scaler = helper.scaler()
    assert await scaler.scale_to(1) == 1
    # A forger who can compute the stranger's fingerprint (boot id + start time) claims it as
    # replica 2, once with a start id and once in the older form without one.
    stamp = fingerprint(stranger.pid)
    assert stamp is not None
    forged = helper.state_dir / "replica-2.pid"
    for claim in ({"start_id": "f" * 32}, {}):
        forged.write_text(json.dumps({"pid": stranger.pid, "fingerprint": stamp, **claim}))

        assert await scaler.replicas() == 1
        assert not forged.exists()

        forged.write_text(json.dumps({"pid": stranger.pid, "fingerprint": stamp, **claim}))
        assert await scaler.scale_to(0) == 0
        assert stranger.poll() is None, "a process docktor did not start was signalled"
        assert await scaler.scale_to(1) == 1
    assert await scaler.scale_to(0) == 0


async def test_a_pid_file_copied_from_another_service_is_not_this_services_replica(
    helper: Replicas,
) -> None:
    # The same worker runs both services, so the other one's replica is a child it started.
    other = helper.scaler(name="other", state_dir=str(helper.tmp_path / "other-state"))
    mine = helper.scaler()
    assert await other.scale_to(1) == 1
    theirs = helper.tmp_path / "other-state" / "replica-1.pid"
    (helper.state_dir).mkdir(mode=0o700)
    (helper.state_dir / "replica-1.pid").write_bytes(theirs.read_bytes())

    assert await mine.scale_to(0) == 0

    assert await other.replicas() == 1
    assert alive(json.loads(theirs.read_text())["pid"])
    assert await other.scale_to(0) == 0


async def test_a_replica_started_by_another_worker_is_still_adopted_and_stopped(
    helper: Replicas,
) -> None:
    # Through /proc/<pid>/environ, not the backend's memory of its own children.
    spec = helper.spec()
    assert await ProcessScaler(spec).scale_to(2) == 2
    pids = helper.live_by_replica()
    # A pid file an older release wrote: no start id in it.
    legacy = helper.state_dir / "replica-2.pid"
    record = json.loads(legacy.read_text())
    del record["start_id"]
    legacy.write_text(json.dumps(record))

    later = ProcessScaler(spec)
    assert await later.replicas() == 2
    assert await later.scale_to(0) == 0
    assert not any(alive(pid) for pid in pids.values())


async def test_the_state_dir_and_its_files_are_private(helper: Replicas) -> None:
    helper.state_dir = helper.tmp_path / "new" / "state"
    scaler = helper.scaler()

    assert await scaler.scale_to(1) == 1

    assert _mode(helper.state_dir) == 0o700
    assert _mode(helper.state_dir.parent) == 0o700
    for name in ("replica-1.pid", "replica-1.log"):
        assert _mode(helper.state_dir / name) == 0o600, name
    assert await scaler.scale_to(0) == 0


async def test_a_state_dir_others_can_write_to_is_refused(helper: Replicas) -> None:
    helper.state_dir.mkdir()
    helper.state_dir.chmod(0o777)
    scaler = helper.scaler()

    with pytest.raises(ScalerConfigError) as caught:
        await scaler.validate()
    assert str(caught.value) == (
        f"services.worker.state_dir: '{helper.state_dir}' is writable by other users "
        "(mode 0777); chmod 700 it"
    )
    with pytest.raises(ScalerConfigError):
        await scaler.scale_to(1)
    assert helper.seen() == {}
    assert list(helper.state_dir.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder away takes root")
async def test_a_state_dir_of_another_user_is_refused(helper: Replicas) -> None:
    helper.state_dir.mkdir(mode=0o700)
    os.chown(helper.state_dir, 65534, 65534)

    with pytest.raises(ScalerConfigError) as caught:
        await helper.scaler().validate()
    assert str(caught.value) == (
        f"services.worker.state_dir: '{helper.state_dir}' belongs to another user (uid 65534)"
    )


async def test_a_planted_log_symlink_is_not_written_through(helper: Replicas) -> None:
    target = helper.tmp_path / "precious"
    target.write_text("precious\n")
    scaler = helper.scaler()
    await scaler.validate()
    (helper.state_dir / "replica-1.log").symlink_to(target)

    with pytest.raises(ScalerConfigError) as caught:
        await scaler.scale_to(1)

    assert str(caught.value) == (
        f"services.worker.state_dir: '{helper.state_dir / 'replica-1.log'}' is a symbolic "
        "link; refusing to write the replica's log"
    )
    assert target.read_text() == "precious\n"
    assert await scaler.replicas() == 0
    assert helper.seen() == {}


async def test_planted_temporary_file_symlinks_are_replaced_not_written_through(
    helper: Replicas,
) -> None:
    target = helper.tmp_path / "precious"
    target.write_text("precious\n")
    scaler = helper.scaler()
    await scaler.validate()
    for name in ("replica-1.pid.tmp", "replica-1.starting.tmp"):
        (helper.state_dir / name).symlink_to(target)

    assert await scaler.scale_to(1) == 1

    assert target.read_text() == "precious\n"
    assert not (helper.state_dir / "replica-1.pid").is_symlink()
    assert await scaler.scale_to(0) == 0


async def test_replica_logs_are_rotated_and_the_replica_writes_on_at_the_start(
    helper: Replicas,
) -> None:
    signals = helper.tmp_path / "signals"
    signals.mkdir()
    helper.backend.log_max_bytes = 2000
    helper.backend.log_backups = 2
    scaler = helper.scaler(command=["python", "-c", CHATTY_SCRIPT, str(signals)])
    assert await scaler.scale_to(1) == 1
    log = helper.state_dir / "replica-1.log"

    contents = []
    for phase, letter in enumerate("abcd"):
        (signals / f"go-{phase}").touch()
        await wait_for((signals / f"done-{phase}").exists, message=f"phase {phase} written")
        # The log is over the cap now; the next look at the replicas rotates it.
        assert await scaler.replicas() == 1
        assert log.stat().st_size == 0
        rotated = (helper.state_dir / "replica-1.log.1").read_text()
        # After the first rotation the replica wrote at the start of the truncated file (the
        # first log also holds docktor's start line), not at its old offset behind a hole.
        if phase:
            assert rotated == letter * 2999 + "\n"
        else:
            assert rotated.endswith("a" * 2999 + "\n")
        contents.append(rotated)

    assert (helper.state_dir / "replica-1.log.2").read_text() == contents[-2]
    assert not (helper.state_dir / "replica-1.log.3").exists()
    assert _mode(helper.state_dir / "replica-1.log.1") == 0o600
    assert await scaler.scale_to(0) == 0
