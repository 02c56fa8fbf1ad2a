"""What an operator sees in the Temporal Web UI: a real headless Chromium (Debian's package) opens
the workflow list filtered by DocktorService="consumer" and a loop's event history, and must find
the service and the summary of a scaling step on the rendered page. Screenshots are saved.

Chromium is driven through the DevTools protocol over a pipe (--remote-debugging-pipe), with
the standard library only. `--dump-dom --virtual-time-budget` is not enough here: the history
page of a running workflow long-polls the server, virtual time never runs out, and the dump
never comes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import IDLE_COMMAND, async_wait_for, wait_for
from temporalio.client import Client

from activities import LoopActivities
from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.client.temporal import connect
from docktor.dev.embedded import EmbeddedTemporal
from docktor.loop.authority import WorkerConfig
from docktor.loop.worker import build_worker
from docktor.spec import DocktorConfig, load_config

CHROMIUM = "/usr/bin/chromium"
# As root (CI, these machines) Chromium needs --no-sandbox; the rest keeps it off the network
# and quiet (see ../shared/ENVIRONMENT.md).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
]
# The workflow list shows no search attributes by default; the UI keeps its column choice in
# localStorage under this key (UI 2.54), per namespace. Set as a user would with "Configure
# columns", so the screenshot shows what an operator can have.
COLUMNS_KEY = "namespace-workflow-table-columns"
COLUMNS = [
    "Status",
    "Workflow ID",
    "DocktorService",
    "DocktorReplicas",
    "DocktorLastAction",
    "DocktorPaused",
    "DocktorProject",
    "Start",
]


class Browser:
    """Just enough of the DevTools protocol: one page, navigate, read text, screenshot.

    Messages are JSON, each ended by a NUL byte; Chromium reads commands from fd 3 and writes
    replies and events to fd 4."""

    def __init__(self, profile: Path, width: int = 1800, height: int = 1000) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def as_fds_3_and_4() -> None:
            # Duplicate first: the pipe ends themselves may be numbered 3 or 4.
            read_end, write_end = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(read_end, 3, inheritable=True)
            os.dup2(write_end, 4, inheritable=True)

        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=as_fds_3_and_4,  # runs before close_fds, which then keeps pass_fds
            pass_fds=(3, 4),
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        # Where a failed wait saves a picture of the page (set by the test).
        self.failure_shots: Path | None = None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if getattr(self, "_session", None):
            message["sessionId"] = self._session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline, method)
            if reply.get("id") != self._next_id:
                continue  # an event, or a reply to nobody
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply.get("result", {})

    def _read(self, deadline: float, method: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_chrome], [], [], max(left, 0))
            if not ready:
                raise TimeoutError(f"Chromium did not answer {method}")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.process.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, *needles: str, timeout: float = 30) -> str:
        """The page's visible text once it holds every needle (the SPA renders after fetching)."""

        def shown() -> str | None:
            text = self.text()
            return text if all(n in text for n in needles) else None

        try:
            return str(wait_for(shown, timeout, f"{needles} on the page"))
        except AssertionError:
            # What the page showed instead, for whoever reads the failure.
            if self.failure_shots is not None:
                shot = self.screenshot(self.failure_shots / f"failed-{len(needles)}-{id(self)}.png")
                print(f"screenshot of the failure: {shot}")
            print("page text:\n" + self.text()[-3000:])
            raise

    def scroll_to_text(self, needle: str) -> bool:
        script = """(needle => {
            const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
            while (walker.nextNode()) {
                if (walker.currentNode.textContent.includes(needle)) {
                    const element = walker.currentNode.parentElement;
                    element.scrollIntoView({block: "center"});
                    // Vertically only: keep the table's left edge (the event names) in view.
                    for (let e = element; e; e = e.parentElement) e.scrollLeft = 0;
                    return true;
                }
            }
            return false;
        })"""
        return bool(self.evaluate(f"{script}({json.dumps(needle)})"))

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def close(self) -> None:
        # Chromium may already be gone; the wait below settles it either way.
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close", timeout=5)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"no {CHROMIUM} on this CI machine: scripts/install-test-deps.sh adds it")
        pytest.skip(f"no {CHROMIUM} (Debian's chromium package) here")
    profile = Path(tempfile.mkdtemp(prefix="docktor-chromium-"))
    chromium = Browser(profile)
    try:
        yield chromium
    finally:
        chromium.close()
        shutil.rmtree(profile, ignore_errors=True)


