"""docktor.spec: both config forms, path resolution, env overrides, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from docktor import plugins
from docktor.plan import ServicePlan
from docktor.sources import queue_kinds
from docktor.spec import ConfigError, DocktorConfig, load_config, parse_config, parse_duration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "nats-multi"


def write(tmp_path: Path, text: str, name: str = "docktor.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(text: str, tmp_path: Path) -> list[str]:
    """The ConfigError lines for `text`; fails the test if the text is accepted."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return caught.value.problems


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's shell must not leak into what the loader reads.
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "DOCKTOR_CONFIG"):
        monkeypatch.delenv(name, raising=False)


# ---- the multi-service form -------------------------------------------------------------------


def test_minimal_multi_service_form_gets_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "services:\n  - name: web\n"))

    service = config.service("web")
    assert config.service_names() == ["web"]
    assert service.backend == "compose"
    assert (service.min_replicas, service.max_replicas) == (1, 10)
    assert (service.scale_up_by, service.scale_down_by) == (1, 1)
    assert service.check_interval == 15.0
    assert service.metrics_window == ServicePlan.from_spec(service).window == 15.0
    assert (service.cooldown.up, service.cooldown.down) == (30.0, 120.0)
    assert service.rules.scale_up_when == [] and service.rules.scale_down_when == []
    assert config.temporal.address == "127.0.0.1:7233"
    assert config.llm.provider == "none"
    assert config.workflow_id("web") == f"docktor:{config.project}:web"


def test_project_defaults_to_sanitised_folder_name(tmp_path: Path) -> None:
    folder = tmp_path / "My Shop!"
    folder.mkdir()
    config = load_config(write(folder, "services:\n  - name: web\n"))
    assert config.project == "myshop"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("check_interval", "0"),
        ("check_interval", "'0s'"),
        ("check_interval", "-5"),
        ("metrics_window", "0"),
        ("metrics_window", "-1"),
        ("check_interval", ".nan"),
    ],
)
def test_interval_cannot_be_zero_or_negative(tmp_path: Path, field: str, value: str) -> None:
    lines = problems(f"services:\n  - name: web\n    {field}: {value}\n", tmp_path)
    assert len(lines) == 1
    assert lines[0].startswith(f"services[0].{field}: ")


def test_interval_cannot_be_infinite(tmp_path: Path) -> None:
    lines = problems("services:\n  - name: web\n    check_interval: .inf\n", tmp_path)
    assert lines[0].startswith("services[0].check_interval: ")


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30s", 30.0), ("2m", 120.0), (15, 15.0), ("15", 15.0), ("500ms", 0.5), ("1h", 3600.0)],
)
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


def test_durations_in_a_file(tmp_path: Path) -> None:
    text = (
        "services:\n  - name: web\n    check_interval: 30s\n    metrics_window: 2m\n"
        "    cooldown: {up: 15, down: 1.5m}\n"
    )
    service = load_config(write(tmp_path, text)).services[0]
    assert service.check_interval == 30.0
    assert service.metrics_window == 120.0
    assert (service.cooldown.up, service.cooldown.down) == (15.0, 90.0)


@pytest.mark.parametrize("raw", ["soon", "5 minutes", "-5s", True, None, [5]])
def test_bad_durations_are_refused(raw: object) -> None:
    with pytest.raises(ValueError, match="must be a duration"):
        parse_duration(raw)


# ---- the legacy single-service form -----------------------------------------------------------

LEGACY = """\
service: web
compose_file: compose.yaml
scaling:
  cpu_high: 75
  cpu_low: 25
  min_replicas: 2
  max_replicas: 8
  scale_up_by: 3
  scale_down_by: 2
  check_interval: 20
  metrics_window: 1m
"""


