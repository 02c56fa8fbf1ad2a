"""The JSONL decision log: one line per decision, appended, never duplicated, rotated by size.

A decision's line is the decision its loop's history keeps. A record that is retried with the
same content (an activity retry) writes nothing. One that comes again under the same key with
other content writes a line that supersedes the earlier one: a local activity runs again only
when the workflow task that ran it did not complete, so the earlier line is a decision that
history never kept (the retried task decided again, e.g. a scale-up where the lost task held).
Every reader keeps the last line of each key.

The log is the file the config names (`decisions.jsonl`) and, once it has grown past
ROTATE_BYTES, its older parts beside it: `decisions.jsonl.1` (the newest of them) to
`decisions.jsonl.{FILES - 1}`; the oldest is dropped. Readers stream lines across the files,
oldest first, and keep only what they were asked for.

The files are private to the worker's user (docktor.private_files): created 0600 (a folder
docktor creates, 0700), and never written through a symlink, a hard link or anything but a
regular file of the worker's user planted at the log's path. Such a file is refused as not
permitted (EPERM), a lasting error: the record activity fails at once and the loop reports the
gap, instead of retrying a write that cannot succeed.
"""

from __future__ import annotations

import fcntl
import heapq
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError

from docktor.plan import ServicePlan
from docktor.policy.forecast import model as forecast
from docktor.policy.forecast import stage as predict
from docktor.private_files import open_no_link, open_private, private_dir
from docktor.values import Decision, Observation, WarmStart

# A loop deciding every 4 s writes ~17 MB a day: the log is cut at this size and the last FILES
# files are kept (the current one included), ~50 MB per log at most.
ROTATE_BYTES = 10 * 1024 * 1024
FILES = 5

# How much of the end of the log a warm start reads: the forecast keeps three days at most
# (forecast.RINGS), which at one decision every few seconds is tens of MB.
_SEED_BYTES = 64 * 1024 * 1024

# How far back from the end of the log to look for a decision already written, the first time
# this process opens the log (or after it was rotated or replaced). An activity retry
# re-appends the same decision within moments, so the tail is where a duplicate would be.
_TAIL_BYTES = 256 * 1024
# Keys remembered per log; far more than a retry window holds, bounded for a long-lived worker.
_MAX_KEYS = 20_000
_KEY = re.compile(rb'"decision_id"\s*:\s*"([^"]*)"')

# What this process has seen written under each decision id: the digests of those lines. The
# same line again is a retry (nothing to write); another line under the same id supersedes.
Keys = dict[str, tuple[int, ...]]


@dataclass
class _Seen:
    """What this process has read of one log: the file it was (device, inode), how far, and the
    decision ids found with their lines' digests. Each byte is read once, instead of the whole
    tail at every append (that cost a busy worker 18% of its CPU)."""

    file: tuple[int, int]
    offset: int
    keys: Keys = field(default_factory=dict)


_seen: dict[Path, _Seen] = {}
# Appends run in threads (asyncio.to_thread); one at a time per process keeps check-then-write
# whole and guards _seen. Other processes on the host are kept out by the lock file (_locked).
_lock = threading.Lock()


def decision_key(decision: Decision) -> str:
    """What tells a retried write of a decision from a new one. The sequence restarts at 1 when
    a loop is stopped and started again under the same workflow id, so the chain's first run id
    is part of the key (decisions made before it was recorded keep their old key)."""
    if decision.first_run_id:
        return f"{decision.workflow_id}#{decision.first_run_id}#{decision.sequence}"
    return f"{decision.workflow_id}#{decision.sequence}"


def decision_line(decision: Decision) -> dict[str, object]:
    """The seed-compatible fields first, then what docktor adds."""
    data = decision.model_dump(mode="json")
    data["decision_id"] = decision_key(decision)
    return data


