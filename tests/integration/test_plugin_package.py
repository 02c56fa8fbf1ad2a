"""A plugin installed from its own package works without touching docktor.

examples/plugin-http-queue is installed with pip (as an operator would, from a copy of the
folder) into the environment the tests run in, and removed after. Its `queue: {kind: http}`
block is then validated by its own model, `docktor plugins` lists it, and a real loop (dev
server, `python -m worker`, processes replicas) scales on the queue depth a
local HTTP server reports through it, with the rates the plugin declares."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import IDLE_COMMAND, REPO, async_wait_for, start_worker, stop_loop_within

from docktor import plugins
from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.client.temporal import connect
from docktor.dev.embedded import EmbeddedTemporal
from docktor.spec import ConfigError, load_config, parse_config
from docktor.values import Decision

EXAMPLE = REPO / "examples" / "plugin-http-queue"
PACKAGE = "docktor-http-queue"


def pip(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def rescan() -> None:
    """This process looks at the installed packages again (a worker started now would)."""
    importlib.invalidate_caches()
    sys.modules.pop("docktor_http_queue", None)
    plugins.forget()


@pytest.fixture(scope="module")
def http_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # From a copy: building in place would leave build/ and *.egg-info in the repository.
    source = tmp_path_factory.mktemp("plugin") / "plugin-http-queue"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    # --no-deps: its one dependency, docktor, is the one under test, installed already.
    pip("install", "--no-deps", str(source))
    rescan()
    try:
        yield
    finally:
        pip("uninstall", "-y", PACKAGE)
        rescan()


class QueueEndpoint:
    """A local HTTP server answering GET with the queue's JSON document. Every answer counts
    `arrivals` more enqueued messages, so consecutive samples see the counter grow."""

    def __init__(self) -> None:
        self.depth = 0
        self.arrivals = 0
        self.enqueued = 0
        self.processed = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                endpoint.enqueued += endpoint.arrivals
                body = json.dumps(
                    {
                        "depth": endpoint.depth,
                        "in_flight": 0,
                        "enqueued_total": endpoint.enqueued,
                        "processed_total": endpoint.processed,
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/queue"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def endpoint() -> Iterator[QueueEndpoint]:
    served = QueueEndpoint()
    try:
        yield served
    finally:
        served.close()


def service(address: str, **queue: Any) -> dict[str, Any]:
    return {
        "name": "consumer",
        "backend": "processes",
        "command": IDLE_COMMAND,
        "min_replicas": 1,
        "max_replicas": 3,
        "check_interval": "1s",
        "stop_grace_period": "2s",
        "cooldown": {"up": "1s", "down": "1s"},
        "rules": {
            "scale_up_when": [{"metric": "queue.backlog", "op": ">", "value": 100}],
            "scale_down_when": [{"metric": "queue.backlog", "op": "<", "value": 10}],
        },
        "queue": {"kind": "http", "url": address, **queue},
    }


def test_plugins_lists_the_installed_package(http_plugin: None) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "docktor", "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    sources = {s["kind"]: s for s in json.loads(result.stdout)["sources"]}
    assert sources["http"]["package"] == PACKAGE
    assert sources["http"]["version"] == "0.1.0"
    assert sources["http"]["queue"] is True
    assert "queue.backlog" in sources["http"]["metrics"]
    assert sources["nats"]["package"] == "docktor"


@pytest.mark.parametrize(
    ("queue", "expected"),
    [
        (
            {"backlogg": "n"},
            "services[0].queue.backlogg: unknown field (did you mean 'backlog'?)",
        ),
        (
            {"url": "ftp://x"},
            "services[0].queue.url: must be an http:// or https:// URL, not 'ftp://x'",
        ),
        (
            {"metrics": ["queue.lag"]},
            "services[0].queue.metrics: unknown http metric 'queue.lag' (known: queue.backlog, "
            "queue.ack_pending, queue.rate_in, queue.rate_out)",
        ),
    ],
)
def test_the_plugin_validates_its_own_queue_block(
    http_plugin: None, tmp_path: Path, queue: dict[str, Any], expected: str
) -> None:
    text = yaml.safe_dump({"services": [service("http://127.0.0.1:1/q", **queue)]})
    with pytest.raises(ConfigError) as caught:
        parse_config(text, base_dir=tmp_path)
    assert caught.value.problems == [expected]


async def test_a_real_loop_scales_on_the_plugins_metric(
    http_plugin: None,
    endpoint: QueueEndpoint,
    temporal_dev: EmbeddedTemporal,
    tmp_path: Path,
) -> None:
    tag = uuid.uuid4().hex[:6]
    path = tmp_path / "docktor.yaml"
    document = {
        "project": f"plugin-{tag}",
        "state_dir": str(tmp_path / "state"),
        "temporal": {"address": temporal_dev.address, "task_queue": f"docktor-plugin-{tag}"},
        "services": [service(endpoint.url)],
    }
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    spec = config.services[0]
    endpoint.arrivals = 50
    # `python -m worker` in a process of its own: it finds the plugin as any worker started
    # after the install would, through the entry point, with nothing in docktor told of it.
    worker = start_worker(path, tmp_path / "worker.log")
    try:
        client = await connect(config)
        await LoopClient(client, config).start(spec)

        async def replicas(count: int) -> bool:
            return (await LoopClient(client, config).status(spec.name)).replicas == count

        await async_wait_for(lambda: replicas(1), 60, "min_replicas on a quiet queue")
        endpoint.depth = 500
        up = await _decision(client, config, "scale_up", backlog=500)
        # The plugin's gauge, read by the rule, and the rate made from its counter.
        assert any("queue.backlog" in rule for rule in up.matched_rules)
        assert up.observations["queue.rate_in"] > 0
        await async_wait_for(lambda: replicas(3), 60, "max_replicas under the backlog")

        endpoint.depth = 0
        await _decision(client, config, "scale_down", backlog=0)
        await async_wait_for(lambda: replicas(1), 60, "back to min_replicas")
        await stop_loop_within(client, config, spec.name)
    finally:
        worker.stop()
        await ProcessScaler(spec, project=config.project or "").stop_all()
    assert "Traceback" not in worker.log()


async def _decision(client: Any, config: Any, action: str, backlog: float) -> Decision:
    """The latest decision of this action made on this backlog, when the loop has made one."""

    async def found() -> Decision | None:
        decisions = await LoopClient(client, config).decisions("consumer", tail=50)
        return next(
            (
                d
                for d in reversed(decisions)
                if d.action == action and d.observations.get("queue.backlog") == backlog
            ),
            None,
        )

    result = await async_wait_for(found, 60, f"a {action} decision")
    assert isinstance(result, Decision)
    return result