def test_legacy_form_becomes_one_service_with_cpu_rules(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, LEGACY))

    assert config.service_names() == ["web"]
    service = config.services[0]
    assert service.backend == "compose"
    assert (service.min_replicas, service.max_replicas) == (2, 8)
    assert (service.scale_up_by, service.scale_down_by) == (3, 2)
    assert service.check_interval == 20.0
    assert service.metrics_window == 60.0
    up, down = service.rules.scale_up_when, service.rules.scale_down_when
    assert [(c.metric, c.op, c.value) for c in up] == [("cpu.avg_pct", ">", 75)]
    assert [(c.metric, c.op, c.value) for c in down] == [("cpu.avg_pct", "<", 25)]
    assert config.compose_file == str(tmp_path / "compose.yaml")


def test_legacy_defaults_keep_the_go_tool_steps(tmp_path: Path) -> None:
    service = load_config(write(tmp_path, "service: web\n")).services[0]
    assert (service.scale_up_by, service.scale_down_by) == (2, 1)
    assert [(c.metric, c.op, c.value) for c in service.rules.scale_up_when] == [
        ("cpu.avg_pct", ">", 80)
    ]
    assert [(c.metric, c.op, c.value) for c in service.rules.scale_down_when] == [
        ("cpu.avg_pct", "<", 20)
    ]


def test_legacy_thresholds_must_be_ordered(tmp_path: Path) -> None:
    lines = problems("service: web\nscaling: {cpu_high: 50, cpu_low: 60}\n", tmp_path)
    assert lines == ["scaling.cpu_low: must be < cpu_high (50)"]


def test_legacy_max_below_min(tmp_path: Path) -> None:
    lines = problems("service: web\nscaling: {min_replicas: 5, max_replicas: 2}\n", tmp_path)
    assert lines == ["scaling.max_replicas: must be >= min_replicas (5)"]


def test_legacy_typo_is_named_with_suggestion(tmp_path: Path) -> None:
    lines = problems("service: web\nscaling: {cpu_hgh: 70}\n", tmp_path)
    assert lines == ["scaling.cpu_hgh: unknown field (did you mean 'cpu_high'?)"]


# ---- paths and environment --------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path = tmp_path.resolve()  # the loader resolves symlinks; compare like with like
    folder = tmp_path / "conf"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The working directory must not matter: only where the file lives.
    monkeypatch.chdir(elsewhere)
    text = (
        "compose_file: ../stack/compose.yaml\n"
        "journal: logs/decisions.jsonl\n"
        "services:\n"
        "  - name: worker\n"
        "    backend: processes\n"
        "    command: [python, -u, consumer.py, --flag, other.py]\n"
        "  - name: script\n"
        "    backend: processes\n"
        "    command: [./run.sh, --queue, jobs]\n"
        "  - name: absolute\n"
        "    backend: processes\n"
        "    command: [python, /opt/app/main.py]\n"
    )
    config = load_config(write(folder, text))

    # Resolved, not necessarily normalised: compare the files they point at.
    assert config.compose_file is not None
    assert Path(config.compose_file).resolve() == tmp_path / "stack" / "compose.yaml"
    assert config.journal_path == str(folder / "logs" / "decisions.jsonl")
    assert config.state_dir == str(folder / ".docktor")
    worker = config.service("worker")
    assert worker.command == [
        "python",
        "-u",
        str(folder / "consumer.py"),
        "--flag",
        str(folder / "other.py"),
    ]
    assert worker.workdir == str(folder)
    assert worker.state_dir == str(folder / ".docktor" / "worker")
    assert config.service("script").command == [str(folder / "run.sh"), "--queue", "jobs"]
    assert config.service("absolute").command == ["python", "/opt/app/main.py"]


def test_temporal_address_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "temporal: {address: 'file:7233'}\nservices:\n  - name: web\n")
    assert load_config(path).temporal.address == "file:7233"

    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal.internal:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "prod")
    config = load_config(path)
    assert config.temporal.address == "temporal.internal:7233"
    assert config.temporal.namespace == "prod"


