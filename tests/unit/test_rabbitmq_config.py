"""The `queue:` block of `kind: rabbitmq`, as a user's file is checked: the RabbitMQ source's own
model (docktor.sources.rabbitmq.RabbitMQQueueSpec), what it reads from the AMQP URL (user,
virtual host), where it finds the management API, and that no password travels in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from docktor.plan import ServicePlan
from docktor.sources import MetricConfigError, queue_block
from docktor.sources.rabbitmq import RabbitMQQueueSpec, RabbitMQSource
from docktor.spec import load_config
from tests.unit.test_config import problems, write

SERVICE = "services:\n  - name: web\n    backend: processes\n    command: [python, w.py]\n"


def test_a_rabbitmq_queue_loads_with_its_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SERVICE + "    queue: {kind: rabbitmq, queue: jobs}\n"))
    queue = queue_block(config.services[0], RabbitMQQueueSpec)
    assert (queue.url, queue.queue) == ("amqp://127.0.0.1:5672/", "jobs")
    assert (queue.user, queue.vhost, queue.management) == (
        "guest",
        "/",
        "http://127.0.0.1:15672",
    )
    # The rules the other kinds' examples use need nothing else: the target policy's defaults.
    assert config.services[0].policy == "target"


@pytest.mark.parametrize(
    ("url", "user", "vhost", "management"),
    [
        ("amqp://mq.internal", "guest", "/", "http://mq.internal:15672"),
        ("amqp://scaler@mq.internal:5673/", "scaler", "/", "http://mq.internal:15672"),
        ("amqp://scaler@mq.internal/%2F", "scaler", "/", "http://mq.internal:15672"),
        ("amqps://s%40x@10.0.0.5/orders", "s@x", "orders", "http://10.0.0.5:15672"),
        ("amqp://[::1]:5672/a%2Fb", "guest", "a/b", "http://[::1]:15672"),
    ],
)
def test_user_and_vhost_come_from_the_url_as_amqp_clients_read_them(
    url: str, user: str, vhost: str, management: str
) -> None:
    queue = RabbitMQQueueSpec(url=url, queue="jobs", password_env="MQ_PASSWORD")
    assert (queue.user, queue.vhost, queue.management) == (user, vhost, management)


def test_management_url_is_used_as_given_without_a_trailing_slash() -> None:
    queue = RabbitMQQueueSpec(queue="jobs", management_url="https://mq.example:443/")
    assert queue.management == "https://mq.example:443"


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        pytest.param(
            "{kind: rabbitmq}",
            "services[0].queue.queue: required field is missing",
            id="missing-queue",
        ),
        pytest.param(
            "{kind: rabbitmq, queue: jobs, stream: s}",
            "services[0].queue.stream: unknown field",
            id="nats-field-on-rabbitmq",
        ),
        pytest.param(
            "{kind: rabbitmq, url: 'redis://127.0.0.1:6379/0', queue: jobs}",
            "services[0].queue.url: must be an amqp:// (or amqps://) URL",
            id="url-scheme",
        ),
        pytest.param(
            "{kind: rabbitmq, url: 'amqp://u:s3cret@mq/', queue: jobs, password_env: P}",
            "services[0].queue.url: holds a password; leave it out",
            id="password-in-url",
        ),
        pytest.param(
            "{kind: rabbitmq, queue: jobs, management_url: 'amqp://mq:15672'}",
            "services[0].queue.management_url: must be an http:// (or https://) URL",
            id="management-scheme",
        ),
        pytest.param(
            "{kind: rabbitmq, queue: jobs, management_url: 'http://u:p@mq:15672'}",
            "services[0].queue.management_url: holds credentials",
            id="management-credentials",
        ),
        pytest.param(
            "{kind: rabbitmq, url: 'amqp://scaler@mq/', queue: jobs}",
            "services[0].queue: password_env: required for user 'scaler'",
            id="user-without-password",
        ),
        pytest.param(
            "{kind: rabbitmq, queue: jobs, password_env: AWS_SECRET_ACCESS_KEY}",
            "services[0].queue.password_env: AWS_SECRET_ACCESS_KEY is used for something else",
            id="reserved-variable",
        ),
        pytest.param(
            "{kind: rabbitmq, queue: jobs, metrics: [queue.redelivered]}",
            "services[0].queue.metrics: unknown rabbitmq metric 'queue.redelivered' (known: "
            "queue.backlog, queue.ack_pending, queue.consumers, queue.rate_in, queue.rate_out, "
            "queue.rate_redelivered)",
            id="no-redelivered-gauge",
        ),
    ],
)
def test_a_bad_rabbitmq_queue_is_one_line_naming_the_field(
    tmp_path: Path, block: str, problem: str
) -> None:
    found = problems(SERVICE + f"    queue: {block}\n", tmp_path)
    assert any(line.startswith(problem) for line in found), found


async def test_a_password_variable_the_worker_lacks_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MQ_PASSWORD", raising=False)
    queue = RabbitMQQueueSpec(
        url="amqp://scaler@127.0.0.1/", queue="jobs", password_env="MQ_PASSWORD"
    )
    plan = ServicePlan(name="web", backend="compose", queue=queue)
    source = RabbitMQSource()
    try:
        with pytest.raises(MetricConfigError) as error:
            await source.sample(plan)
    finally:
        await source.close()
    assert str(error.value) == (
        "queue.password_env: MQ_PASSWORD is not set in the worker's environment"
    )


async def test_a_plan_smuggling_a_reserved_variable_is_refused_by_the_source() -> None:
    """A plan that did not come through the loader (a workflow input) is read by the source's
    own model, with the same check: the worker never reads the variable."""
    plan = ServicePlan.model_validate(
        {
            "name": "web",
            "backend": "compose",
            "queue": {"kind": "rabbitmq", "queue": "jobs", "password_env": "OPENAI_API_KEY"},
        }
    )
    with pytest.raises(MetricConfigError, match="OPENAI_API_KEY is used for something else"):
        await RabbitMQSource().sample(plan)
