"""`docktor config validate --offline` on generated bad configs, as a user runs it: a real
subprocess, whose exit code is 0 (valid) or 2 (one `error:` line per problem), never a
traceback. The generators are tests/unit/test_bad_input.py's; a handful of examples is enough
here, since the in-process properties cover the breadth and this proves the CLI's path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from docktor.spec import ConfigError, parse_config
from tests.unit.test_bad_input import mutated

pytestmark = pytest.mark.integration


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENAI_API_KEY", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "DOCKTOR_CONFIG")
    }
    return subprocess.run(
        [sys.executable, "-m", "docktor", "config", "validate", "--offline", "--config", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        env=environment,
        timeout=60,
    )


def assert_clean_exit(result: subprocess.CompletedProcess[str], valid: bool) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    if valid:
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("OK  ")
        return
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), result.stderr


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=st.one_of(mutated(), st.text(max_size=200)))
def test_validate_exits_0_or_2_on_generated_configs(
    text: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("cfg")
    path = folder / "docktor.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        parse_config(text, base_dir=folder, source=str(path))
        valid = True
    except ConfigError:
        valid = False
    assert_clean_exit(validate(path), valid)


@pytest.mark.parametrize(
    "content",
    [
        b"services:\n  - name: caf\xe9\n",  # Latin-1, not UTF-8
        b"\x00\x01\x02\xff\xfe",
        b"- " * 1100 + b"x",
        b"? [a]\n: 1\n",
        b"project: ../shop\nservices:\n  - name: api\n",
    ],
    ids=["latin1", "binary", "deep", "unhashable-key", "project-path"],
)
def test_validate_refuses_hostile_files_without_a_traceback(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "docktor.yaml"
    path.write_bytes(content)
    assert_clean_exit(validate(path), valid=False)


def test_validate_refuses_a_folder_in_one_line(tmp_path: Path) -> None:
    result = validate(tmp_path)
    assert_clean_exit(result, valid=False)
    assert result.stderr == f"error: {tmp_path}: cannot read (Is a directory)\n"