def write_config(tmp_path: Path, temporal: EmbeddedTemporal, tag: str) -> Path:
    config = {
        "project": f"webui-{tag}",
        "state_dir": str(tmp_path / "state"),
        "temporal": {"address": temporal.address, "task_queue": f"docktor-webui-{tag}"},
        "services": [
            {
                "name": "consumer",
                "backend": "processes",
                "command": IDLE_COMMAND,
                # No replica yet and min 1: the first iteration scales 0 -> 1, a real apply.
                "min_replicas": 1,
                "max_replicas": 3,
                # One iteration, then a long wait: the history stays short enough that the
                # scaling step is on the first page the UI renders (it lists newest first).
                "check_interval": "10m",
                "stop_grace_period": "2s",
            }
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def loop(
    tmp_path: Path, temporal_dev: EmbeddedTemporal
) -> AsyncIterator[tuple[DocktorConfig, Client, str]]:
    """A running loop for `consumer` that has scaled 0 -> 1; yields (config, client, run id)."""
    config = load_config(write_config(tmp_path, temporal_dev, uuid.uuid4().hex[:6]))
    service = config.services[0]
    client = await connect(config)
    activities = LoopActivities(WorkerConfig(config))
    worker = build_worker(client, config.temporal.task_queue, activities.all())
    try:
        async with worker:
            started = await LoopClient(client, config).start(service)
            assert started.run_id is not None

            async def scaled_up() -> bool:
                decisions = await LoopClient(client, config).decisions(service.name)
                return any(d.action == "scale_up" for d in decisions)

            await async_wait_for(scaled_up, 60, "the first scale_up decision")
            try:
                yield config, client, started.run_id
            finally:
                await LoopClient(client, config).stop(service.name)
    finally:
        await activities.close()
        await ProcessScaler(service, project=config.project or "").stop_all()


async def test_web_ui_shows_the_service_and_its_scaling_steps(
    loop: tuple[DocktorConfig, Client, str],
    browser: Browser,
    temporal_dev: EmbeddedTemporal,
    tmp_path: Path,
) -> None:
    config, _, run_id = loop
    workflow_id = config.workflow_id("consumer")
    namespace = f"{temporal_dev.ui_url}/namespaces/{temporal_dev.namespace}"
    # In a thread: the browser calls block, and the worker serving the loop shares this event
    # loop (blocking it would time out the loop's workflow tasks, visibly in the history).
    listing, history, latest, shots = await asyncio.to_thread(
        browse, browser, namespace, temporal_dev.namespace, workflow_id, run_id, tmp_path
    )
    for shot in shots:
        print(f"screenshot: {shot}")
        assert shot.stat().st_size > 10_000

    # The filter is applied (the query shows in the filter bar), and the loop is listed with
    # the service's search attributes as columns: service, replicas, last action.
    assert 'DocktorService = "consumer"' in listing
    # The row's cells, tab-separated in innerText: ... Workflow ID, DocktorService,
    # DocktorReplicas, DocktorLastAction ... in the configured column order.
    row = next(
        line.split("\t") for line in listing.splitlines() if line.startswith(f"\t{workflow_id}\t")
    )
    assert row[1:5] == [workflow_id, "consumer", "1", "scale_up"], row
    # The history names the service in the static summary and shows the scaling step's
    # summary, reason included, without opening any payload.
    assert "docktor autoscaler for consumer" in history
    assert "consumer 0 -> 1" in history
    assert "Workflow Task Timed Out" not in history
    # Each decision's record step says what happened, counts and reason.
    assert "scale_up 0 -> 1: 0 replicas is below min_replicas (1)" in history
    # The starter's link (no run id) opens the latest run, whose page shows the table of the
    # loop's recent decisions.
    assert "Recent decisions" in latest and "scale_up" in latest


def browse(
    browser: Browser, namespace: str, name: str, workflow_id: str, run_id: str, out: Path
) -> tuple[str, str, str, list[Path]]:
    """Open the filtered list, the history and the starter's link to the loop; returns their
    visible text and screenshots."""
    browser.failure_shots = out
    # The column choice lives in the UI origin's localStorage: set it on a page of that origin,
    # then open the list. (Other namespaces keep their defaults.)
    browser.goto(f"{namespace}/workflows")
    browser.wait_for_text("Workflows")
    columns = {name: [{"label": label} for label in COLUMNS]}
    browser.evaluate(f"localStorage.setItem({COLUMNS_KEY!r}, {json.dumps(json.dumps(columns))})")

    # The query a user types in the filter bar, URL-encoded as the UI itself puts it in the URL.
    query = urllib.parse.quote('DocktorService="consumer"', safe="")
    browser.goto(f"{namespace}/workflows?query={query}")
    listing = browser.wait_for_text(workflow_id, "DocktorReplicas", "DocktorLastAction")
    shots = [browser.screenshot(out / "workflow-list.png")]

    browser.goto(f"{namespace}/workflows/{workflow_id}/{run_id}/history")
    history = browser.wait_for_text(
        workflow_id, "consumer 0 -> 1", "scale_up 0 -> 1: 0 replicas", timeout=45
    )
    # Bring the scaling step into view, so the picture shows what the assertion found.
    browser.scroll_to_text("consumer 0 -> 1")
    shots.append(browser.screenshot(out / "workflow-history.png"))

    browser.goto(f"{namespace}/workflows/{workflow_id}")
    browser.wait_for_text(workflow_id, "User Metadata", timeout=45)
    # The current details are on the run's "User Metadata" tab.
    browser.evaluate(
        "[...document.querySelectorAll('a, button')]"
        ".find(e => e.textContent.trim().startsWith('User Metadata')).click()"
    )
    browser.wait_for_text(workflow_id, "Current Details", timeout=45)

    # The UI renders the details' markdown in a sandboxed frame of its own: read that frame.
    def rendered() -> str | None:
        text = browser.evaluate(
            "[...document.querySelectorAll('iframe')]"
            ".map(f => f.contentDocument ? f.contentDocument.body.innerText : (f.srcdoc || ''))"
            ".join('\\n')"
        )
        return text if text and "Recent decisions" in text else None

    latest = str(wait_for(rendered, 45, "the table of recent decisions"))
    shots.append(browser.screenshot(out / "workflow-latest-run.png"))
    return listing, history, latest, shots
