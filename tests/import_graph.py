"""The import graph of a package, read from its source (every import statement, at module
level or inside a function): for the layering tests of tests/test_packaging.py."""

from __future__ import annotations

import ast
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(root: Path) -> dict[str, list[tuple[str, int]]]:
    """Module -> every (imported module, line) of the package under ``root``. ``from a.b
    import c`` counts as an import of ``a.b.c`` when that is a module of the package, else
    of ``a.b``; relative imports are resolved."""
    files = {module_name(root, p): p for p in root.rglob("*.py")}
    graph: dict[str, list[tuple[str, int]]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        edges = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges += [(a.name, node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for a in node.names:
                    full = f"{base}.{a.name}"
                    edges.append((full if full in files else base, node.lineno))
        graph[mod] = edges
    return graph


def find_cycle(graph: dict[str, list[tuple[str, int]]]) -> list[str] | None:
    """One cycle among the package's own modules (a list of module names, first == last), or
    None."""
    inside = {m: [e for e, _ in edges if e in graph and e != m] for m, edges in graph.items()}
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in inside[m]:
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(inside):
        if m not in state and (found := visit(m)):
            return found
    return None
