"""The mcp package imports one way: server.py -> tools/resources/prompt -> context.py, and
none of them back into the CLI; each is an adapter over docktor.client.operate and views."""

from __future__ import annotations

import ast
from pathlib import Path

import docktor.mcp

PACKAGE = Path(docktor.mcp.__file__).parent
# What each module may import of the package (function-level imports count too).
ALLOWED = {
    "__init__": set(),
    "context": set(),
    "auth": set(),
    "tools": {"context"},
    "resources": {"context"},
    "prompt": {"context"},
    "server": {"context", "tools", "resources", "prompt", "auth"},
}


def imported(path: Path) -> set[str]:
    """The docktor modules a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path.name}: relative import"
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "docktor"}


def siblings(names: set[str]) -> set[str]:
    return {name.split(".")[2] for name in names if name.startswith("docktor.mcp.")}


def test_the_mcp_package_imports_one_way() -> None:
    modules = {path.stem: path for path in PACKAGE.glob("*.py")}
    assert set(modules) == set(ALLOWED), "a module was added: say what it may import"
    for name, path in modules.items():
        names = imported(path)
        assert siblings(names) <= ALLOWED[name], name
        # The CLI imports the server, never the other way round.
        assert not {n for n in names if n.split(".")[:2] == ["docktor", "cli"]}, name
