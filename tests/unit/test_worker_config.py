"""docktor.loop.authority: what a worker will run is what its own file says."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from docktor.loop.authority import Refused, WorkerConfig
from docktor.plan import LLMPlan, ServicePlan
from docktor.spec import load_config


def write(path: Path, max_replicas: int = 4, **top: object) -> Path:
    document = {
        "project": "shop",
        "state_dir": str(path.parent / "state"),
        "services": [
            {
                "name": "consumer",
                "backend": "processes",
                "command": [sys.executable, "-c", "pass"],
                "max_replicas": max_replicas,
            }
        ],
        **top,
    }
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def own(tmp_path: Path) -> WorkerConfig:
    return WorkerConfig.from_file(write(tmp_path / "docktor.yaml"))


def test_the_workers_own_plan_is_allowed(own: WorkerConfig, tmp_path: Path) -> None:
    config = load_config(tmp_path / "docktor.yaml")
    plan = ServicePlan.from_spec(config.service("consumer"))
    allowed = own.check_plan("shop", plan)
    assert allowed.plan == plan and allowed.project == "shop"
    assert own.journal_path(config.journal_path) == config.journal_path


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"command": ["/bin/sh", "-c", "id"]}, "plan.command"),
        ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "plan.env"),
        ({"backend": "compose"}, "plan.backend"),
        ({"state_dir": "/etc"}, "plan.state_dir"),
        ({"max_replicas": 1000}, "plan.max_replicas"),
    ],
)
def test_a_plan_that_differs_in_any_field_is_refused_naming_it(
    own: WorkerConfig, tmp_path: Path, change: dict[str, object], named: str
) -> None:
    plan = ServicePlan.from_spec(load_config(tmp_path / "docktor.yaml").service("consumer"))
    with pytest.raises(Refused, match=named.replace(".", r"\.")):
        own.check_plan("shop", plan.model_copy(update=change))


def test_a_service_or_project_it_does_not_have_is_refused(own: WorkerConfig) -> None:
    with pytest.raises(Refused, match="not in this worker's config"):
        own.allowed("shop", "api")
    with pytest.raises(Refused, match="serves project 'shop'"):
        own.allowed("other", "consumer")


def test_a_worker_without_a_config_runs_nothing() -> None:
    with pytest.raises(Refused, match="no config"):
        WorkerConfig(None).allowed("shop", "consumer")


def test_another_model_server_or_log_file_is_refused(own: WorkerConfig) -> None:
    allowed = own.allowed("shop", "consumer")
    elsewhere = allowed.llm.model_copy(update={"base_url": "http://attacker.example/v1"})
    with pytest.raises(Refused, match=r"llm\.base_url"):
        own.check_llm(allowed, elsewhere)
    assert own.check_llm(allowed, LLMPlan.none()) == allowed.llm  # the config has none
    with pytest.raises(Refused, match="not this worker's decision log"):
        own.journal_path("/root/.bashrc")


def test_an_edit_of_the_file_is_taken_and_a_broken_edit_keeps_the_last_good_one(
    own: WorkerConfig, tmp_path: Path
) -> None:
    path = write(tmp_path / "docktor.yaml", max_replicas=9)
    os.utime(path, ns=(1, 1))  # another stamp, whatever the clock's resolution
    assert own.allowed("shop", "consumer").plan.max_replicas == 9
    path.write_text("services: [")
    assert own.allowed("shop", "consumer").plan.max_replicas == 9


def test_a_long_hostile_name_stays_short_in_the_refusal(own: WorkerConfig) -> None:
    with pytest.raises(Refused) as refused:
        own.allowed("shop", "\x1b[2J" + "a" * 10_000)
    assert len(str(refused.value)) < 200 and "\x1b" not in str(refused.value)


def test_a_queue_field_an_older_release_did_not_send_is_not_a_difference(tmp_path: Path) -> None:
    path = write(tmp_path / "docktor.yaml")
    data = yaml.safe_load(path.read_text())
    data["services"][0]["queue"] = {
        "kind": "nats",
        "url": "nats://127.0.0.1:4222",
        "stream": "JOBS",
        "consumer": "workers",
    }
    path.write_text(yaml.safe_dump(data))
    own = WorkerConfig.from_file(path)
    plan = own.allowed("shop", "consumer").plan.model_dump(mode="json")
    # As a loop started before the NATS login fields existed carries its queue block.
    older = {k: v for k, v in plan["queue"].items() if v is not None}
    assert set(older) < set(plan["queue"])
    sent = ServicePlan.model_validate({**plan, "queue": older})
    assert own.check_plan("shop", sent).plan.name == "consumer"
    with pytest.raises(Refused, match=r"plan\.queue\.url"):
        own.check_plan(
            "shop", ServicePlan.model_validate({**plan, "queue": {**older, "url": "nats://x"}})
        )
