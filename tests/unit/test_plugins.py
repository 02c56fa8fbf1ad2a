"""Sources and backends as plugins: what the core learns from their declarations, how a
`queue:` block travels in payloads, and one backend instance for a worker's life."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment

from activities import LoopActivities
from docktor import plugins
from docktor.backends import ScalerConfigError
from docktor.backends.processes import ProcessesBackend
from docktor.cli.main import main
from docktor.loop.authority import WorkerConfig
from docktor.loop.messages import ApplyInput, AutoscalerInput, ObserveInput
from docktor.plan import QueueBlock, ServicePlan
from docktor.policy import derive_rates
from docktor.sources import MetricConfigError, queue_block, queue_kinds, source_class
from docktor.sources.nats import NatsQueueSpec
from docktor.sources.sampling import source_kinds
from docktor.spec import ConfigError, DocktorConfig, ServiceSpec, parse_config
from docktor.values import Observation

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def wire(value: Any, as_type: type) -> Any:
    """Through the pydantic payload converter, as Temporal carries workflow and activity input."""
    converter = pydantic_data_converter.payload_converter
    [decoded] = converter.from_payloads(converter.to_payloads([value]), [as_type])
    return decoded


def test_the_built_ins_register_through_entry_points_like_any_plugin() -> None:
    assert {"nats", "docker"} <= set(plugins.names(plugins.SOURCES))
    assert {"processes", "compose", "swarm"} <= set(plugins.names(plugins.BACKENDS))
    assert plugins.registered(plugins.SOURCES)["nats"].package == "docktor"
    assert "nats" in queue_kinds() and "docker" not in queue_kinds()


def test_an_uninstalled_name_is_one_line_naming_what_is_installed() -> None:
    with pytest.raises(MetricConfigError, match=r"no metric source kind 'kafka' .*installed: "):
        source_class("kafka")
    with pytest.raises(ScalerConfigError, match=r"no backend 'nomad' is installed \(installed: "):
        plugins.load(plugins.BACKENDS, "nomad", ScalerConfigError)


def test_a_queue_block_of_an_earlier_release_decodes_and_keeps_its_fields() -> None:
    # As the releases before plugins wrote it into workflow histories.
    payload = {
        "project": "p",
        "service": {
            "name": "consumer",
            "backend": "processes",
            "command": ["python", "consumer.py"],
            "queue": {
                "kind": "nats",
                "url": "nats://127.0.0.1:4222",
                "jetstream": True,
                "stream": "JOBS",
                "consumer": "workers",
                "subject": "jobs.new",
                "metrics": [],
            },
        },
    }
    decoded = AutoscalerInput.model_validate(payload)
    assert isinstance(decoded.service.queue, QueueBlock)
    assert wire(decoded, AutoscalerInput) == decoded
    queue = queue_block(decoded.service, NatsQueueSpec)
    assert (queue.stream, queue.consumer, queue.subject) == ("JOBS", "workers", "jobs.new")


def test_a_block_of_a_kind_this_process_lacks_travels_intact() -> None:
    # The workflow loads no plugins: a kind only the worker has installed must round-trip.
    plan = ServicePlan.model_validate(
        {"name": "c", "queue": {"kind": "kafka", "brokers": ["127.0.0.1:9092"], "topic": "t"}}
    )
    decoded = wire(plan, ServicePlan)
    assert decoded.queue is not None
    assert decoded.queue.model_dump() == {
        "kind": "kafka",
        "metrics": [],
        "brokers": ["127.0.0.1:9092"],
        "topic": "t",
    }


def test_a_loaded_config_and_its_payload_are_one_thing(tmp_path: Path) -> None:
    config = parse_config(
        "services:\n  - name: c\n    queue: {stream: S, consumer: w}\n", base_dir=tmp_path
    )
    spec = config.services[0]
    assert spec.queue is not None
    # The kind's defaults were filled in by its own model, and the plan carries them.
    plan = ServicePlan.from_spec(spec)
    assert plan.queue is not None and plan.queue.model_dump()["url"] == "nats://127.0.0.1:4222"
    assert wire(plan, ServicePlan) == plan


def test_sources_are_picked_by_the_metrics_they_declare(tmp_path: Path) -> None:
    config = parse_config(
        "services:\n"
        "  - name: c\n"
        "    queue: {stream: S, consumer: w}\n"
        "    rules:\n"
        "      scale_up_when: [{metric: cpu.avg_pct, op: '>', value: 80}]\n"
        "      scale_down_when: [{metric: custom.thing, op: '<', value: 1}]\n",
        base_dir=tmp_path,
    )
    # nats for the queue: block, docker because it declares cpu.avg_pct; nothing provides
    # custom.thing, so nothing is sampled for it (the policy reports it missing).
    assert source_kinds(ServicePlan.from_spec(config.services[0])) == ["nats", "docker"]


def test_rates_come_from_the_counters_each_source_declares() -> None:
    before = Observation(
        taken_at=NOW - timedelta(seconds=10),
        replicas=1,
        counters={"entries_added": 100.0, "entries_acked": 50.0},
        counter_rates={"entries_added": "queue.rate_in", "entries_acked": "queue.rate_out"},
    )
    after = before.model_copy(
        update={"taken_at": NOW, "counters": {"entries_added": 300.0, "entries_acked": 90.0}}
    )
    assert derive_rates(after, before) == {"queue.rate_in": 20.0, "queue.rate_out": 4.0}


def test_an_observation_made_before_sources_declared_rates_keeps_the_nats_ones() -> None:
    before = Observation(
        taken_at=NOW - timedelta(seconds=10),
        replicas=1,
        counters={"queue.stream_last_seq": 100.0, "queue.ack_floor": 50.0},
    )
    after = before.model_copy(
        update={"taken_at": NOW, "counters": {"queue.stream_last_seq": 200.0}}
    )
    assert derive_rates(after, before) == {"queue.rate_in": 10.0}


async def test_the_worker_keeps_one_backend_for_observe_and_apply(tmp_path: Path) -> None:
    idle = ServiceSpec(
        name="idle",
        backend="processes",
        command=[sys.executable, "-c", "import time; time.sleep(600)"],
        state_dir=str(tmp_path / "state"),
        stop_grace_period=2,
    )
    spec = ServicePlan.from_spec(idle)
    loop = LoopActivities(WorkerConfig(DocktorConfig(project="p", services=[idle])))
    env = ActivityEnvironment()
    backend = loop.backends.of(spec)
    assert isinstance(backend, ProcessesBackend)
    try:
        applied = await env.run(
            loop.apply, ApplyInput(project="p", service=spec, target_replicas=2)
        )
        assert applied.replicas == 2
        # The replicas it started are its own children (reaped by it), not a module's.
        assert len(backend.children) == 2
        observed = await env.run(loop.observe, ObserveInput(project="p", service=spec))
        assert observed.replicas == 2
        assert loop.backends.of(spec) is backend
        applied = await env.run(
            loop.apply, ApplyInput(project="p", service=spec, target_replicas=0)
        )
        assert applied.replicas == 0
        assert backend.children == {}
    finally:
        await backend.scale_to(spec, "p", 0)
        await loop.close()
    # Closed with the worker; a later call would build a new instance.
    assert loop.backends.of(spec) is not backend
    await loop.close()


@pytest.fixture
def broken_plugins(tmp_path: Path) -> Iterator[None]:
    """An installed distribution whose classes cannot be imported (as after a half-removed
    install): its dist-info on the path, the modules its entry points name absent."""
    site = tmp_path / "site"
    dist = site / "docktor_broken-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: docktor-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[docktor.metrics]\nbroken = docktor_broken_gone:Source\n"
        "[docktor.scalers]\nbroken = docktor_broken_gone:Backend\n"
    )
    sys.path.insert(0, str(site))
    plugins.forget()
    try:
        yield
    finally:
        sys.path.remove(str(site))
        plugins.forget()


def test_a_plugin_that_cannot_load_fails_only_what_names_it(
    broken_plugins: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugins"]) == 1
    out = capsys.readouterr().out
    # Columns as wide as the longest installed kind, whichever that is.
    assert re.search(r"^  broken +docktor-broken +0\.1", out, re.MULTILINE), out
    assert "No module named 'docktor_broken_gone'" in out

    # A service naming it: one line, at the field, saying which package and why.
    def problems(service: str) -> list[str]:
        with pytest.raises(ConfigError) as caught:
            parse_config(f"services:\n  - {service}\n", base_dir=tmp_path)
        return caught.value.problems

    [queue] = problems("{name: a, queue: {kind: broken}}")
    assert queue.startswith(
        "services[0].queue.kind: the metric source kind 'broken' from docktor-broken 0.1 "
        "cannot be loaded (docktor_broken_gone:Source: No module named"
    )
    [backend] = problems("{name: a, backend: broken}")
    assert backend.startswith("services[0].backend: the backend 'broken' from docktor-broken")
    # Every other service still loads.
    parse_config("services:\n  - {name: a, queue: {stream: S, consumer: w}}\n", base_dir=tmp_path)


def test_a_plugins_import_error_is_one_short_printable_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What a plugin raises at import is its own text: on a terminal its escapes would act.
    site = tmp_path / "site"
    dist = site / "docktor_hostile-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: docktor-hostile\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[docktor.metrics]\nhostile = docktor_hostile:Source\n")
    (site / "docktor_hostile.py").write_text(
        "raise RuntimeError('\\x1b]0;pwned\\x07cannot\\nstart ' + 'x' * 100_000)\n"
    )
    sys.path.insert(0, str(site))
    plugins.forget()
    try:
        assert main(["plugins"]) == 1
        [row] = [line for line in capsys.readouterr().out.splitlines() if "hostile" in line]
        with pytest.raises(plugins.NotInstalled) as caught:
            plugins.load(plugins.SOURCES, "hostile")
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("docktor_hostile", None)
        plugins.forget()
    for text in (row, str(caught.value)):
        assert text.isprintable() and "pwned" not in text and len(text) < 400, text[:500]
        assert "cannot start xxx" in text
