"""Structure checks: the package's import graph has no circles (a circle makes import order matter
and hides a dependency that runs the wrong way: e.g. engine/train importing the loop for an error
class, or the SBD builder borrowing the downloader's console)."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "segkd"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(mod: str, node: ast.ImportFrom, is_pkg: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the segkd modules it imports (anywhere in the file, function bodies included)."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, node, is_pkg)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                while t and t not in files:  # `from x import name`: the module is x
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _without_package_faces(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop edges into a package's ``__init__`` from its own children (``from . import x``)."""
    return {m: {t for t in deps if not m.startswith(t + ".")} for m, deps in graph.items()}


def test_import_graph_has_no_circles():
    cycles = _cycles(_without_package_faces(import_graph()))
    assert not cycles, f"import circles: {cycles}"


def test_circle_detector_sees_a_planted_circle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(g) == [["a", "b", "c"]]


def test_no_top_level_module_shadows_the_standard_library():
    """segkd/inspect.py was renamed describe.py: a top-level module named like a stdlib one is
    imported instead of it by anything run from inside the package folder."""
    import sys

    names = {p.stem for p in PKG.glob("*.py")}
    shadowing = sorted(n for n in names if n in sys.stdlib_module_names and n not in {"__init__"})
    assert not shadowing, f"modules named like the standard library: {shadowing}"
