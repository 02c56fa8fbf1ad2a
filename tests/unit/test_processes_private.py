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

from tests.unit.test_processes_scaler import Replicas, wait_for

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
