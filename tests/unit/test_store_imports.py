"""The stores package imports in one direction: contracts below the backends, no circles."""

from __future__ import annotations

import ast
from pathlib import Path

import modelport

PACKAGE = Path(modelport.__file__).parent


def imports_of(path: Path) -> set[str]:
    """Every ``modelport`` module a file imports, ``TYPE_CHECKING`` blocks included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("modelport"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("modelport"))
    return found


def module_graph(folder: Path) -> dict[str, set[str]]:
    modules = {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p
        for p in folder.rglob("*.py")
    }
    return {name: imports_of(path) & set(modules) for name, path in modules.items()}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for nxt in sorted(graph[node]):
            found = visit(nxt, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def test_the_stores_have_no_import_circle() -> None:
    assert cycle(module_graph(PACKAGE / "stores")) is None


def test_the_online_store_contract_imports_none_of_its_backends() -> None:
    graph = module_graph(PACKAGE / "stores")
    assert not {m for m in graph["modelport.stores.online"] if m.startswith("modelport.stores.")}
