"""The JSONL decision log: one line per decision, appended, never duplicated."""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from docktor.plan import ServicePlan
from docktor.policy.forecast import model as forecast
from docktor.policy.forecast import stage as predict
from docktor.values import Decision, Observation, WarmStart

# How much of the end of the log a warm start reads: the forecast keeps three days at most
# (forecast.RINGS), which at one decision every few seconds is tens of MB.
_SEED_BYTES = 64 * 1024 * 1024

# How far back from the end of the file to look for a decision already written, the first time
# this process opens the log. An activity retry re-appends the same decision within moments, so
# the tail is where a duplicate would be.
_TAIL_BYTES = 256 * 1024
# Keys remembered per log; far more than a retry window holds, bounded for a long-lived worker.
_MAX_KEYS = 20_000
_KEY = re.compile(rb'"decision_id"\s*:\s*"([^"]*)"')


@dataclass
class _Seen:
    """What this process has read of one log: the file it was (device, inode), how far, and the
    decision ids found. Each byte is read once, instead of the whole tail at every append
    (that cost a busy worker 18% of its CPU)."""

    file: tuple[int, int]
    offset: int
    keys: dict[str, None] = field(default_factory=dict)


_seen: dict[Path, _Seen] = {}
# Appends run in threads (asyncio.to_thread); one at a time per process keeps check-then-write
# whole. Another process appending meanwhile is caught up with on the next read.
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


def append_decision(path: str | Path, decision: Decision) -> bool:
    """Append the decision unless it is already in the log; True when a line was written."""
    journal = Path(path)
    journal.parent.mkdir(parents=True, exist_ok=True)
    key = decision_key(decision)
    line = json.dumps(decision_line(decision), separators=(",", ":")) + "\n"
    with _lock:
        if key in _recent_keys(journal):
            return False
        # One line per write() with O_APPEND, so concurrent loops never interleave lines (a
        # short write, e.g. on a nearly full disk, is finished by the next one).
        fd = os.open(journal, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = line.encode()
            if _torn_tail(fd):
                # The last write stopped mid-line (disk full, a crash): keep that fragment on
                # its own line, or it would swallow this decision too.
                data = b"\n" + data
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
    return True


def _torn_tail(fd: int) -> bool:
    """The log ends without a newline: an earlier write stopped mid-line."""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def read_decisions(path: str | Path) -> list[Decision]:
    return read_journal(path)[0]


def read_journal(path: str | Path) -> tuple[list[Decision], int]:
    """The log's decisions, oldest first, and how many lines could not be read: a line torn
    by a full disk or a crash mid-write, or edited by hand, is skipped, not fatal."""
    journal = Path(path)
    if not journal.exists():
        return [], 0
    decisions, unreadable = [], 0
    for raw in journal.read_text(encoding="utf-8", errors="replace").splitlines():
        if raw.strip():
            try:
                decisions.append(Decision.model_validate_json(raw))
            except ValidationError:
                unreadable += 1
    return decisions, unreadable


def _recent_keys(journal: Path) -> dict[str, None]:
    """The decision ids near the end of the log, read incrementally: only what was appended
    since the last call (by any process) is parsed. A log replaced or truncated (another inode,
    or shorter than what was read) is read again from its tail."""
    try:
        stat = journal.stat()
    except FileNotFoundError:
        _seen.pop(journal, None)
        return {}
    identity = (stat.st_dev, stat.st_ino)
    seen = _seen.get(journal)
    if seen is None or seen.file != identity or stat.st_size < seen.offset:
        seen = _seen[journal] = _Seen(identity, max(0, stat.st_size - _TAIL_BYTES))
    if stat.st_size > seen.offset:
        with journal.open("rb") as handle:
            handle.seek(seen.offset)
            chunk = handle.read(stat.st_size - seen.offset)
        # Up to the last complete line; a line being written is read whole next time.
        end = chunk.rfind(b"\n") + 1
        for match in _KEY.finditer(chunk, 0, end):
            seen.keys[match.group(1).decode("utf-8", errors="replace")] = None
        seen.offset += end
        if len(seen.keys) > _MAX_KEYS:
            for old in list(seen.keys)[: len(seen.keys) - _MAX_KEYS // 2]:
                del seen.keys[old]
    return seen.keys


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
    each decision's observations (rates included) and the replica count it saw, at its time.
    Decisions of another project's loop for a service of the same name (the same log) are left
    out by their workflow id; lines that do not parse, and decisions without observations (a
    hold for missing metrics, an operator's scale), are skipped."""
    journal = Path(path)
    if not journal.exists():
        return []
    with journal.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - _SEED_BYTES))
        text = handle.read().decode("utf-8", errors="replace")
    samples = []
    for raw in text.splitlines():
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
        if (
            sample.metrics
            and sample.taken_at.tzinfo is not None
            and since <= sample.taken_at <= until
        ):
            samples.append(sample)
    samples.sort(key=lambda sample: sample.taken_at)
    return samples
