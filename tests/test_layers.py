"""The layout shows the architecture: each layer imports only the layers below it.

permissions/ (the policy, pure) < resolvers/ (data access) < schema/ (the GraphQL
types) < server/ (the serving app and the commands). Imports under
``if TYPE_CHECKING:`` are for annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("permissions", "resolvers", "schema", "server")
# What each layer may import from outside the standard library and itself, besides the layers below it.
NEVER = {
    "permissions": ("strawberry", "graphql", "sqlalchemy", "asyncpg", "starlette"),
    "resolvers": ("strawberry", "graphql", "starlette"),
    "schema": ("starlette",),
}


def _modules() -> dict[str, Path]:
    found = {}
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _run_time_imports(path: Path) -> set[str]:
    """Module names imported when the module runs (not those under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    annotations_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and isinstance(branch.test, ast.Name) and branch.test.id == "TYPE_CHECKING"
        for node in ast.walk(branch)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in annotations_only:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _project_imports(path: Path) -> set[str]:
    return {name for name in _run_time_imports(path) if name in MODULES}


def test_the_layers_are_found() -> None:
    assert {name.split(".")[0] for name in MODULES} == set(LAYERS)
    assert "server.graphql_http" in MODULES and "resolvers.audit_store" in MODULES


@pytest.mark.parametrize("layer", LAYERS[:-1])
def test_a_layer_imports_nothing_from_the_layers_above_it(layer: str) -> None:
    above = LAYERS[LAYERS.index(layer) + 1 :]
    wrong = sorted(
        f"{name} imports {imported}"
        for name, path in MODULES.items()
        if name.split(".")[0] == layer
        for imported in _project_imports(path)
        if imported.split(".")[0] in above
    )
    assert wrong == [], f"{layer}/ must not import {', '.join(above)}: " + "; ".join(wrong)


@pytest.mark.parametrize("layer", sorted(NEVER))
def test_a_layer_does_not_import_the_libraries_of_the_layers_above_it(layer: str) -> None:
    wrong = sorted(
        f"{name} imports {imported}"
        for name, path in MODULES.items()
        if name.split(".")[0] == layer
        for imported in _run_time_imports(path)
        if imported.split(".")[0] in NEVER[layer]
    )
    assert wrong == [], "; ".join(wrong)


def test_no_module_imports_itself_back_through_others() -> None:
    graph = {name: _project_imports(path) - {name} for name, path in MODULES.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for imported in sorted(graph[name]):
            if state.get(imported) == 1:
                cycles.append([*path[path.index(imported) :], imported])
            elif imported not in state:
                visit(imported)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)