def test_docktor_config_env_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "services:\n  - name: from-env\n", name="custom.yaml")
    monkeypatch.setenv("DOCKTOR_CONFIG", str(path))
    assert load_config().service_names() == ["from-env"]


def test_default_file_name_is_docktor_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "services:\n  - name: local\n")
    monkeypatch.chdir(tmp_path)
    assert load_config().service_names() == ["local"]


# ---- one line per fault, field path first -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "services:\n  - name: web\n    min_replica: 2\n",
            "services[0].min_replica: unknown field (did you mean 'min_replicas'?)",
            id="unknown-key",
        ),
        pytest.param(
            "services:\n  - name: web\n    cooldown: {upp: 3}\n",
            "services[0].cooldown.upp: unknown field (did you mean 'up'?)",
            id="unknown-nested-key",
        ),
        pytest.param(
            "services:\n  - name: web\n    max_replicas: 2\n    min_replicas: 5\n",
            "services[0].max_replicas: must be >= min_replicas (5)",
            id="max-below-min",
        ),
        pytest.param(
            "services:\n  - name: web\n    queue: {kind: kafka, stream: S, consumer: c}\n",
            "services[0].queue.kind: unknown queue kind 'kafka' "
            f"(installed: {', '.join(queue_kinds())})",
            id="queue-kind",
        ),
        pytest.param(
            "services:\n  - name: web\n    queue: {kind: docker}\n",
            "services[0].queue.kind: the docker source is not configured by a queue: block "
            f"(installed: {', '.join(queue_kinds())})",
            id="queue-kind-not-a-queue",
        ),
        pytest.param(
            "services:\n  - name: web\n    queue: {stream: S, consumer: c, strem: T}\n",
            "services[0].queue.strem: unknown field (did you mean 'stream'?)",
            id="queue-unknown-field",
        ),
        pytest.param(
            "services:\n  - name: web\n    queue: {stream: S}\n",
            "services[0].queue.consumer: required field is missing",
            id="queue-missing-field",
        ),
        pytest.param(
            "services:\n  - name: web\n    queue: {stream: S, consumer: c, metrics: [queue.bl]}\n",
            "services[0].queue.metrics: unknown nats metric 'queue.bl' (known: queue.backlog, "
            "queue.ack_pending, queue.redelivered, queue.waiting, queue.lag, queue.rate_in, "
            "queue.rate_out)",
            id="queue-unknown-metric",
        ),
        pytest.param(
            "services:\n  - name: web\n    backend: k8s\n",
            "services[0].backend: must be one of the installed backends "
            f"({', '.join(plugins.names(plugins.BACKENDS))}), not 'k8s'",
            id="backend",
        ),
        pytest.param(
            "services:\n  - name: a\n  - name: b\n  - name: a\n",
            "services[2].name: duplicate service name 'a' (also services[0])",
            id="duplicate-names",
        ),
        pytest.param(
            "services:\n  - name: web\n    backend: processes\n",
            "services[0].command: required when backend is 'processes'",
            id="processes-without-command",
        ),
        pytest.param(
            "services:\n  - name: web\n    backend: processes\n    command: []\n",
            "services[0].command: must name a program to run, e.g. ['python', 'consumer.py']",
            id="processes-empty-command",
        ),
    ],
)
def test_bad_input_gives_one_line_naming_the_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert problems(text, tmp_path) == [expected]


def test_wrong_type_names_field_and_value(tmp_path: Path) -> None:
    lines = problems("services:\n  - name: web\n    min_replicas: lots\n", tmp_path)
    assert len(lines) == 1
    assert lines[0].startswith("services[0].min_replicas: must be a valid integer")
    assert lines[0].endswith("got 'lots'")


def test_bad_operator(tmp_path: Path) -> None:
    text = (
        "services:\n  - name: web\n    rules:\n      scale_up_when:\n"
        "        - {metric: queue.backlog, op: '=>', value: 500}\n"
    )
    lines = problems(text, tmp_path)
    assert len(lines) == 1
    assert lines[0].startswith("services[0].rules.scale_up_when[0].op: must be one of ")
    assert lines[0].endswith("not '=>'")


