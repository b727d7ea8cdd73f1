"""The house rules, checked on the source: no module over 500 lines and no function over 60 in the shipped
packages and tools, no import of another module's private name, no import cycle, and no upward arrow
(edge imports nothing above it; training and converters nothing from tools or benchmarks)."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ("edge", "training", "converters", "tools")
ALL = (*SHIPPED, "benchmarks")
# which packages each may import (besides itself): the layers, lowest first; tools and benchmarks are both
# the top (the README tool reads benchmark results, benchmarks use tools' streams), so only a cycle between
# their modules is wrong
ALLOWED = {"edge": set(), "training": {"edge"}, "converters": {"edge", "training"},
           "tools": {"edge", "training", "converters", "benchmarks"},
           "benchmarks": {"edge", "training", "converters", "tools"}}


def _files(packages=ALL):
    return [p for pkg in packages for p in sorted((REPO / pkg).rglob("*.py"))]


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every absolute import in ``path`` (function-level ones too; not those under
    ``if TYPE_CHECKING:``, which never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                   for stmt in node.body for n in ast.walk(stmt)}
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
    return out


def test_no_module_over_500_lines_and_no_function_over_60():
    big, long = [], []
    for path in _files(SHIPPED):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 500:
            big.append(f"{path.relative_to(REPO)} ({text.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert big == [] and long == []


def test_no_private_name_is_imported_from_another_module():
    found = [f"{p.relative_to(REPO)}:{line} {mod}.{name}" for p in _files() for line, mod, names in _imports(p)
             if mod.split(".")[0] in ALL for name in names if name.startswith("_") and not name.startswith("__")]
    assert found == []


def test_no_upward_import_and_no_cycle():
    modules = {_module(p): p for p in _files()}
    graph: dict[str, set[str]] = {}
    upward = []
    for mod, path in modules.items():
        pkg = mod.split(".")[0]
        deps = set()
        for line, target, names in _imports(path):
            top = target.split(".")[0]
            if top not in ALL:
                continue
            if top != pkg and top not in ALLOWED[pkg]:
                upward.append(f"{path.relative_to(REPO)}:{line} imports {target}")
            cands = [f"{target}.{n}" for n in names] + [target]
            deps |= {c for c in cands if c in modules and c != mod}
        graph[mod] = deps - {mod.rpartition(".")[0]}
    assert upward == []
    assert _cycles(graph) == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out
