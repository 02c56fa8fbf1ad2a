"""The docs stay readable and their links keep working.

README.md is the front page: short, and every link in it, in docs/ and in the benchmarks'
README resolves to a file of the repository (and an `#anchor` to a heading of that file, as
GitHub slugs it). The docs describe the product, not how it was made: no issue numbers, no
working-session narrative, no upstream bug numbers.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
README_MAX_LINES = 200
LINKED_DOCS = sorted(
    [
        README,
        REPO / "SECURITY.md",
        REPO / "benchmarks" / "README.md",
        *(REPO / "docs").glob("*.md"),
        *(REPO / "examples").glob("*/README.md"),
    ]
)

FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
# What the docs must not say: they describe the product, not its history.
NARRATIVE = {
    "an issue number": re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE),
    "a working session": re.compile(r"\bsessions?\b", re.IGNORECASE),
    "an upstream bug number": re.compile(r"\b[\w.-]+/[\w.-]+#\d+"),
}


def _name(path: Path, root: Path = REPO) -> str:
    return str(path.relative_to(root)) if root in path.parents else path.name


def _prose(text: str) -> str:
    """The text without code blocks and inline code: links and words in code are examples."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed
    (letters, digits, `-`, `_` and spaces stay), spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    kept = "".join(
        ch
        for ch in text
        if ch in " -_" or unicodedata.category(ch)[0] in "LN" or unicodedata.category(ch) == "Mn"
    )
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file, duplicates numbered as GitHub numbers them."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, title in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = github_slug(title)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    """One line per link of `path` that does not lead to a file under `root` (with the heading
    its anchor names, for a Markdown file)."""
    problems = []
    for target in LINK.findall(_prose(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # http:, https:, mailto: are not files of the repository
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{_name(path)}: {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{_name(path)}: {target}: no heading #{anchor} in {linked.name}")
        elif root not in linked.parents and linked != root:
            problems.append(f"{_name(path)}: {target}: outside the repository")
    return problems


def test_the_readme_is_at_most_200_lines() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; reference belongs in docs/, measurements in "
        f"benchmarks/README.md"
    )


@pytest.mark.parametrize("path", LINKED_DOCS, ids=_name)
def test_every_relative_link_resolves(path: Path) -> None:
    assert not broken_links(path)


@pytest.mark.parametrize("path", LINKED_DOCS, ids=_name)
def test_the_docs_tell_no_history(path: Path) -> None:
    prose = _prose(path.read_text(encoding="utf-8"))
    found = [
        f"{what}: {match.group(0)!r}"
        for what, pattern in NARRATIVE.items()
        for match in pattern.finditer(prose)
    ]
    assert not found, f"{_name(path)} tells history: {found}"


def test_the_readme_shows_the_commands_make_test_runs() -> None:
    """`make test` is what CI runs; the README shows its commands as the Makefile has them."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "the Makefile has no test target"
    commands = [
        line.strip().replace("$(BIN)", ".venv/bin").replace("$(VENV)", ".venv")
        for line in recipe.group(1).splitlines()
    ]
    readme = README.read_text(encoding="utf-8")
    assert "make test" in readme
    missing = [command for command in commands if command not in readme]
    assert not missing, f"README.md does not show what `make test` runs: {missing}"


# The checker itself, on small cases, so a link test that passes is not a checker that skips.


def test_the_slug_is_githubs() -> None:
    assert github_slug("Many loops: `benchmarks/loops.py`") == "many-loops-benchmarksloopspy"
    assert github_slug("Control tools (`--allow-control` only)") == (
        "control-tools---allow-control-only"
    )
    assert github_slug("1b. Pre-scale") == "1b-pre-scale"
    assert github_slug("What survives what") == "what-survives-what"


def test_a_broken_link_and_a_missing_anchor_are_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Its part\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Here\n\n"
        "[ok](other.md#its-part) [self](#here) [web](https://example.com/x.md)\n"
        "[gone](missing.md) [no anchor](other.md#nowhere) [none here](#elsewhere)\n"
        "```\n[in code](not-checked.md)\n```\n",
        encoding="utf-8",
    )
    problems = broken_links(page, root=tmp_path)
    assert len(problems) == 3, problems
    assert any("missing.md: no such file" in p for p in problems)
    assert any("#nowhere" in p for p in problems)
    assert any("#elsewhere" in p for p in problems)


def test_history_in_prose_is_found_and_code_is_left_alone() -> None:
    prose = _prose(
        "Fixed in issue 8 during the session; see temporalio/sdk-java#3088.\n"
        "```python\nasync with ClientSession() as session: ...\n```\n"
    )
    found = [name for name, pattern in NARRATIVE.items() if pattern.search(prose)]
    assert sorted(found) == sorted(NARRATIVE)
    code_only = _prose("`session.initialize()` and issues")
    assert not any(pattern.search(code_only) for pattern in NARRATIVE.values())


SECURITY_ROW_TEST = re.compile(r"\[([\w.]+\.py)::(\w+)\]\(([^)]+)\)")


def test_every_security_promise_names_a_test_that_exists() -> None:
    """SECURITY.md's table: each row links at least one test, and each linked file defines
    the test it names, so a promise cannot outlive the test that guards it."""
    text = (REPO / "SECURITY.md").read_text(encoding="utf-8")
    table = text.split("## Every promise and the test that breaks it", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) > 10, "SECURITY.md has lost its table of promises"
    for row in rows[1:]:  # the header is not a promise
        links = SECURITY_ROW_TEST.findall(row)
        assert links, f"a promise without a test: {row[:80]}"
        for file_name, test, target in links:
            path = REPO / target
            assert path.name == file_name and path.is_file(), f"{target} for {file_name}"
            source = path.read_text(encoding="utf-8")
            assert re.search(rf"^(async )?def {test}\(", source, re.MULTILINE), (
                f"{target} has no test {test}"
            )