def test_yaml_syntax_error_has_line_number(tmp_path: Path) -> None:
    lines = problems("services:\n  - name: web\n   bad: [\n", tmp_path)
    assert len(lines) == 1
    assert lines[0].startswith(f"{tmp_path / 'docktor.yaml'}:3:")
    assert "YAML syntax error" in lines[0]


def test_a_problem_line_is_printable_whatever_the_file_is_called(tmp_path: Path) -> None:
    # The file's name is quoted in a YAML error; on a terminal its escape sequences would act.
    path = tmp_path / "docktor\x1b[2J\x07.yaml"
    path.write_text("services: [\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [line] = caught.value.problems
    assert line.isprintable()
    assert line.startswith(f"{tmp_path / 'docktor.yaml'}:2:1: YAML syntax error")


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "a list"), ("just words\n", "a str"), ("", "empty")]
)
def test_file_that_is_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    lines = problems(text, tmp_path)
    assert lines == [
        f"{tmp_path / 'docktor.yaml'}: must be a mapping of settings, but the file is {kind}"
    ]


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert caught.value.problems == [f"{missing}: no such file"]


def test_several_faults_give_several_lines(tmp_path: Path) -> None:
    text = "services:\n  - name: web\n    min_replica: 2\n    backend: k8s\n"
    lines = problems(text, tmp_path)
    assert sorted(line.split(":")[0] for line in lines) == [
        "services[0].backend",
        "services[0].min_replica",
    ]
    assert str(ConfigError(lines)) == "\n".join(lines)


# ---- the shipped examples ---------------------------------------------------------------------


def test_example_multi_service_config_loads() -> None:
    config = load_config(EXAMPLE / "docktor.yaml")

    assert isinstance(config, DocktorConfig)
    assert config.project == "nats-multi"
    service = config.service("consumer")
    assert service.backend == "processes"
    assert service.command == ["python", str(EXAMPLE / "consumer.py")]
    assert (service.min_replicas, service.max_replicas) == (2, 12)
    assert service.queue is not None
    assert (service.queue.stream, service.queue.consumer) == ("JOBS", "workers")
    # The example runs on the target policy: target tracking with a learned rate feed-forward.
    assert service.policy == "target"
    assert service.target == {"queue.backlog_per_replica": 100}
    assert service.rate.per_replica is None
    assert service.behavior.down.window == 90
    assert ServicePlan.from_spec(service).metric_names() <= {
        "queue.backlog",
        "queue.ack_pending",
        "queue.rate_in",
        "queue.rate_out",
    }


def test_example_legacy_config_loads() -> None:
    config = load_config(EXAMPLE / "docktor.legacy.yaml")

    assert config.project == "nats-multi"
    service = config.service("consumer")
    assert service.backend == "compose"
    assert config.compose_file == str(EXAMPLE / "docker-compose.yaml")
    assert ServicePlan.from_spec(service).metric_names() == {"cpu.avg_pct"}
    assert service.check_interval == 10.0 and service.metrics_window == 30.0


def test_parse_config_reports_the_given_source_name() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[1, 2]", base_dir=Path("/nowhere"), source="inline")
    assert caught.value.problems == [
        "inline: must be a mapping of settings, but the file is a list"
    ]


def test_a_key_written_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    text = "services:\n  - name: web\n    max_replicas: 3\n    max_replicas: 4\n"
    lines = problems(text, tmp_path)
    assert len(lines) == 1
    assert ":4:" in lines[0] and "duplicate key 'max_replicas'" in lines[0]


def test_a_boolean_is_not_a_replica_count(tmp_path: Path) -> None:
    lines = problems("services:\n  - name: web\n    min_replicas: true\n", tmp_path)
    assert lines == ["services[0].min_replicas: must be a valid integer, got True"]


