"""The decision log's files: rotated by size keeping a fixed number of files, appended to by
several processes at once without losing, repeating or tearing a line, private to the worker's
user, and read across the files oldest first."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from docktor import journal as journal_module
from docktor.journal import (
    append_decision,
    decision_key,
    decision_line,
    journal_files,
    latest_decisions,
    read_decisions,
    read_journal,
)
from docktor.values import Decision

START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def _decision(sequence: int, service: str = "consumer", workflow: str = "") -> Decision:
    return Decision(
        timestamp=START + timedelta(seconds=4 * sequence),
        service=service,
        action="hold",
        current_replicas=1,
        target_replicas=1,
        reason=f"decision {sequence}",
        workflow_id=workflow or f"docktor-shop-{service}",
        first_run_id="run-a",
        sequence=sequence,
    )


def _line_bytes() -> int:
    return len(json.dumps(decision_line(_decision(10)), separators=(",", ":"))) + 1


def _log_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def _run_python(code: str, *args: str) -> None:
    """`code` in another process, as another worker on the same host would run it."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        check=True,
        env=environment,
        timeout=120,
    )


# ---- rotation ---------------------------------------------------------------------------------


def test_the_log_rotates_at_its_size_and_keeps_its_files(tmp_path: Path) -> None:
    journal = tmp_path / "decisions.jsonl"
    for sequence in range(1, 41):
        assert append_decision(journal, _decision(sequence), rotate_bytes=1000, files=3)

    assert _log_files(tmp_path) == ["decisions.jsonl", "decisions.jsonl.1", "decisions.jsonl.2"]
    assert journal_files(journal) == [tmp_path / f"decisions.jsonl.{n}" for n in (2, 1)] + [journal]
    for name in _log_files(tmp_path):
        assert 0 < (tmp_path / name).stat().st_size <= 1000, name
    kept = [d.sequence for d in read_decisions(journal)]
    # The oldest file was dropped; what is kept is whole, in order, up to the last decision.
    assert kept[0] > 1 and kept == list(range(kept[0], 41))


def test_a_retry_after_a_rotation_is_not_written_again(tmp_path: Path) -> None:
    """A rotation between a decision's write and its retry (here made by another worker on the
    host, which this one learns of only from the files) leaves the line in `.1`: the retry
    finds it there."""
    journal = tmp_path / "decisions.jsonl"
    one_line = _line_bytes() + _line_bytes() // 2  # each file holds one decision
    assert append_decision(journal, _decision(1), rotate_bytes=one_line)
    _run_python(
        """
        import sys
        from datetime import datetime
        from docktor.journal import append_decision
        from docktor.values import Decision
        decision = Decision.model_validate_json(sys.argv[2])
        assert append_decision(sys.argv[1], decision, rotate_bytes=int(sys.argv[3]))
        """,
        str(journal),
        _decision(2).model_dump_json(),
        str(one_line),
    )
    assert (tmp_path / "decisions.jsonl.1").exists()

    assert not append_decision(journal, _decision(1), rotate_bytes=one_line)
    journal_module._seen.clear()  # a worker that starts now, with no memory of the log
    assert not append_decision(journal, _decision(1), rotate_bytes=one_line)
    assert not append_decision(journal, _decision(2), rotate_bytes=one_line)
    # This process rotates too, and still knows what it wrote before.
    assert append_decision(journal, _decision(3), rotate_bytes=one_line)
    assert not append_decision(journal, _decision(2), rotate_bytes=one_line)
    assert [d.sequence for d in read_decisions(journal)] == [1, 2, 3]


def test_workers_appending_at_once_lose_and_repeat_nothing(tmp_path: Path) -> None:
    """Three processes, each writing its loop's decisions twice (a retry each), into one log that
    rotates every few lines: every decision is in the files exactly once, every line whole, and
    no file past the size."""
    journal = tmp_path / "decisions.jsonl"
    writers, each, size = 3, 100, 4096
    code = """
        import sys
        from docktor.journal import append_decision
        from tests.unit.test_journal_files import _decision
        path, service, each, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        for sequence in range(1, each + 1):
            decision = _decision(sequence, service=service)
            assert append_decision(path, decision, rotate_bytes=size, files=10_000)
            assert not append_decision(path, decision, rotate_bytes=size, files=10_000)
        """
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)]
            + [str(journal), f"svc{n}", str(each), str(size)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for n in range(writers)
    ]
    for process in processes:
        assert process.wait(timeout=120) == 0

    decisions, unreadable = read_journal(journal)
    assert unreadable == 0
    keys = [decision_key(d) for d in decisions]
    assert len(keys) == len(set(keys)) == writers * each
    for n in range(writers):
        mine = [d.sequence for d in decisions if d.service == f"svc{n}"]
        assert mine == list(range(1, each + 1))  # oldest first, across the files
    assert len(journal_files(journal)) > 10
    for path in journal_files(journal):
        assert path.stat().st_size <= size, path


