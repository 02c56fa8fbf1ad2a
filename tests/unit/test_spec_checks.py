"""docktor.spec in one mode: the schema refuses unknown keys however it is called and loads no
plugin; the loader adds the checks of the installed plugins and the limits of a user's file,
and reports every problem of a file at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from docktor.loop.messages import AutoscalerInput
from docktor.spec import (
    ConfigError,
    LLMSpec,
    ServiceSpec,
    parse_config,
    spec_problems,
    user_config_problems,
)
from tests.unit.test_import_cycles import import_graph


def test_the_schema_refuses_an_unknown_key_without_any_context() -> None:
    with pytest.raises(ValidationError, match="bogus"):
        ServiceSpec.model_validate({"name": "web", "bogus": 1})
    with pytest.raises(ValidationError, match="upp"):
        ServiceSpec.model_validate({"name": "web", "cooldown": {"upp": 3}})


def test_a_loop_payload_of_another_release_still_decodes() -> None:
    payload = {
        "project": "p",
        "service": {"name": "web", "warmup": "30s", "cooldown": {"up": 1, "jitter": 0.2}},
        "llm": {"provider": "none", "temperature": 0.3},
    }
    decoded = AutoscalerInput.model_validate(payload)
    assert (decoded.service.name, decoded.service.cooldown.up) == ("web", 1.0)


def test_the_schema_reaches_no_plugin_code() -> None:
    graph = import_graph()
    reached: set[str] = set()
    todo = ["docktor.spec.schema"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph[module])
    plugin_code = ("docktor.plugins", "docktor.sources", "docktor.backends")
    assert not [m for m in reached if m.startswith(plugin_code)], sorted(reached)


def test_limits_are_checks_of_a_users_file_and_of_a_change() -> None:
    # A model built in code is not refused for a limit (a running loop's spec is never judged
    # again by a limit added after it started); a change sent to a loop is.
    spec = ServiceSpec(name="web", check_interval=1e12, max_replicas=2**40)
    assert user_config_problems(spec) == [
        "max_replicas: must be at most 2147483647",
        "check_interval: must be at most 366 days (31622400s), not 1e+12s",
        # Unset, it is one check interval.
        "metrics_window: must be at most 366 days (31622400s), not 1e+12s",
    ]
    assert user_config_problems(LLMSpec(timeout_s=1e9)) == [
        "timeout_s: must be at most 366 days (31622400s), not 1e+09s"
    ]
    assert spec_problems(ServiceSpec, {"name": "web", "min_replicas": 3, "max_replicas": 2}) == [
        "max_replicas: must be >= min_replicas (3)"
    ]
    assert spec_problems(ServiceSpec, {"name": "web"}) == []


def test_every_kind_of_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        "project: Shop\n"
        "services:\n"
        "  - name: web\n"
        "    min_replicas: many\n"
        "    check_interval: 9000h\n"
        "    queue: {stream: S, consumer: c, metrics: [queue.bl], strem: T}\n"
        "  - {name: api, backend: k8s, cooldown: {up: 1.0e+12}}\n"
        "  - {name: db, backend: processes}\n"
    )
    with pytest.raises(ConfigError) as refused:
        parse_config(text, base_dir=tmp_path)
    lines = refused.value.problems
    # The file's own settings first, then each service's problems, service by service.
    assert lines[0].startswith("project: 'Shop' is not a valid project name")
    services = [int(line.split("]")[0].removeprefix("services[")) for line in lines[1:]]
    assert services == sorted(services)
    assert sorted(line.split(":")[0] for line in lines) == [
        "project",
        "services[0].check_interval",
        "services[0].min_replicas",
        "services[0].queue.strem",
        "services[1].backend",
        "services[1].cooldown.up",
        "services[2].command",
    ]
