"""`python -m worker --metrics-port`: one Prometheus endpoint with docktor's figures and the
Temporal SDK's own, served by a real worker process running a real loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import async_wait_for, wait_for, write_idle_config
from prometheus_client.parser import text_string_to_metric_families

from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.client.temporal import connect
from docktor.dev.embedded import EmbeddedTemporal, free_port
from docktor.spec import DocktorConfig, load_config

REPO = Path(__file__).parents[2]


def scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            return response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition as (name, labels) -> value; parsing it all also proves
    the merged text is valid Prometheus format."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


@pytest.fixture
def worker(tmp_path: Path, temporal_dev: EmbeddedTemporal) -> Iterator[tuple[Path, str]]:
    """A worker process with --metrics-port; yields (config path, metrics URL)."""
    config = write_idle_config(
        tmp_path, temporal_dev.address, "metrics", uuid.uuid4().hex[:6], journal=False
    )
    port = free_port()
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "--config", str(config), "--metrics-port", str(port)],
            cwd=REPO,
            env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield config, f"http://127.0.0.1:{port}/metrics"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(f"worker log ({log_path}):\n{log_path.read_text()}")


async def test_metrics_endpoint_serves_docktor_and_sdk_metrics(
    worker: tuple[Path, str],
) -> None:
    config_path, url = worker
    config: DocktorConfig = load_config(config_path)
    service = config.services[0]
    scaler = ProcessScaler(service, project=config.project or "")
    # The endpoint answers before any loop runs (the worker is up).
    wait_for(lambda: scrape(url), timeout=60, message=f"metrics endpoint {url}")

    client = await connect(config)
    await LoopClient(client, config).start(service)
    try:

        async def scaled_up() -> str | None:
            text = scrape(url)
            ups = value(
                text or "", "docktor_decisions_total", service="consumer", action="scale_up"
            )
            return text if ups and ups >= 1 else None

        text = str(await async_wait_for(scaled_up, 60, "a scale_up decision in /metrics"))
        # A couple more iterations: holds at 1 replica, counted as such.
        more = await async_wait_for(
            lambda: _scrape_when(url, "docktor_decisions_total", action="hold"), 30, "a hold"
        )
        text = str(more)
    finally:
        await LoopClient(client, config).stop(service.name)
        await scaler.stop_all()

    assert value(text, "docktor_decisions_total", service="consumer", action="scale_up") == 1
    assert value(text, "docktor_replicas", service="consumer") == 1
    assert value(text, "docktor_desired_replicas", service="consumer") == 1
    # Declared (HELP/TYPE) even before any model call or failed read, so dashboards find them.
    for family, kind in (
        ("docktor_metric_fetch_failures_total", "counter"),
        ("docktor_llm_latency_seconds", "histogram"),
        ("docktor_llm_fallbacks_total", "counter"),
    ):
        assert f"# TYPE {family} {kind}\n" in text
    # The SDK's own figures follow docktor's on the same endpoint.
    names = {name for name, _ in samples(text)}
    sdk = {n for n in names if n.startswith("temporal_")}
    # (The parser reads the SDK's counters, e.g. `temporal_request`, as `..._total` samples.)
    assert {"temporal_request_total", "temporal_worker_start_total"} <= sdk, sorted(sdk)
    assert "temporal_activity_execution_latency_count" in sdk, sorted(sdk)


async def _scrape_when(url: str, name: str, **labels: str) -> str | None:
    text = scrape(url) or ""
    found = value(text, name, service="consumer", **labels)
    return text if found else None
