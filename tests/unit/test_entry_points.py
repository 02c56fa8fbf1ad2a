"""The entry points as a newcomer runs them, as child processes and with no server: problems are
one line each on stderr with the exit code of docktor/exits.py, and what they print is what to
type."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from docktor.dev.embedded import free_port
from docktor.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DOCKTOR_CONFIG", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE")
    }
    # The modules of this checkout, wherever the child runs.
    environment["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def write(tmp_path: Path, document: dict[str, object]) -> Path:
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_ignored_settings_are_one_warning_each_and_the_file_is_valid(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "version": 1,
            "services": [
                {"name": "w", "queue": {"stream": "S", "consumer": "c", "subject": "jobs.>"}}
            ],
        },
    )
    result = run("docktor", "config", "validate", "--offline", "--config", str(path))
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.startswith("OK ")
    assert result.stderr.splitlines() == [
        "warning: version: ignored (there is one format; a file needs no version)",
        "warning: services[0].queue.subject: ignored (the consumer's own filter decides what "
        "it reads)",
    ]


def test_every_problem_of_a_file_at_once_exit_2(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"services": [{"name": "a", "max_replicas": 0}, {"name": "a", "min_replicas": -1}]},
    )
    for entry in (("docktor", "config", "validate"), ("worker",)):
        result = run(*entry, "--config", str(path))
        assert result.returncode == EXIT_USAGE, entry
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            "error: services[0].max_replicas: must be greater than or equal to 1",
            "error: services[1].min_replicas: must be greater than or equal to 0",
            "error: services[1].name: duplicate service name 'a' (also services[0])",
        ], entry


def test_unreachable_temporal_is_one_whole_line_exit_1(tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    path = write(
        tmp_path,
        {
            "temporal": {"address": nowhere},
            "services": [{"name": "w", "backend": "processes", "command": ["sleep", "1"]}],
        },
    )
    for entry in (("starter", "--service", "w"), ("docktor", "status")):
        result = run(*entry, "--config", str(path))
        assert result.returncode == EXIT_FAILED, entry
        assert result.stdout == "", entry
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert errors == [
            f"error: cannot reach Temporal at {nowhere} (tcp connect error: Connection refused); "
            "is it running? (`docktor dev` starts one, or set TEMPORAL_ADDRESS)"
        ], (entry, result.stderr)


def test_a_missing_default_config_says_how_to_name_one(tmp_path: Path) -> None:
    result = run("worker", "--metrics-port", str(free_port()), cwd=tmp_path)
    assert result.returncode == EXIT_USAGE
    assert result.stderr.splitlines() == [
        "error: docktor.yaml: no such file (pass --config FILE, or set DOCKTOR_CONFIG)"
    ]


def test_dev_reports_a_taken_port_on_stderr(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write(
            tmp_path,
            {
                "temporal": {"address": f"127.0.0.1:{port}"},
                "services": [{"name": "w", "backend": "processes", "command": ["sleep", "1"]}],
            },
        )
        result = run("docktor", "dev", "--config", str(path), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == EXIT_FAILED
    assert "error:" not in result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and f"port {port}" in line


def test_demo_help_gives_the_duration_make_demo_uses() -> None:
    result = run("docktor", "demo", "--help")
    assert result.returncode == EXIT_OK
    assert "(default 150)" in " ".join(result.stdout.split())
    assert "DURATION ?= 150" in (REPO / "Makefile").read_text()
