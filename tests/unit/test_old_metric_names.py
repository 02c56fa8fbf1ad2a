"""The old Go tool's `queue.metrics` short names (backlog, lag, rate_in, rate_out, ...) load as
the `queue.*` metrics they name, with one warning line for the file; its NATS example passes
`docktor config validate --offline`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from docktor.sources.nats import NatsMetricSource
from docktor.spec import ConfigError, load_config, parse_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GO_TOOL_NATS = FIXTURES / "go-tool-nats.docktor.yaml"
DOCKTOR = Path(sys.executable).parent / "docktor"

SHORT_NAMES_WARNING = (
    "services[0].queue.metrics: old short metric names, read as the metrics they name "
    "(backlog as queue.backlog, lag as queue.lag, rate_in as queue.rate_in, "
    "rate_out as queue.rate_out); write those names"
)


def test_the_go_tools_nats_example_loads_with_the_queue_metric_names() -> None:
    config = load_config(GO_TOOL_NATS)
    [service] = config.services
    assert service.queue is not None
    assert service.queue.metrics == [
        "queue.backlog",
        "queue.lag",
        "queue.rate_in",
        "queue.rate_out",
    ]
    # What the loop carries names the metrics as the sources and the policy know them.
    assert service.queue.model_dump()["metrics"] == service.queue.metrics


def test_the_short_names_give_one_warning_line_for_the_file() -> None:
    warnings = load_config(GO_TOOL_NATS).warnings
    assert [line for line in warnings if "short metric names" in line] == [SHORT_NAMES_WARNING]
    assert all("\n" not in line for line in warnings)
    # The file's other settings of the Go tool keep their own lines.
    assert warnings == [
        "version: ignored (there is one format; a file needs no version)",
        "services[0].queue.jetstream: ignored (docktor always reads a JetStream consumer)",
        "services[0].queue.subject: ignored (the consumer's own filter decides what it reads)",
        SHORT_NAMES_WARNING,
    ]


def test_every_short_name_of_a_nats_queue_metric_is_read(tmp_path: Path) -> None:
    queue_metrics = [m for m in NatsMetricSource.provides if m.startswith("queue.")]
    short = [m.removeprefix("queue.") for m in queue_metrics]
    text = (
        "services:\n"
        f"  - {{name: a, queue: {{stream: S, consumer: a, metrics: [{', '.join(short)}]}}}}\n"
        "  - {name: b, queue: {stream: S, consumer: b, metrics: [backlog, queue.lag]}}\n"
        "  - {name: c, queue: {stream: S, consumer: c, metrics: [queue.backlog]}}\n"
    )
    config = parse_config(text, base_dir=tmp_path)
    metrics = [service.queue.metrics for service in config.services if service.queue]
    assert metrics == [queue_metrics, ["queue.backlog", "queue.lag"], ["queue.backlog"]]
    # Two blocks with old names, one line for the file.
    [warning] = config.warnings
    assert warning.startswith("services[0].queue.metrics, services[1].queue.metrics: ")


def test_a_name_that_is_no_queue_metric_is_still_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(
            "services:\n  - {name: a, queue: {stream: S, consumer: a, metrics: [backlog, bl]}}\n",
            base_dir=tmp_path,
        )
    [problem] = refused.value.problems
    assert problem.startswith("services[0].queue.metrics: unknown nats metric 'bl' (known: ")


def test_config_validate_offline_accepts_the_go_tools_nats_example() -> None:
    environment = {k: v for k, v in os.environ.items() if k != "DOCKTOR_CONFIG"}
    result = subprocess.run(
        [str(DOCKTOR), "config", "validate", "--offline", "--config", str(GO_TOOL_NATS)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"OK  {GO_TOOL_NATS}: project 'orders', consumer (compose)")
    assert f"warning: {SHORT_NAMES_WARNING}" in result.stderr.splitlines()
