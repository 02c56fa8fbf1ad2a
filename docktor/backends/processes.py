"""The `processes` backend: each replica is a local OS process running the service's command.

Replica n (1-based) runs `spec.command` in a small environment: PATH, HOME, LANG, LC_* and TZ
from the worker's (so the worker's secrets, an API key or a Redis password, stay in the worker),
then the service's `env`, then `DOCKTOR_REPLICA=n`, `DOCKTOR_SERVICE=<name>`, `DOCKTOR_PROJECT`
and `DOCKTOR_START_ID`. What runs is remembered in `<state_dir>/replica-<n>.pid`, so a worker
that restarts finds the replicas its predecessor started and can stop them. Each pid file also
holds a fingerprint of the process (boot id + start time), because a bare pid can belong to an
unrelated process after a reboot or a long time, and the replica's start id, which the process
must carry in its environment (/proc/<pid>/environ) before it is counted or signalled: a pid
file is only a claim, and docktor must never signal a stranger.

state_dir is private (docktor.private_files): created 0700, refused when others can write to
it, and every file in it is opened without following a symlink and created 0600.

A start is announced before it happens: `<state_dir>/replica-<n>.starting` holds a random start
id that the replica also gets in its environment (`DOCKTOR_START_ID`). A worker killed after
starting a replica but before writing its pid file leaves that intent behind; the next call
looks the start id up in /proc/<pid>/environ and adopts the replica instead of starting a second
replica n beside it (a scale_to is retried after a crash, and must find what the first attempt
started). Within one worker the per-state-dir lock keeps a reader from seeing an intent whose
start is still under way; a second worker process serving the same service could, in that
millisecond, take the intent for spent, which matters only if the first worker then dies too.

Output of replica n is appended to `<state_dir>/replica-<n>.log`. The replica holds that file
open for its whole life, so the worker rotates it copy-truncate style: whenever it looks at the
replicas (each observation and scale) a log over `log_max_bytes` is copied to `.log.1` (older
copies shift up to `.log.<log_backups>`) and truncated; the replica writes with O_APPEND, so its
next line lands at the new end. A line written between the copy and the truncation is lost, and
between two looks a log can outgrow the cap by what the replica writes in that time.

POSIX only (signals, sessions); the fingerprint reads /proc on Linux and falls back to `ps`
elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docktor import names
from docktor.backends.base import PerServiceBackend, ScalerConfigError
from docktor.plan import ServicePlan
from docktor.private_files import (
    UnsafePath,
    open_private,
    private_dir,
    read_private,
    write_private,
)
from docktor.spec import ServiceSpec

log = logging.getLogger(__name__)

PID_FILE_RE = re.compile(r"^replica-(\d+)\.pid$")
INTENT_FILE_RE = re.compile(r"^replica-(\d+)\.starting$")
# The environment variable that carries a replica's start id (see the module docstring).
START_ID_VAR = "DOCKTOR_START_ID"
# How often a stop checks whether the replica has gone; short enough that a 10 -> 1 scale-down
# returns promptly after the grace period, long enough to cost nothing.
POLL_INTERVAL = 0.05
# After SIGKILL the kernel needs a moment to tear the process down; past this, give up waiting
# (the pid file stays, so the next call looks again).
KILL_WAIT = 5.0
# How long an empty /proc/<pid>/environ is taken for an exec still under way (it takes well
# under a millisecond) before it counts as the process's real, empty environment.
EXEC_WAIT = 0.2
# `python` in a command means "the Python docktor runs on", so an example works from a venv
# without the venv being activated in the worker's shell.
PYTHON_NAMES = ("python", "python3")
# What a replica gets of the worker's environment (besides LC_*): enough to find programs and
# speak the locale, nothing that could hold a secret. The rest a replica needs is the service's
# `env`.
PASSED_ENV = ("PATH", "HOME", "LANG", "TZ")
# A pid or intent file docktor wrote is a few hundred bytes (the command line is the bulk);
# anything far bigger was not written by docktor and is not read whole into memory.
STATE_FILE_LIMIT = 1 << 20
# Replica logs: the size past which a log is rotated, and how many older copies are kept.
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 2

# The Popen objects of the replicas a backend started, by pid: whoever notices that a child has
# exited must be able to reap it, or it lingers as a zombie.
Children = dict[int, "subprocess.Popen[bytes]"]


# ---- process identity -----------------------------------------------------------------------


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc, None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or ')', so split
    # after the last ')': what follows starts at field 3 (state); field 22 (start time, in
    # clock ticks since boot) is then at index 19.
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], fields[19]


def _ps_stat(pid: int) -> tuple[str, str] | None:
    """The same from `ps`, where there is no /proc (macOS, BSD)."""
    result = subprocess.run(
        ["ps", "-o", "stat=,lstart=", "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    )
    line = result.stdout.strip()
    if result.returncode != 0 or not line:
        return None
    state, _, started = line.partition(" ")
    return state[:1], " ".join(started.split())


def _stat(pid: int) -> tuple[str, str] | None:
    if Path("/proc/self/stat").exists():
        return _proc_stat(pid)
    return _ps_stat(pid)


def fingerprint(pid: int) -> str | None:
    """What tells this process apart from a later one that reuses its pid; None if it is gone.

    The start time alone repeats across reboots (it counts from boot), hence the boot id."""
    stat = _stat(pid)
    if stat is None:
        return None
    return f"{_boot_id()}:{stat[1]}"


def _is_running(pid: int, expected: str, children: Children) -> bool:
    """True when pid exists, is not a zombie, and is the process the pid file describes."""
    child = children.get(pid)
    if child is not None:
        # Our own child: poll() reaps it once it has exited, and its pid cannot have been
        # reused while it was unreaped, so no fingerprint check is needed.
        if child.poll() is None:
            return True
        del children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Exists but belongs to another user: not a replica we started.
        return False
    stat = _stat(pid)
    if stat is None or stat[0] == "Z":
        # A zombie has exited; its parent (init, after the worker that started it went away)
        # reaps it when it gets round to it.
        return False
    return f"{_boot_id()}:{stat[1]}" == expected


def _find_started(start_id: str) -> int | None:
    """The live process whose environment carries this start id, None when there is none.

    The replica's own children inherit its environment, so the one that leads its process group
    (every replica starts a session of its own) is the replica. Linux only: without /proc a
    replica orphaned mid-start is not found (and a retry starts another)."""
    marker = f"{START_ID_VAR}={start_id}".encode()
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    for pid in found:
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid:
                return pid
    return None


def _environ(pid: int) -> set[bytes] | None:
    """The `NAME=value` entries of a process's environment, None when it cannot be read (gone,
    or another user's: not a replica of this worker either way)."""
    if Path("/proc/self/environ").exists():
        # A process whose exec is still under way shows an empty environment for a moment
        # (its parent's Popen may already have returned); a real replica never has one.
        deadline = time.monotonic() + EXEC_WAIT
        while True:
            try:
                raw = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                return None
            if raw or time.monotonic() >= deadline:
                return set(raw.split(b"\0"))
            time.sleep(0.001)
    # BSD and macOS: `ps e` prints the environment after the command, space-separated; a start
    # id is hex and the other markers hold no spaces, so whole tokens compare exactly.
    result = subprocess.run(
        ["ps", "eww", "-o", "command=", "-p", str(pid)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout.strip():
        return None
    return set(result.stdout.split())


# ---- pid files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PidRecord:
    """The contents of `replica-<n>.pid` (JSON)."""

    replica: int
    pid: int
    fingerprint: str
    command: list[str]
    started_at: float
    # The DOCKTOR_START_ID the replica was started with; None in a pid file from a release
    # that did not record it.
    start_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, replica: int, text: str) -> PidRecord:
        data: dict[str, Any] = json.loads(text)
        return cls(
            replica=replica,
            pid=int(data["pid"]),
            fingerprint=str(data["fingerprint"]),
            command=[str(a) for a in data.get("command", [])],
            started_at=float(data.get("started_at", 0.0)),
            start_id=str(data["start_id"]) if data.get("start_id") is not None else None,
        )


class ProcessesBackend(PerServiceBackend):
    """The `processes` backend as a worker holds it: one for the worker's life, owning the
    replicas it started (to reap them) and one lock per state dir, because the worker may run
    two activities for one service at once (observe while apply is stopping replicas) and both
    read and rewrite the same pid files."""

    def __init__(self) -> None:
        self.children: Children = {}
        # The environment each of `children` was started with, as `NAME=value` entries: what
        # /proc/<pid>/environ would say, known without reading it.
        self.child_environ: dict[int, frozenset[bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.log_max_bytes = LOG_MAX_BYTES
        self.log_backups = LOG_BACKUPS

    @staticmethod
    def check(spec: ServiceSpec) -> None:
        """Offline, while the config is read: a process needs a program to run."""
        if not spec.command:
            raise ValueError("command: required when backend is 'processes'")

    def service(self, spec: ServicePlan, project: str) -> ProcessScaler:
        return ProcessScaler(spec, project=project, backend=self)

    def lock_for(self, state_dir: Path) -> asyncio.Lock:
        return self._locks.setdefault(str(state_dir), asyncio.Lock())

    async def close(self) -> None:
        # The replicas outlive the worker (their pid files let the next one find them); only
        # reap the ones that have already exited.
        for pid, child in list(self.children.items()):
            if child.poll() is not None:
                del self.children[pid]
                self.child_environ.pop(pid, None)
        self._locks.clear()


class ProcessScaler:
    """One service's replicas as local processes. See the module docstring.

    Built by ProcessesBackend for each call; built alone (tools, tests), it has a backend of
    its own."""

    def __init__(
        self,
        spec: ServicePlan,
        project: str = names.DEFAULT_PROJECT,
        backend: ProcessesBackend | None = None,
    ) -> None:
        self.spec = spec
        self.project = project
        self.backend = backend or ProcessesBackend()
        self.children = self.backend.children
        base = Path(spec.workdir) if spec.workdir else Path.cwd()
        # The loader always fills state_dir in; a spec built by hand gets the loader's layout.
        state_dir = Path(spec.state_dir) if spec.state_dir else base / ".docktor" / spec.name
        self.state_dir = state_dir if state_dir.is_absolute() else (base / state_dir)

    # ---- one service's share of the Backend protocol -------------------------------------

    async def validate(self) -> None:
        self._program()
        self._ensure_state_dir()

    async def replicas(self) -> int:
        # Under the lock: the cleanup of stale pid files must not race a scale_to that is
        # writing a fresh pid file for the same replica number.
        async with self.backend.lock_for(self.state_dir):
            return len(self._live())

    async def scale_to(self, n: int) -> int:
        if n < 0:
            raise ValueError(f"replica count must be >= 0, not {n}")
        async with self.backend.lock_for(self.state_dir):
            live = self._live()
            if n > len(live):
                program = self._program()
                # Popen returns within milliseconds (after exec), so starts run inline rather
                # than in threads; only the stops below wait, and they wait concurrently.
                free = (i for i in range(1, n + len(live) + 1) if i not in live)
                for number in [next(free) for _ in range(n - len(live))]:
                    self._start(number, program)
            elif n < len(live):
                # The highest numbers go, so the survivors keep the low numbers and the
                # replica numbers stay dense (a scale-up refills gaps from the bottom).
                doomed = sorted(live)[n:]
                await asyncio.gather(*(self._stop(live[i]) for i in doomed))
            return len(self._live())

    async def stop_all(self) -> int:
        """Stop every replica of this service; returns how many were running."""
        async with self.backend.lock_for(self.state_dir):
            live = self._live()
            await asyncio.gather(*(self._stop(r) for r in live.values()))
            return len(live)

    # ---- helpers ----------------------------------------------------------------------------

    def _error(self, field: str, problem: str) -> ScalerConfigError:
        return ScalerConfigError(f"services.{self.spec.name}.{field}: {problem}")

    def _env(self, replica: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in PASSED_ENV or k.startswith("LC_")}
        env.setdefault("PATH", os.defpath)
        env.update(self.spec.env)
        env["DOCKTOR_SERVICE"] = self.spec.name
        env["DOCKTOR_PROJECT"] = self.project
        env["DOCKTOR_REPLICA"] = str(replica)
        return env

    def _program(self) -> str:
        """The absolute path of the program to run, or ScalerConfigError."""
        if not self.spec.command:
            raise self._error("command", "required when backend is 'processes'")
        name = self.spec.command[0]
        if name in PYTHON_NAMES:
            return sys.executable
        if os.sep in name or (os.altsep and os.altsep in name):
            path = Path(name)
            if not path.is_absolute() and self.spec.workdir:
                path = Path(self.spec.workdir) / path
            if not path.is_file():
                raise self._error("command", f"program '{name}' not found")
            if not os.access(path, os.X_OK):
                raise self._error("command", f"program '{name}' is not executable")
            return str(path)
        # Look the name up on the PATH the replica will get, which spec.env may change.
        found = shutil.which(name, path=self._env(0).get("PATH", os.defpath))
        if found is None:
            raise self._error("command", f"program '{name}' not found")
        return found

    def _ensure_state_dir(self) -> None:
        try:
            private_dir(self.state_dir)
        except UnsafePath as exc:
            raise self._error("state_dir", str(exc)) from None
        except OSError as exc:
            raise self._error(
                "state_dir", f"cannot create '{self.state_dir}' ({exc.strerror})"
            ) from None
        if not os.access(self.state_dir, os.W_OK | os.X_OK):
            raise self._error("state_dir", f"'{self.state_dir}' is not writable")

    def _pid_file(self, replica: int) -> Path:
        return self.state_dir / f"replica-{replica}.pid"

    def _intent_file(self, replica: int) -> Path:
        return self.state_dir / f"replica-{replica}.starting"

    def _log_file(self, replica: int) -> Path:
        return self.state_dir / f"replica-{replica}.log"

    def _write_pid_file(self, record: PidRecord) -> None:
        # Written then renamed, so a concurrent reader never sees half a pid file.
        write_private(self._pid_file(record.replica), record.to_json().encode())

    def _belongs(self, record: PidRecord) -> bool:
        """Whether the running process a pid file names is the replica it claims to be: its
        environment carries the start id, this service's name and the replica's number. (A pid
        file from a release that did not record the start id is judged by the other two.)"""
        claims = {f"DOCKTOR_SERVICE={self.spec.name}", f"DOCKTOR_REPLICA={record.replica}"}
        if record.start_id is not None:
            claims.add(f"{START_ID_VAR}={record.start_id}")
        environ = (
            self.backend.child_environ.get(record.pid) if record.pid in self.children else None
        )
        if environ is None:
            environ = _environ(record.pid)
        return environ is not None and {os.fsencode(claim) for claim in claims} <= environ

    def _rotate_log(self, replica: int) -> None:
        """Copy an oversized log to `.log.1` (shifting older copies up) and truncate it; the
        replica appends, so it carries on at the start of the emptied file."""
        path = self._log_file(replica)
        try:
            # lstat: a symlink is never followed, and its own size is small.
            if os.lstat(path).st_size <= self.backend.log_max_bytes:
                return
        except FileNotFoundError:
            return
        fd = open_private(path, os.O_RDWR)
        try:
            if self.backend.log_backups > 0:
                for older in range(self.backend.log_backups - 1, 0, -1):
                    source = _backup(path, older)
                    if os.path.lexists(source):
                        os.replace(source, _backup(path, older + 1))
                first = _backup(path, 1)
                first.unlink(missing_ok=True)
                copy = open_private(first, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                with open(fd, "rb", closefd=False) as source_file, open(copy, "wb") as out:
                    shutil.copyfileobj(source_file, out)
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def _rotate_logs(self, replicas: list[int]) -> None:
        for replica in replicas:
            try:
                self._rotate_log(replica)
            except OSError as exc:  # UnsafePath too
                # A log that cannot be rotated must not stop the loop from seeing its replicas.
                log.warning("cannot rotate the log of replica %d: %s", replica, exc)

    def _live(self) -> dict[int, PidRecord]:
        """Live replicas by number; pid files of dead or foreign processes are removed."""
        self._ensure_state_dir()
        for pid in set(self.backend.child_environ) - set(self.children):
            del self.backend.child_environ[pid]  # reaped meanwhile
        live: dict[int, PidRecord] = {}
        intents: dict[int, Path] = {}
        for path in self.state_dir.iterdir():
            if intent := INTENT_FILE_RE.match(path.name):
                intents[int(intent.group(1))] = path
                continue
            match = PID_FILE_RE.match(path.name)
            if not match:
                continue
            replica = int(match.group(1))
            try:
                record = PidRecord.from_json(replica, read_private(path, STATE_FILE_LIMIT).decode())
            except (OSError, ValueError, KeyError, TypeError):
                record = None
            if (
                record is not None
                and _is_running(record.pid, record.fingerprint, self.children)
                and self._belongs(record)
            ):
                live[replica] = record
            else:
                # Gone, garbage, or a process that is not this replica: forget the claim.
                path.unlink(missing_ok=True)
        for replica, path in intents.items():
            if replica not in live and (record := self._adopt(replica, path)) is not None:
                live[replica] = record
            # Adopted, or the start never happened (or died): either way the intent is spent.
            path.unlink(missing_ok=True)
        self._rotate_logs(sorted(live))
        return live

    def _adopt(self, replica: int, intent: Path) -> PidRecord | None:
        """The replica a killed worker started from this intent, now with its pid file."""
        try:
            data: dict[str, Any] = json.loads(read_private(intent, STATE_FILE_LIMIT))
            start_id = str(data["start_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        pid = _find_started(start_id)
        if pid is None:
            return None
        stamp = fingerprint(pid)
        if stamp is None or not _is_running(pid, stamp, self.children):
            return None
        record = PidRecord(
            replica=replica,
            pid=pid,
            fingerprint=stamp,
            command=[str(a) for a in data.get("command", [])],
            started_at=float(data.get("started_at", time.time())),
            start_id=start_id,
        )
        if not self._belongs(record):
            return None  # that start id, but not this service's replica of that number
        self._write_pid_file(record)
        return record

    def _start(self, replica: int, program: str) -> PidRecord:
        assert self.spec.command  # _program() checked it
        argv = [program, *self.spec.command[1:]]
        log_path = self._log_file(replica)
        # The intent first: a worker killed between the start and the pid file leaves this
        # behind, and the next call adopts the replica by its start id (see _live).
        start_id = uuid.uuid4().hex
        started_at = time.time()
        intent = self._intent_file(replica)
        write_private(
            intent,
            json.dumps({"start_id": start_id, "command": argv, "started_at": started_at}).encode(),
        )
        try:
            return self._spawn(replica, argv, log_path, start_id, started_at)
        finally:
            intent.unlink(missing_ok=True)

    def _spawn(
        self, replica: int, argv: list[str], log_path: Path, start_id: str, started_at: float
    ) -> PidRecord:
        self._rotate_logs([replica])
        try:
            # O_APPEND: the worker truncates the log when it rotates it, and the replica's next
            # write must then land at the new end, not at its old offset.
            fd = open_private(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        except UnsafePath as exc:
            raise self._error("state_dir", f"{exc}; refusing to write the replica's log") from None
        with open(fd, "ab") as log_file:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log_file.write(f"--- docktor: starting replica {replica} at {stamp}\n".encode())
            log_file.flush()
            try:
                env = {**self._env(replica), START_ID_VAR: start_id}
                child = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=self.spec.workdir or None,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    # Its own session: a Ctrl-C in the worker's terminal reaches the worker's
                    # process group only, so replicas are stopped by docktor, not behind its
                    # back; and the replica's own children share its group for killpg.
                    start_new_session=True,
                )
            except FileNotFoundError:
                raise self._error(
                    "command", f"program '{self.spec.command[0]}' not found"
                ) from None
            except PermissionError:
                raise self._error(
                    "command", f"program '{self.spec.command[0]}' is not executable"
                ) from None
        self.children[child.pid] = child
        self.backend.child_environ[child.pid] = frozenset(
            os.fsencode(f"{name}={value}") for name, value in env.items()
        )
        # Popen returns after exec, and the start time is fixed at fork, so this is stable.
        # A child that already exited is still unreaped here, so /proc still describes it.
        record = PidRecord(
            replica=replica,
            pid=child.pid,
            fingerprint=fingerprint(child.pid) or "gone",
            command=argv,
            started_at=started_at,
            start_id=start_id,
        )
        self._write_pid_file(record)
        return record

    async def _stop(self, record: PidRecord) -> None:
        """SIGTERM, up to stop_grace_period for a clean exit, then SIGKILL."""
        _signal_group(record.pid, signal.SIGTERM)
        if not await _wait_gone(record, self.spec.stop_grace_period, self.children):
            _signal_group(record.pid, signal.SIGKILL)
            await _wait_gone(record, KILL_WAIT, self.children)
        if not _is_running(record.pid, record.fingerprint, self.children):
            self._pid_file(record.replica).unlink(missing_ok=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The replica leads its own process group (start_new_session), so signal the group: a
    # replica that is a shell script takes its children with it.
    try:
        os.killpg(pid, sig)
        return
    except OSError:
        # No group of that id (the replica moved itself into another one): the process alone.
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


async def _wait_gone(record: PidRecord, timeout: float, children: Children) -> bool:
    """Poll until the replica has exited (reaping it if it is ours); False on timeout."""
    deadline = time.monotonic() + timeout
    while _is_running(record.pid, record.fingerprint, children):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_INTERVAL)
    return True


def _backup(log_path: Path, generation: int) -> Path:
    return log_path.with_name(f"{log_path.name}.{generation}")