def append_decision(
    path: str | Path,
    decision: Decision,
    rotate_bytes: int | None = None,
    files: int | None = None,
) -> bool:
    """Append the decision unless this very line is already in the log; True when a line was
    written. Another line under the decision's key is superseded by this one (the module's
    docstring says why). A line that would take the file past `rotate_bytes` goes to a new file
    first (the current one becomes `.1`), keeping `files` files in all (default: ROTATE_BYTES
    and FILES)."""
    journal = Path(path)
    rotate_bytes = ROTATE_BYTES if rotate_bytes is None else rotate_bytes
    files = FILES if files is None else files
    private_dir(journal.parent, check=False)
    key = decision_key(decision)
    line = json.dumps(decision_line(decision), separators=(",", ":")).encode()
    data = line + b"\n"
    with _lock, _locked(journal, exclusive=True):
        keys = _recent_keys(journal)
        # Any line seen under the key, not only the last: a retry of a superseded write that
        # arrives late must not bring the superseded decision back.
        if _digest(line) in keys.get(key, ()):
            return False
        # One line per write() with O_APPEND, so lines never interleave even with a writer
        # that does not take the lock (a short write, e.g. on a nearly full disk, is finished
        # by the next one).
        fd = open_private(journal, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        try:
            size = os.fstat(fd).st_size
            if files > 1 and size > 0 and size + len(data) > rotate_bytes:
                os.close(fd)
                fd = -1
                _rotate(journal, files)
                fd = open_private(journal, os.O_RDWR | os.O_APPEND | os.O_CREAT)
                # Everything before was read under the lock: the keys carry over to the new file.
                _seen[journal] = _Seen(_identity(os.fstat(fd)), 0, keys)
            elif _torn_tail(fd, size):
                # The last write stopped mid-line (disk full, a crash): keep that fragment on
                # its own line, or it would swallow this decision too.
                data = b"\n" + data
            while data:
                data = data[os.write(fd, data) :]
        finally:
            if fd >= 0:
                os.close(fd)
    return True


@contextmanager
def _locked(journal: Path, exclusive: bool) -> Iterator[None]:
    """Hold the log's lock file (`decisions.jsonl.lock`, never rotated, so every process locks
    the same file): exclusive to check, rotate and append, shared to open the files for reading
    so that no rotation renames them in between. A reader that cannot open the lock file (it
    does not exist yet, or belongs to the worker's user) goes without: it reads a log that
    may shift under it, nothing worse."""
    lock_path = journal.with_name(journal.name + ".lock")
    try:
        if exclusive:
            fd = open_private(lock_path, os.O_RDWR | os.O_CREAT)
        else:
            fd = open_no_link(lock_path, os.O_RDONLY)
    except OSError:
        if exclusive:
            raise
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def rotated(journal: Path, index: int) -> Path:
    return journal.with_name(f"{journal.name}.{index}")


def _rotate(journal: Path, files: int) -> None:
    """`.1` to `.2` and so on, the current file to `.1`; what was `.{files - 1}` is dropped.
    Renames replace names, never follow them, so a symlink planted among the old files is only
    moved or removed."""
    for index in range(files - 1, 1, -1):
        with suppress(FileNotFoundError):
            os.replace(rotated(journal, index - 1), rotated(journal, index))
    os.replace(journal, rotated(journal, 1))


def _torn_tail(fd: int, size: int) -> bool:
    """The log ends without a newline: an earlier write stopped mid-line."""
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _identity(stat: os.stat_result) -> tuple[int, int]:
    return (stat.st_dev, stat.st_ino)


def _digest(line: bytes) -> int:
    """A line's fingerprint, compared only within this process (hash() of bytes is salted per
    process): 64 bits, so two different lines of one key never pass for a retry."""
    return hash(line.strip())


def journal_files(path: str | Path) -> list[Path]:
    """The log's files that exist, oldest first: `.N` ... `.1`, then the current one."""
    journal = Path(path)
    prefix = journal.name + "."
    try:
        names = os.listdir(journal.parent)
    except OSError:
        names = []
    numbers = sorted(
        (
            int(name[len(prefix) :])
            for name in names
            if name.startswith(prefix) and name[len(prefix) :].isdigit()
        ),
        reverse=True,
    )
    found = [rotated(journal, n) for n in numbers]
    if journal.exists():
        found.append(journal)
    return found


def read_decisions(path: str | Path) -> list[Decision]:
    return read_journal(path)[0]


def read_journal(path: str | Path) -> tuple[list[Decision], int]:
    """Every decision of the log, across its files, oldest first, and how many lines could not
    be read: a line torn by a full disk or a crash mid-write, or edited by hand, is skipped,
    not fatal. A decision written again under its key is the last line's, in that line's place.
    For tests and small logs; `latest_decisions` keeps only what it is asked for."""
    decisions: dict[str, Decision] = {}
    unreadable = 0
    for decision in _decisions(_lines(Path(path))):
        if decision is None:
            unreadable += 1
        else:
            key = decision_key(decision)
            decisions.pop(key, None)
            decisions[key] = decision
    return list(decisions.values()), unreadable


def decision_order(decision: Decision) -> tuple[datetime, str, int]:
    """How decisions of several loops are merged: by time, then service and sequence."""
    return (decision.timestamp, decision.service, decision.sequence)


def latest_decisions(
    path: str | Path, services: Iterable[str], tail: int, since: datetime | None = None
) -> tuple[list[Decision], int]:
    """The last `tail` decisions of these services (at or after `since`), in decision_order,
    read across the log's files line by line: only `tail` decisions are held at a time. Also how
    many lines could not be read.

    A decision written again under its key replaces the one held: the later line was made by a
    later workflow task, so it is later in time too and competes for a place as the earlier
    one did."""
    wanted = set(services)
    # A min-heap of the latest so far (the line's place breaks ties: the later one wins), and
    # the keys it holds.
    kept: list[tuple[tuple[datetime, str, int], int, str, Decision]] = []
    held: set[str] = set()
    unreadable = 0
    if tail <= 0:
        return [], 0
    for index, decision in enumerate(_decisions(_lines(Path(path)))):
        if decision is None:
            unreadable += 1
            continue
        if decision.service not in wanted or (since is not None and decision.timestamp < since):
            continue
        key = decision_key(decision)
        if key in held:  # rare (a task retried after its line was written): O(tail) is fine
            kept = [entry for entry in kept if entry[2] != key]
            heapq.heapify(kept)
            held.discard(key)
        entry = (decision_order(decision), index, key, decision)
        if len(kept) < tail:
            heapq.heappush(kept, entry)
            held.add(key)
        else:
            dropped = heapq.heappushpop(kept, entry)
            if dropped is not entry:
                held.discard(dropped[2])
                held.add(key)
    return [decision for _, _, _, decision in sorted(kept)], unreadable


def _decisions(lines: Iterable[bytes]) -> Iterator[Decision | None]:
    """Each non-blank line as a decision; None for one that does not parse."""
    for raw in lines:
        if raw.strip():
            try:
                yield Decision.model_validate_json(raw)
            except ValidationError:
                yield None


def _lines(journal: Path, last_bytes: int | None = None) -> Iterator[bytes]:
    """The log's lines across its files, oldest first; with `last_bytes`, only the whole lines
    within that many bytes of its end. The files are opened together under the shared lock, so
    a rotation meanwhile neither skips nor repeats one; then read as a stream."""
    with ExitStack() as stack:
        handles: list[tuple[BinaryIO, int]] = []
        with _locked(journal, exclusive=False):
            for path in journal_files(journal):
                try:
                    # Read by whoever asks (an operator's `docktor explain` too): only a link
                    # is refused.
                    fd = open_no_link(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                handle = stack.enter_context(os.fdopen(fd, "rb"))
                handles.append((handle, os.fstat(fd).st_size))
        budget = last_bytes
        start = [0] * len(handles)
        if budget is not None:
            # From the newest file back, until the budget is spent.
            for index in range(len(handles) - 1, -1, -1):
                size = handles[index][1]
                if budget <= 0:
                    start[index] = size
                elif size > budget:
                    start[index] = size - budget
                budget -= size
        for (handle, size), offset in zip(handles, start, strict=True):
            if offset >= size:
                continue
            if offset > 0:
                handle.seek(offset - 1)
                if handle.read(1) != b"\n":
                    handle.readline()  # the rest of a line cut by the budget
            yield from handle


def _recent_keys(journal: Path) -> Keys:
    """The decision ids near the end of the log, read incrementally: only what was appended
    since the last call (by any process) is parsed. A log rotated, replaced or truncated
    (another inode, or shorter than what was read) is read again from its tail, which reaches
    back into `.1` (and on) when the current file is shorter than the tail: a retry just after
    a rotation, by this worker or another, still finds its line."""
    try:
        stat = os.lstat(journal)
        identity, size = _identity(stat), stat.st_size
    except FileNotFoundError:  # not made yet, or moved to `.1` by a rotation that stopped there
        identity, size = (-1, -1), 0
    seen = _seen.get(journal)
    fresh = seen is None or seen.file != identity or size < seen.offset
    if fresh:
        seen = _seen[journal] = _Seen(identity, max(0, size - _TAIL_BYTES))
        _scan_rotated_keys(journal, _TAIL_BYTES - size, seen.keys)
    assert seen is not None
    if size > seen.offset:
        fd = open_private(journal, os.O_RDONLY)
        try:
            chunk = os.pread(fd, size - seen.offset, seen.offset)
            # A tail that starts mid-line: that line's end is no line (its digest would not
            # match a retry of it).
            skip = _cut_line(fd, seen.offset, chunk) if fresh else 0
        finally:
            os.close(fd)
        # Up to the last complete line; a line being written is read whole next time.
        end = chunk.rfind(b"\n") + 1
        _add_keys(chunk[skip:end], seen.keys)
        seen.offset += end
    if len(seen.keys) > _MAX_KEYS:
        for old in list(seen.keys)[: len(seen.keys) - _MAX_KEYS // 2]:
            del seen.keys[old]
    return seen.keys


def _scan_rotated_keys(journal: Path, budget: int, keys: Keys) -> None:
    """The decision ids in the last `budget` bytes of the rotated files (`.1`, then `.2` if
    `.1` is shorter, ...), added oldest first."""
    chunks = []
    index = 1
    while budget > 0:
        try:
            fd = open_private(rotated(journal, index), os.O_RDONLY)
        except FileNotFoundError:
            break
        try:
            size = os.fstat(fd).st_size
            start = max(0, size - budget)
            chunk = os.pread(fd, size - start, start)
            chunks.append(chunk[_cut_line(fd, start, chunk) :])
        finally:
            os.close(fd)
        budget -= size
        index += 1
    for chunk in reversed(chunks):
        _add_keys(chunk, keys)


def _cut_line(fd: int, start: int, chunk: bytes) -> int:
    """Where the first whole line of `chunk`, read from `start` of the file, begins."""
    if start == 0 or os.pread(fd, 1, start - 1) == b"\n":
        return 0
    return chunk.find(b"\n") + 1 or len(chunk)


def _add_keys(chunk: bytes, keys: Keys) -> None:
    """Each line's decision id and digest; a key seen again moves to the end (the newest)."""
    for line in chunk.split(b"\n"):
        match = _KEY.search(line)
        if match is None:
            continue
        key = match.group(1).decode("utf-8", errors="replace")
        digest = _digest(line)
        seen = keys.pop(key, ())
        keys[key] = seen if digest in seen else (*seen, digest)


def warm_start(path: str | Path, spec: ServicePlan, workflow_id: str, now: datetime) -> WarmStart:
    """What this loop's earlier decisions in the log tell a loop that starts without history:
    the forecast's rate history (queue.rate_in and time) and what one replica handles
    (estimated from the logged samples as the policy estimates it live). Empty when the log is
    missing or has none: a warm start is a head start, never a reason for an observation to
    fail."""
    span = max(step or spec.check_interval for step, _ in forecast.RINGS) * max(
        capacity for _, capacity in forecast.RINGS
    )
    try:
        samples = logged_samples(path, spec.name, workflow_id, now - timedelta(seconds=span), now)
    except OSError:
        samples = []
    return predict.learn_from_log(spec, samples)


def logged_samples(
    path: str | Path, service: str, workflow_id: str, since: datetime, until: datetime
) -> list[Observation]:
    """The samples behind the service's decisions between `since` and `until`, oldest first:
    each decision's observations (rates included) and the replica count it saw, at its time,
    from the last _SEED_BYTES of the log across its files. Decisions of another project's loop
    for a service of the same name (the same log) are left out by their workflow id; lines that
    do not parse, and decisions without observations (a hold for missing metrics, an
    operator's scale), are skipped; a decision written again counts once, as its last line."""
    # By decision id, so that a decision written again is the last line's sample, not two.
    samples: dict[object, Observation] = {}
    for index, raw in enumerate(_lines(Path(path), last_bytes=_SEED_BYTES)):
        try:
            line = json.loads(raw)
            if line.get("service") != service or line.get("workflow_id") not in ("", workflow_id):
                continue
            sample = Observation(
                taken_at=line["timestamp"],
                replicas=line["current_replicas"],
                metrics=line["observations"],
            )
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            continue
        key = line.get("decision_id") or index
        samples.pop(key, None)
        if (
            sample.metrics
            and sample.taken_at.tzinfo is not None
            and since <= sample.taken_at <= until
        ):
            samples[key] = sample
    return sorted(samples.values(), key=lambda sample: sample.taken_at)
