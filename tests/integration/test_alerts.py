"""The alert rules of deploy/prometheus: their own `promtool test rules` cases, and a real
Prometheus (Debian's, started here on a free port with its own data folder) that loads them and
scrapes a real worker's --metrics-port while a loop runs, is scaled and is stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import stop_loop_within, wait_for, write_idle_config

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.client.temporal import connect
from docktor.dev.embedded import (
    EmbeddedError,
    EmbeddedTemporal,
    ManagedProcess,
    find_binary,
    free_port,
    spawn,
)
from docktor.spec import load_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
RULES = REPO / "deploy" / "prometheus" / "docktor-rules.yaml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "docktor-rules.test.yaml"
ALERTS = {
    "DocktorWorkerDown",
    "DocktorLoopNotDeciding",
    "DocktorMetricsUnreadable",
    "DocktorReplicasAtMax",
    "DocktorModelFailing",
}


def require(binary: str) -> str:
    """Debian's prometheus package ships both binaries. Skip where it is missing; fail under
    CI, where `make test` installs it first (scripts/install-test-deps.sh)."""
    try:
        return find_binary(binary)
    except EmbeddedError:
        if os.environ.get("CI"):
            pytest.fail(f"no {binary} on this CI machine: scripts/install-test-deps.sh adds it")
        pytest.skip(f"no {binary} here (install Debian's prometheus package to run this test)")


def test_the_rules_pass_their_promtool_tests() -> None:
    promtool = require("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout
    # Every alert of the file has its cases.
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    assert alerts == ALERTS
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {case["alertname"] for test in cases for case in test["alert_rule_test"]}
    assert tested == ALERTS
    # Run from its folder, as an operator would: the test file names the rules relatively.
    tested_run = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested_run.returncode == 0, tested_run.stdout + tested_run.stderr
    assert "SUCCESS" in tested_run.stdout


# ---- a real Prometheus scraping a real worker ------------------------------------------------


class Prometheus:
    def __init__(self, process: ManagedProcess, url: str) -> None:
        self.process = process
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as response:
            return json.load(response)["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        return self.get("/api/v1/query", query=expression)["result"]

    def value(self, expression: str) -> float | None:
        """The one sample the expression gives, or None when it gives none."""
        result = self.query(expression)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False


@pytest.fixture
def prometheus_and_worker(
    tmp_path: Path, temporal_dev: EmbeddedTemporal
) -> Iterator[tuple[Prometheus, Path]]:
    """A worker with --metrics-port, and a Prometheus that scrapes it every second as the job
    `docktor` and evaluates the rules every second; yields the Prometheus and the config."""
    binary = require("prometheus")
    config = write_idle_config(
        tmp_path, temporal_dev.address, "alerts", uuid.uuid4().hex[:6], journal=False
    )
    metrics_port, web_port = free_port(), free_port()
    worker = spawn(
        "worker",
        [sys.executable, "-m", "worker", "--config", str(config)]
        + ["--metrics-port", str(metrics_port)],
        tmp_path / "worker.log",
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"},
    )
    settings = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "docktor",
                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(settings))
    server = spawn(
        "prometheus",
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
        ],
        tmp_path / "prometheus.log",
    )
    try:
        prometheus = Prometheus(server, f"http://127.0.0.1:{web_port}")
        wait_for(lambda: prometheus.ready() or not server.running, 60, "Prometheus ready")
        assert server.running, server.log_tail()
        yield prometheus, config
    finally:
        server.stop()
        worker.stop(timeout=30)
        print(f"worker log:\n{worker.log_tail(40)}\nprometheus log:\n{server.log_tail(20)}")


async def test_prometheus_scrapes_a_worker_and_sees_the_replicas_change(
    prometheus_and_worker: tuple[Prometheus, Path],
) -> None:
    prometheus, config_path = prometheus_and_worker
    config = load_config(config_path)
    service = config.services[0]
    series = f'{{job="docktor", service="{service.name}"}}'

    # The worker is a target that answers, and every rule loads and evaluates.
    wait_for(lambda: prometheus.value('up{job="docktor"}') == 1, 60, "the worker scraped")

    def rules_healthy() -> bool:
        groups = prometheus.get("/api/v1/rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return {r["name"] for r in rules} == ALERTS and all(r["health"] == "ok" for r in rules)

    wait_for(rules_healthy, 30, "the rules evaluated")

    client = await connect(config)
    loops = LoopClient(client, config)
    scaler = ProcessScaler(service, project=config.project or "")
    await loops.start(service)
    try:
        # The first decision brings the service to min_replicas (1 of 1..2).
        wait_for(lambda: prometheus.value(f"docktor_replicas{series}") == 1, 60, "1 replica")
        assert prometheus.value(f"docktor_max_replicas{series}") == 2
        assert prometheus.value(f"docktor_check_interval_seconds{series}") == 1
        assert prometheus.query('ALERTS{alertname="DocktorReplicasAtMax"}') == []

        await loops.scale_to(service.name, 2, reason="alert test", by="pytest", hold_s=600)
        wait_for(lambda: prometheus.value(f"docktor_replicas{series}") == 2, 60, "2 replicas")
        # Prometheus's own view of the change, and the rule it arms: at max, pending until
        # it has lasted its 15 minutes.
        assert (prometheus.value(f"changes(docktor_replicas{series}[5m])") or 0) >= 1
        pending = f'ALERTS{{alertname="DocktorReplicasAtMax", service="{service.name}"}}'
        wait_for(lambda: prometheus.query(pending), 30, "DocktorReplicasAtMax pending")
        (alert,) = prometheus.query(pending)
        assert alert["metric"]["alertstate"] == "pending"
        # The loop decides every second: not late.
        assert prometheus.query('ALERTS{alertname="DocktorLoopNotDeciding"}') == []
        manual = (
            f'docktor_decisions_total{{job="docktor", service="{service.name}", action="manual"}}'
        )
        assert prometheus.value(manual) == 1

        # A stopped loop's gauges go: nothing about it stays at max or grows late.
        await loops.stop(service.name)
        wait_for(
            lambda: prometheus.query(f"docktor_last_decision_timestamp_seconds{series}") == [],
            30,
            "the stopped loop's figures gone",
        )
        assert prometheus.query(f"docktor_replicas{series}") == []
        wait_for(lambda: prometheus.query(pending) == [], 30, "DocktorReplicasAtMax cleared")
        assert prometheus.value(manual.replace('"manual"', '"stopped"')) == 1
    finally:
        await stop_loop_within(client, config, service.name)
        await scaler.stop_all()
