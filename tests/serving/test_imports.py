"""The serving package has no import circle: every ``serving.*`` import, at module level or inside
a function, is an edge of a graph that must stay acyclic (a circle makes import order matter and
hides layering mistakes)."""

from __future__ import annotations

import ast

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "serving"


def serving_imports(path) -> set[str]:
    """The ``serving.*`` modules a file imports anywhere in it."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("serving.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "serving":
                out |= {f"serving.{a.name}" for a in node.names}
            elif node.module.startswith("serving."):
                out.add(node.module)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = {f"serving.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {m: serving_imports(p) & set(modules) for m, p in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_a_circle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import serving.x\ndef f():\n    from serving.y import z\n    from serving import w\n")
    assert serving_imports(f) == {"serving.x", "serving.y", "serving.w"}


def test_serving_has_no_import_circle():
    graph = import_graph()
    assert "serving.dataplane" in graph and graph["serving.v2"]  # the walk found the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
