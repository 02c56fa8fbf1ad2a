"""Imports run one way: interfaces -> client and loop -> domain -> plan and values -> spec ->
leaves. A module may import its own layer or the ones below, never one above; and only the
loop touches the workflow side of the Temporal SDK, so the domain is tested as plain code."""

from __future__ import annotations

import ast

from tests.unit.test_import_cycles import REPO, import_graph, module_files

# Lowest first. A module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "leaves",
        (
            "docktor.names",
            "docktor.plugins",
            "docktor.exit_codes",
            "docktor.private_files",
            "docktor.text",
        ),
    ),
    ("spec", ("docktor.spec",)),
    ("plan and values", ("docktor.plan", "docktor.values")),
    (
        "domain",
        (
            "docktor.policy",
            "docktor.sources",
            "docktor.backends",
            "docktor.docker_engine",
            "docktor.journal",
            "docktor.advisor",
            "docktor.telemetry",
        ),
    ),
    ("client and loop", ("docktor.loop", "docktor.client")),
    ("interfaces", ("docktor.cli", "docktor.views", "docktor.mcp", "docktor.dev", "docktor")),
    ("entry points", ("workflows", "activities", "worker", "starter")),
]


def layer_of(module: str) -> int:
    best: tuple[int, int] | None = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[1]
            ):
                best = (rank, len(prefix))
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]


def test_imports_only_run_down_the_layers() -> None:
    assert upward_imports(import_graph()) == []


def test_the_check_sees_an_upward_import() -> None:
    graph = {"docktor.policy.decide": {"docktor.loop.messages"}, "docktor.loop.messages": set()}
    assert upward_imports(graph) == [
        "docktor.policy.decide (domain) imports docktor.loop.messages (client and loop)"
    ]


def test_only_the_loop_imports_the_workflow_sdk() -> None:
    outside = []
    for name, file in module_files().items():
        if name.startswith("docktor.loop") or not name.startswith("docktor"):
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "temporalio":
                if any(alias.name == "workflow" for alias in node.names):
                    outside.append(str(file.relative_to(REPO)))
            elif isinstance(node, ast.ImportFrom | ast.Import):
                mods = [node.module] if isinstance(node, ast.ImportFrom) else []
                mods += [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if any(m and m.startswith("temporalio.workflow") for m in mods):
                    outside.append(str(file.relative_to(REPO)))
    assert outside == []
