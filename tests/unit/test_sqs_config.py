"""The `queue:` block of `kind: sqs`, as a user's file is checked, offline: the SQS source's own
model (docktor.sources.sqs.SqsQueueSpec), no key in the block, and rate tracking off for a
queue that keeps no counters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from docktor.cli.main import main
from docktor.sources import queue_block, queue_kinds
from docktor.sources.sqs import SqsMetricSource, SqsQueueSpec
from docktor.spec import load_config
from tests.unit.test_config import problems, write

SERVICE = "services:\n  - name: web\n    backend: processes\n    command: [python, w.py]\n"
URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs"


def test_an_sqs_queue_loads_and_its_target_sizes_from_the_backlog_alone(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, SERVICE + f"    queue: {{kind: sqs, queue_url: '{URL}'}}\n")
    )
    service = config.services[0]
    queue = queue_block(service, SqsQueueSpec)
    assert (queue.queue_url, queue.region, queue.profile) == (URL, None, None)
    assert (queue.endpoint(), queue.url_region(), queue.queue_name()) == (
        "https://sqs.eu-west-1.amazonaws.com",
        "eu-west-1",
        "jobs",
    )
    # The defaults of any queue, less the rate SQS cannot give: with rate tracking on, the
    # policy would wait for queue.rate_in and, missing data never scaling down, never go down.
    assert service.policy == "target"
    assert service.target == {"queue.backlog_per_replica": 100.0}
    assert service.rate.enabled is False


def test_rate_settings_written_for_an_sqs_queue_keep_tracking_off(tmp_path: Path) -> None:
    text = (
        SERVICE + f"    rate: {{drain_within: 20s}}\n    queue: {{kind: sqs, queue_url: '{URL}'}}\n"
    )
    service = load_config(write(tmp_path, text)).services[0]
    assert (service.rate.enabled, service.rate.drain_within) == (False, 20.0)


def test_other_kinds_keep_rate_tracking_on(tmp_path: Path) -> None:
    text = SERVICE + "    queue: {kind: redis, stream: jobs, group: g}\n"
    assert load_config(write(tmp_path, text)).services[0].rate.enabled is True


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            f"    rate: {{enabled: true}}\n    queue: {{kind: sqs, queue_url: '{URL}'}}\n",
            "services[0].rate.enabled: a 'sqs' queue gives no queue.rate_in to track",
            id="rate-on",
        ),
        pytest.param(
            "    queue: {kind: sqs}\n",
            "services[0].queue.queue_url: required field is missing",
            id="no-url",
        ),
        pytest.param(
            "    queue: {kind: sqs, queue_url: 'sqs://eu-west-1/jobs'}\n",
            "services[0].queue.queue_url: must be an https:// (or http://) queue URL",
            id="scheme",
        ),
        pytest.param(
            "    queue: {kind: sqs, queue_url: 'https://sqs.eu-west-1.amazonaws.com/jobs'}\n",
            "services[0].queue.queue_url: must be the queue's URL, /<account>/<queue name>",
            id="no-account",
        ),
        pytest.param(
            "    queue: {kind: sqs, queue_url: 'https://AKIAEXAMPLE:secret@sqs.eu-west-1."
            "amazonaws.com/1/jobs'}\n",
            "services[0].queue.queue_url: holds credentials; leave them out",
            id="key-in-url",
        ),
        pytest.param(
            f"    queue: {{kind: sqs, queue_url: '{URL}', aws_secret_access_key: x}}\n",
            "services[0].queue.aws_secret_access_key: unknown field",
            id="key-field",
        ),
        pytest.param(
            f"    queue: {{kind: sqs, queue_url: '{URL}', region: 'eu west'}}\n",
            "services[0].queue.region: ",
            id="region",
        ),
        pytest.param(
            f"    queue: {{kind: sqs, queue_url: '{URL}', metrics: [queue.rate_in]}}\n",
            "services[0].queue.metrics: unknown sqs metric 'queue.rate_in' (known: "
            "queue.backlog, queue.ack_pending, queue.delayed)",
            id="no-rates",
        ),
    ],
)
def test_a_bad_sqs_queue_is_one_line_naming_the_field(
    tmp_path: Path, text: str, problem: str
) -> None:
    found = problems(SERVICE + text, tmp_path)
    assert any(line.startswith(problem) for line in found), found


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://sqs.us-east-2.amazonaws.com/1/q", "us-east-2"),
        ("https://sqs-fips.us-gov-west-1.amazonaws.com/1/q", "us-gov-west-1"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/1/q", "cn-north-1"),
        ("https://eu-west-3.queue.amazonaws.com/1/q", "eu-west-3"),
        ("https://queue.amazonaws.com/1/q", "us-east-1"),
        ("http://127.0.0.1:4566/000000000000/q", None),
        ("https://sqs.eu-west-1.amazonaws.com.example.org/1/q", None),
    ],
)
def test_the_region_of_an_aws_queue_url(url: str, region: str | None) -> None:
    assert SqsQueueSpec(queue_url=url).url_region() == region


def test_the_source_declares_gauges_and_no_rates() -> None:
    assert SqsMetricSource.provides == ("queue.backlog", "queue.ack_pending", "queue.delayed")
    assert SqsMetricSource.rates == {}


def test_docktor_plugins_lists_the_sqs_kind_and_its_metrics(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plugins", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    [sqs] = [s for s in listed["sources"] if s["kind"] == "sqs"]
    assert (sqs["package"], sqs["queue"], sqs["rates"]) == ("docktor", True, {})
    assert sqs["metrics"] == ["queue.backlog", "queue.ack_pending", "queue.delayed"]
    assert "sqs" in queue_kinds()


def test_the_bench_runs_an_sqs_service_on_observations_without_counters(tmp_path: Path) -> None:
    from docktor.dev.bench.driver import DocktorController
    from docktor.dev.bench.simulate import QueueView
    from docktor.plan import ServicePlan

    text = SERVICE + f"    queue: {{kind: sqs, queue_url: '{URL}'}}\n"
    plan = ServicePlan.from_spec(load_config(write(tmp_path, text)).services[0])
    controller = DocktorController("sqs", plan)
    for t in (0.0, 4.0):
        view = QueueView(t, 2, 2, 250.0, 20.0, 1000.0 + 400 * t, 900.0, 100.0, 50.0)
        controller.check(view)
    # As its loop sees an SQS queue: the gauges, no counters, so no rate.
    assert all(sample.counters == {} for sample in controller.log)
    assert "queue.rate_in" not in controller.log[-1].metrics
    assert controller.log[-1].metrics["queue.backlog"] == 250.0