def test_bad_service_name_and_empty_service_list_read_plainly(tmp_path: Path) -> None:
    bad = problems("services:\n  - name: 'my web'\n", tmp_path)
    assert bad[0].startswith("services[0].name: 'my web' is not a valid name")
    assert problems("services: []\n", tmp_path) == ["services: must list at least one service"]


# ---- settings that load but change nothing, and metrics_window ----------------------------------

GO_TOOL_QUEUE = """\
version: 1
services:
  - name: worker
    queue: {kind: nats, jetstream: true, stream: JOBS, consumer: workers, subject: jobs.>}
  - name: web
    queue: {stream: WEB, consumer: w}
"""


def test_ignored_fields_load_with_one_warning_each(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GO_TOOL_QUEUE))

    assert config.service_names() == ["worker", "web"]
    assert config.warnings == [
        "version: ignored (there is one format; a file needs no version)",
        "services[0].queue.jetstream: ignored (docktor always reads a JetStream consumer)",
        "services[0].queue.subject: ignored (the consumer's own filter decides what it reads)",
    ]


def test_the_legacy_form_warns_about_its_version_where_the_file_has_it(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "version: 2\n" + LEGACY))
    assert config.warnings == ["version: ignored (there is one format; a file needs no version)"]
    assert load_config(write(tmp_path, LEGACY)).warnings == []


@pytest.mark.parametrize(
    "name", ["docktor.yaml", "docktor.compose.yaml", "docktor.legacy.yaml"], ids=str
)
def test_the_shipped_examples_load_without_warnings(name: str) -> None:
    assert load_config(EXAMPLE / name).warnings == []


def test_a_duplicate_name_is_reported_with_every_other_problem(tmp_path: Path) -> None:
    text = (
        "services:\n"
        "  - {name: a, max_replicas: 0}\n"
        "  - {name: b, bogus: 1}\n"
        "  - {name: a}\n"
        "  - {name: b}\n"
    )
    assert problems(text, tmp_path) == [
        "services[0].max_replicas: must be greater than or equal to 1",
        "services[1].bogus: unknown field",
        "services[2].name: duplicate service name 'a' (also services[0])",
        "services[3].name: duplicate service name 'b' (also services[1])",
    ]


def test_a_duplicate_name_alone_is_reported_once(tmp_path: Path) -> None:
    lines = problems("services:\n  - {name: a}\n  - {name: a}\n", tmp_path)
    assert lines == ["services[1].name: duplicate service name 'a' (also services[0])"]


def test_metrics_window_is_kept_when_set_and_one_interval_when_not(tmp_path: Path) -> None:
    text = "services:\n  - {name: a, metrics_window: 1m}\n  - {name: b, check_interval: 7s}\n"
    config = load_config(write(tmp_path, text))
    assert ServicePlan.from_spec(config.service("a")).window == 60.0
    assert ServicePlan.from_spec(config.service("b")).window == 7.0


def test_checks_across_a_services_fields_are_reported_with_its_field_problems(
    tmp_path: Path,
) -> None:
    text = (
        "services:\n"
        "  - {name: web, backend: processes, max_replicas: 0}\n"
        "  - name: db\n"
        "    rules: {scale_up_when: [{metric: cpu.avg_pct, op: '>', value: 1}]}\n"
        "    target: {cpu.avg_pct: 50}\n"
        "    min_replicas: x\n"
        "  - {name: q, queue: [not, a, mapping], predict: {enabled: true}}\n"
    )
    assert problems(text, tmp_path) == [
        "services[0].max_replicas: must be greater than or equal to 1",
        "services[0].command: required when backend is 'processes'",
        "services[1].min_replicas: must be a valid integer, got 'x'",
        "services[1].policy: both rules and target are set; choose policy: step or target",
        # Not also `predict: needs a queue`: the file has one, however wrong.
        "services[2].queue: must be a valid dictionary or instance of QueueSpec, got "
        "['not', 'a', 'mapping']",
    ]
