"""docs/reliability.md names, for each fault or input, the test that proves it: every test it
names must exist, so the table cannot drift from the suite."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "docs" / "reliability.md"
REFERENCE = re.compile(r"`([\w/]+\.py)::(test_\w+)(?:\[[^\]]*\])?`")


def test_every_test_the_reliability_table_names_exists() -> None:
    text = TABLE.read_text(encoding="utf-8")
    references = REFERENCE.findall(text)
    assert len(references) >= 30, "the table should name the tests behind its rows"
    missing = []
    for path, name in references:
        source = REPO / "tests" / path
        if not source.is_file() or not re.search(
            rf"^(async )?def {name}\(", source.read_text(encoding="utf-8"), re.MULTILINE
        ):
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"