# ---- privacy ----------------------------------------------------------------------------------


def test_the_log_and_the_folders_made_for_it_are_private(tmp_path: Path) -> None:
    journal = tmp_path / "state" / "logs" / "decisions.jsonl"
    one_line = _line_bytes() + _line_bytes() // 2
    assert append_decision(journal, _decision(1), rotate_bytes=one_line)
    assert append_decision(journal, _decision(2), rotate_bytes=one_line)  # rotates

    for folder in (tmp_path / "state", tmp_path / "state" / "logs"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for path in (journal, journal.with_name("decisions.jsonl.1")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize("planted", ["decisions.jsonl", "decisions.jsonl.lock"])
def test_a_symlink_planted_at_the_log_is_refused(tmp_path: Path, planted: str) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("not the log's\n")
    (tmp_path / planted).symlink_to(target)

    with pytest.raises(OSError) as refused:
        append_decision(tmp_path / "decisions.jsonl", _decision(1))
    # Not permitted, a lasting error: the record activity does not retry it.
    assert refused.value.errno == errno.EPERM
    assert refused.value.strerror == "refused: it is a symbolic link"
    assert target.read_text() == "not the log's\n"


def _hard_link(path: Path, target: Path) -> None:
    os.link(target, path)


def _fifo(path: Path, target: Path) -> None:
    os.mkfifo(path)


def _another_users(path: Path, target: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    path.write_text("")
    os.chown(path, 4242, -1)


@pytest.mark.parametrize(
    ("planted", "why"),
    [
        (_hard_link, "has other names (hard links)"),
        (_fifo, "is not a regular file"),
        (_another_users, "belongs to another user (uid 4242)"),
    ],
    ids=["hard_link", "fifo", "another_users"],
)
def test_a_file_the_worker_did_not_make_is_refused_at_the_log(
    tmp_path: Path, planted: Callable[[Path, Path], None], why: str
) -> None:
    # A hard link writes into its other name as a symlink writes into its target; a FIFO
    # would hold the writer once its buffer is full.
    target = tmp_path / "elsewhere"
    target.write_text("not the log's\n")
    journal = tmp_path / "decisions.jsonl"
    planted(journal, target)

    with pytest.raises(OSError) as refused:
        append_decision(journal, _decision(1))
    assert refused.value.errno == errno.EPERM
    assert refused.value.strerror == f"refused: it {why}"
    assert target.read_text() == "not the log's\n"


# ---- reading across the files -----------------------------------------------------------------


def split_log(journal: Path, parts: int) -> None:
    """The log's lines spread over `parts` files as rotation leaves them: `.N` oldest."""
    lines = journal.read_bytes().splitlines(keepends=True)
    step = -(-len(lines) // parts)
    chunks = [lines[i : i + step] for i in range(0, len(lines), step)]
    for index, chunk in enumerate(chunks):
        older = len(chunks) - 1 - index
        target = journal.with_name(f"{journal.name}.{older}") if older else journal
        target.write_bytes(b"".join(chunk))


def test_decisions_are_read_across_the_files_oldest_first(tmp_path: Path) -> None:
    journal = tmp_path / "decisions.jsonl"
    for sequence in range(1, 31):
        append_decision(journal, _decision(sequence))
        append_decision(journal, _decision(sequence, service="api"))
    split_log(journal, 3)
    assert len(journal_files(journal)) == 3

    assert [d.sequence for d in read_decisions(journal)] == [
        n for n in range(1, 31) for _ in range(2)
    ]
    latest, unreadable = latest_decisions(journal, ["consumer"], tail=25)
    assert unreadable == 0
    assert [d.sequence for d in latest] == list(range(6, 31))
    since = START + timedelta(seconds=4 * 28)
    both, _ = latest_decisions(journal, ["consumer", "api"], tail=100, since=since)
    assert [(d.sequence, d.service) for d in both] == [
        (n, name) for n in (28, 29, 30) for name in ("api", "consumer")
    ]
    assert latest_decisions(journal, ["consumer"], tail=0) == ([], 0)
