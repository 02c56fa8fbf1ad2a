"""The JSONL decision log cannot be written: its folder is a file (what an unwritable folder is
to root, who ignores permissions), its disk is full (a tiny tmpfs, filled), or a symlink is
planted at its path (refused, never followed). The loop goes on at its own pace, every decision
(an operator's scale among them) stays in the workflow's state and history, the gap is reported
once (one warning line, `status.journal_error`), and once the file can be written again the
decisions of the gap are written to it from the loop's state, in order, before the next one,
and one line says so."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from helpers import assert_gapless, async_wait_for, run_docktor, serving_loops
from temporalio.api.history.v1 import HistoryEvent

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.dev.embedded import EmbeddedTemporal
from docktor.journal import read_decisions
from docktor.spec import load_config
from docktor.values import Decision

IDLE = ["sleep", "600"]
# Decisions while the log is broken: several iterations, each of which could have warned.
BROKEN_FOR = 6

Breakage = tuple[Path, Callable[[], None]]  # the journal path, and how to mend it


def folder_is_a_file(tmp_path: Path) -> Iterator[Breakage]:
    blocker = tmp_path / "journal"
    blocker.write_text("not a folder\n")
    yield blocker / "decisions.jsonl", blocker.unlink


def disk_full(tmp_path: Path) -> Iterator[Breakage]:
    mount = tmp_path / "full"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        filler = mount / "filler"
        # Unbuffered, so the write that finds the disk full is this loop's, not a close's.
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
        yield mount / "decisions.jsonl", filler.unlink
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def symlink_planted(tmp_path: Path) -> Iterator[Breakage]:
    # A link at the log's path to a file the worker could write: refused, never written through.
    target = tmp_path / "elsewhere"
    target.write_text("")
    journal = tmp_path / "decisions.jsonl"
    journal.symlink_to(target)
    yield journal, journal.unlink
    assert target.read_text() == ""


BREAKAGES = {
    "folder_is_a_file": folder_is_a_file,
    "disk_full": disk_full,
    "symlink_planted": symlink_planted,
}


@pytest.fixture(params=sorted(BREAKAGES))
def breakage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Breakage]:
    yield from BREAKAGES[request.param](tmp_path)


async def test_unwritable_journal_the_loop_goes_on_and_the_gap_is_reported_once(
    tmp_path: Path,
    temporal_dev: EmbeddedTemporal,
    breakage: Breakage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal, mend = breakage
    tag = uuid.uuid4().hex[:6]
    document = {
        "project": f"journal-{tag}",
        "state_dir": str(tmp_path / "state"),
        "journal": str(journal),
        "temporal": {"address": temporal_dev.address, "task_queue": f"docktor-journal-{tag}"},
        "services": [
            {
                "name": "consumer",
                "backend": "processes",
                "command": IDLE,
                "min_replicas": 1,
                "max_replicas": 2,
                "check_interval": "500ms",
            }
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    service = config.services[0]
    caplog.set_level(logging.WARNING)

    async def decisions() -> list[Decision]:
        return await LoopClient(client, config).decisions(service.name, tail=1000)

    try:
        async with serving_loops(config) as client:
            await LoopClient(client, config).start(service)

            async def made(count: int) -> bool:
                return len(await decisions()) >= count

            # No retries wait on a write that cannot succeed: half-second ticks stay short.
            await async_wait_for(lambda: made(BROKEN_FOR), 20, f"{BROKEN_FOR} decisions")
            status = await LoopClient(client, config).status(service.name)
            assert status.journal_error is not None
            assert status.journal_error.startswith("decisions from 1 on not written: cannot write")
            assert status.replicas == 1
            # ... and what an operator sees: `docktor status` says it before the last reason.
            shown = await run_docktor(path, "status")
            assert shown.returncode == 0, shown.stderr
            assert "decision log not written: decisions from 1 on not written" in shown.stdout
            row = json.loads((await run_docktor(path, "status", "--json")).stdout)[0]
            assert row["journal_error"].startswith("decisions from 1 on not written")
            assert not journal.exists() or not journal.read_text().strip()
            gap_warnings = [r for r in caplog.records if "not written from decision" in r.message]
            assert len(gap_warnings) == 1, [
                (r.created, r.name, r.message[-200:]) for r in gap_warnings
            ]
            assert "Traceback" not in caplog.text

            # An operator's scale while the log is broken: the CLI says it was recorded.
            scaled = await run_docktor(path, "scale", service.name, "2", "--reason", "outage")
            assert scaled.returncode == 0, scaled.stderr
            assert "recorded as a manual decision" in scaled.stdout
            manual = (await decisions())[-1]
            assert manual.action == "manual" and manual.target_replicas == 2
            # ... and the loop decides on after it, still unwritten.
            await async_wait_for(lambda: made(manual.sequence + 2), 20, "decisions after it")
            assert not journal.exists() or not journal.read_text().strip()

            mend()
            await async_wait_for(lambda: _nonempty(journal), 20, "the log written again")
            status = await LoopClient(client, config).status(service.name)
            assert status.journal_error is None
            await LoopClient(client, config).stop(service.name, timeout=30)

            handle = client.get_workflow_handle(config.workflow_id(service.name))
            kept = await handle.query("decisions", 1000, result_type=list[Decision])
            # Every decision, the unwritten ones too, was handed to a record activity (a hold's
            # is a local activity, seen in history as its marker), and is in the workflow's
            # state.
            scheduled = [
                event
                async for event in handle.fetch_history_events()
                if event.activity_task_scheduled_event_attributes.activity_type.name == "record"
                or _local_activity_type(event) == "record"
            ]
    finally:
        await ProcessScaler(service, project=config.project or "").stop_all()

    assert_gapless([d.sequence for d in kept], "decisions in the workflow's state")
    assert len(scheduled) == len(kept)
    # Every decision reached the log, those of the broken window too, in order, once each,
    # as the loop's history has them.
    written = read_decisions(journal)
    assert written == kept
    raw = [line for line in journal.read_text().splitlines() if line.strip()]
    assert len(raw) == len(kept)
    assert [d.sequence for d in written if d.action == "manual"] == [manual.sequence]
    reopened = [r.message for r in caplog.records if "writable again; decisions" in r.message]
    assert len(reopened) == 1, reopened
    found = re.match(
        f"decision log {re.escape(str(journal))} writable again; decisions 1 to (\\d+), missed "
        "while it was not, written to it now, in order, from the loop's state",
        reopened[0],
    )
    assert found, reopened[0]
    assert int(found.group(1)) > manual.sequence + 1


async def _nonempty(path: Path) -> bool:
    return path.exists() and bool(path.read_text().strip())


def _local_activity_type(event: HistoryEvent) -> str | None:
    """The activity type a local activity's marker names (the SDK core's marker layout)."""
    marker = event.marker_recorded_event_attributes
    if marker.marker_name != "core_local_activity" or "data" not in marker.details:
        return None
    return json.loads(marker.details["data"].payloads[0].data).get("activity_type")
