"""The layering, read statically from every import (module level and inside functions):

- the shipped packages (server, shared, exporter, edge_runtime) never import their clients
  (pocketrank, demo_app), research (lab), bench or tests;
- shared imports nothing of the project; edge_runtime imports neither server, exporter nor torch;
- lab (research, not shipped) never imports pocketrank or demo_app;
- bench and lab never import tests (what they share with the tests lives in lab/);
- no import cycle among server/'s modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("server", "shared", "exporter", "edge_runtime", "demo_app", "pocketrank", "lab", "bench", "tests")
SHIPPED = ("server", "shared", "exporter", "edge_runtime")
CLIENTS = ("pocketrank", "lab", "demo_app", "bench", "tests")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _files(package: str) -> dict[str, Path]:
    """The package's modules by folder; pocketrank/server and its siblings (symlinks to server/, ...: the
    installed names) are not walked into, so each file is one module."""
    return {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))
            if not any((ROOT / parent).is_symlink() for parent in p.relative_to(ROOT).parents)}


MODULES: dict[str, Path] = {m: p for pkg in PROJECT for m, p in _files(pkg).items()}


INSTALLED_UNDER_POCKETRANK = ("server", "shared", "exporter", "edge_runtime", "demo_app")


def canonical(name: str) -> str:
    """An imported module by its folder in this repository: `pocketrank.server.config` (the installed import
    name, setup.cfg) is `server.config` here, whose file is server/config.py."""
    head, _, rest = name.partition(".")
    if head == "pocketrank" and rest.split(".")[0] in INSTALLED_UNDER_POCKETRANK:
        return rest
    return name


def imports(module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in `module`, at any depth, relative ones resolved.
    `from pkg import name` counts as importing pkg.name when that is a module; a literal
    `__import__("x")` counts too."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, canonical(alias.name)) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = canonical(node.module or "")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((node.lineno, sub if sub in MODULES else base))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append((node.lineno, canonical(node.args[0].value)))
    return out


def _violations(packages: tuple[str, ...], forbidden) -> list[str]:
    return [f"{MODULES[m].relative_to(ROOT)}:{line} imports {target}"
            for m in MODULES if m.split(".")[0] in packages
            for line, target in imports(m) if forbidden(m, target.split(".")[0])]


def test_the_modules_are_found():
    assert {"server.config", "server.online.fold", "shared.features", "edge_runtime.cli", "lab.quality.protocols",
            "pocketrank.cli"} <= set(MODULES)


def test_shipped_packages_never_import_their_clients_research_bench_or_tests():
    assert _violations(SHIPPED, lambda m, top: top in CLIENTS) == []


def test_shared_imports_nothing_of_the_project():
    assert _violations(("shared",), lambda m, top: top in PROJECT and top != "shared") == []


def test_edge_runtime_imports_neither_server_exporter_nor_torch():
    assert _violations(("edge_runtime",), lambda m, top: top in ("server", "exporter", "torch")) == []


def test_lab_never_imports_pocketrank_or_demo_app():
    assert _violations(("lab",), lambda m, top: top in ("pocketrank", "demo_app")) == []


def test_bench_and_lab_never_import_tests():
    assert _violations(("bench", "lab"), lambda m, top: top == "tests") == []


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; the components with more than one module or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return found


def test_strongly_connected_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", ["server", "lab"])
def test_no_import_cycle_among_modules(package):
    graph = {m: set() for m in MODULES if m.split(".")[0] == package}
    for m in graph:
        graph[m] = {target for _, target in imports(m) if target in graph}
    assert strongly_connected(graph) == []
