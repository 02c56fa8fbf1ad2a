"""How a queue's credentials are configured, offline: NATS `user` + `password_env` or `creds`,
and `password_env` (NATS and Redis) naming only a variable meant for that password."""

from __future__ import annotations

from pathlib import Path

import pytest

from docktor.plan import ServicePlan
from docktor.sources import MetricConfigError, queue_block
from docktor.sources.nats import NatsMetricSource, NatsQueueSpec
from docktor.spec import load_config
from tests.unit.test_config import problems, write

SERVICE = "services:\n  - name: web\n    backend: processes\n    command: [python, w.py]\n"
NATS = "{kind: nats, stream: JOBS, consumer: workers, "
REDIS = "{kind: redis, stream: jobs, group: g, "


def test_a_nats_queue_takes_a_user_and_the_variable_holding_its_password(
    tmp_path: Path,
) -> None:
    config = load_config(
        write(tmp_path, SERVICE + f"    queue: {NATS}user: scaler, password_env: NATS_PASSWORD}}\n")
    )
    queue = queue_block(config.services[0], NatsQueueSpec)
    assert (queue.user, queue.password_env, queue.creds) == ("scaler", "NATS_PASSWORD", None)


def test_a_password_inline_in_the_url_still_loads(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, SERVICE + f"    queue: {NATS}url: 'nats://u:pw@127.0.0.1:4222'}}\n")
    )
    assert queue_block(config.services[0], NatsQueueSpec).url == "nats://u:pw@127.0.0.1:4222"


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        pytest.param(
            NATS + "user: scaler}",
            "services[0].queue: password_env: required with user",
            id="user-alone",
        ),
        pytest.param(
            NATS + "password_env: NATS_PASSWORD}",
            "services[0].queue: user: required with password_env",
            id="password-alone",
        ),
        pytest.param(
            NATS + "user: u, password_env: NATS_PASSWORD, creds: /etc/nats/u.creds}",
            "services[0].queue: creds: a creds file or user and password_env, not both",
            id="two-logins",
        ),
        pytest.param(
            NATS + "url: 'nats://u:pw@h:4222', user: u, password_env: NATS_PASSWORD}",
            "services[0].queue: url: holds credentials already",
            id="url-and-user",
        ),
    ],
)
def test_nats_credentials_are_given_one_way(tmp_path: Path, block: str, problem: str) -> None:
    found = problems(SERVICE + f"    queue: {block}\n", tmp_path)
    assert any(line.startswith(problem) for line in found), found


@pytest.mark.parametrize(
    "variable",
    [
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "TEMPORAL_API_KEY",
        "TEMPORAL_TLS_KEY",
        "DOCKER_HOST",
        "DOCKTOR_CONFIG",
        "AWS_SECRET_ACCESS_KEY",
        "PATH",
        "HOME",
        "LD_PRELOAD",
        "openai_api_key",
    ],
)
@pytest.mark.parametrize("block", [NATS + "user: u, ", REDIS], ids=["nats", "redis"])
def test_password_env_cannot_name_a_variable_used_for_something_else(
    tmp_path: Path, block: str, variable: str
) -> None:
    found = problems(SERVICE + f"    queue: {block}password_env: {variable}}}\n", tmp_path)
    assert any(
        line.startswith("services[0].queue.password_env: ")
        and f"{variable} is used for something else" in line
        for line in found
    ), found


@pytest.mark.parametrize("block", [NATS + "user: u, ", REDIS], ids=["nats", "redis"])
def test_password_env_must_be_a_variable_name(tmp_path: Path, block: str) -> None:
    found = problems(SERVICE + f"    queue: {block}password_env: 'A B'}}\n", tmp_path)
    assert any(
        line.startswith("services[0].queue.password_env: 'A B' is not an environment variable")
        for line in found
    ), found


@pytest.mark.parametrize("block", [NATS + "user: u, ", REDIS], ids=["nats", "redis"])
def test_a_variable_meant_for_the_password_is_accepted(tmp_path: Path, block: str) -> None:
    load_config(write(tmp_path, SERVICE + f"    queue: {block}password_env: JOBS_PASSWORD}}\n"))


async def test_a_plan_smuggling_a_reserved_variable_is_refused_by_the_source() -> None:
    """A plan that did not come through the loader (a workflow input) is read by the source's
    own model, with the same check: the worker never reads the variable."""
    block = {"kind": "nats", "stream": "S", "consumer": "c", "user": "u"}
    plan = ServicePlan.model_validate(
        {"name": "web", "backend": "compose", "queue": {**block, "password_env": "OPENAI_API_KEY"}}
    )
    with pytest.raises(MetricConfigError, match="OPENAI_API_KEY is used for something else"):
        await NatsMetricSource().sample(plan)


async def test_a_creds_file_the_worker_cannot_read_is_a_config_error(tmp_path: Path) -> None:
    queue = NatsQueueSpec(stream="S", consumer="c", creds="missing.creds")
    plan = ServicePlan(name="web", backend="compose", queue=queue, workdir=str(tmp_path))
    source = NatsMetricSource()
    with pytest.raises(MetricConfigError) as error:
        await source.sample(plan)
    # Relative to the config file's folder, as a service's command arguments are.
    assert str(error.value) == (
        f"queue.creds: {tmp_path / 'missing.creds'} is not a file the worker can read"
    )
    assert source.connections == {}


async def test_an_unset_password_variable_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("JOBS_NATS_PASSWORD", raising=False)
    queue = NatsQueueSpec(stream="S", consumer="c", user="u", password_env="JOBS_NATS_PASSWORD")
    with pytest.raises(MetricConfigError, match="JOBS_NATS_PASSWORD is not set in the worker"):
        await NatsMetricSource().sample(ServicePlan(name="web", backend="compose", queue=queue))
