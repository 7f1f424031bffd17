"""The project's layering, read from the source with ``ast``: the library (``adr_rl``)
imports nothing of the application (``adr_rl_app``: the CLI, envs, agents, eval), has no
import cycle, and no module imports another module's underscore names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "adr_rl"
#: Top-level names of the application, as packages or as the folders they come from.
APPLICATION = ("adr_rl_app", "app", "eval", "envs", "agents", "tests")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _library_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(LIBRARY.rglob("*.py"))}


def _imports(path: Path, package: str) -> list[tuple[str, list[str]]]:
    """``(module, names)`` for every import in ``path`` (also inside functions and
    ``TYPE_CHECKING`` blocks); relative imports resolved against ``package``."""
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            out.append((module, [alias.name for alias in node.names]))
    return out


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _edges() -> dict[str, set[str]]:
    """Library module -> library modules it imports (``from pkg import mod`` counts as
    an import of ``pkg.mod`` when that is a module)."""
    modules = _library_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for module, names in _imports(path, _package_of(name, path)):
            if module.split(".")[0] != "adr_rl":
                continue
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
            targets = subs or [module]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def test_the_library_imports_nothing_of_the_application():
    offenders = []
    for name, path in _library_modules().items():
        for module, _ in _imports(path, _package_of(name, path)):
            if module.split(".")[0] in APPLICATION:
                offenders.append(f"{name} imports {module}")
    assert not offenders, offenders


def test_no_import_cycle_inside_the_library():
    graph = _edges()
    # The package's __init__ files only re-export (lazily or not); an edge into a
    # package __init__ from inside it is not a cycle of code, so drop those edges.
    packages = {n for n, p in _library_modules().items() if p.name == "__init__.py"}
    for name in graph:
        graph[name] -= {p for p in packages if name.startswith(p + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_no_underscore_name_is_imported_across_modules():
    offenders = []
    for path in [*sorted(LIBRARY.rglob("*.py")), *sorted((ROOT / "tests").glob("*.py"))]:
        name = _module_name(path)
        for module, names in _imports(path, _package_of(name, path)):
            if module.split(".")[0] not in ("adr_rl", "adr_rl_app", "tests"):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            offenders += [f"{name}: from {module} import {n}" for n in private]
    assert not offenders, offenders


def test_the_checks_see_a_violation(tmp_path):
    """The walker itself: a planted import of the application and a planted cycle."""
    bad = tmp_path / "mod.py"
    bad.write_text("from adr_rl_app.eval import runs\nimport adr_rl.optim\n")
    found = [m for m, _ in _imports(bad, "adr_rl")]
    assert found == ["adr_rl_app.eval", "adr_rl.optim"]
    rel = tmp_path / "rel.py"
    rel.write_text("from .problem import Problem\nfrom . import configs\n")
    assert [m for m, _ in _imports(rel, "adr_rl.optim")] == [
        "adr_rl.optim.problem",
        "adr_rl.optim",
    ]


def _application_modules() -> dict[str, Path]:
    """``adr_rl_app.<folder>.<name>`` -> file, for the eval and agents folders."""
    out = {}
    for folder in ("eval", "agents"):
        for path in sorted((ROOT / folder).glob("*.py")):
            if path.name != "__init__.py":
                out[f"adr_rl_app.{folder}.{path.stem}"] = path
    return out


def _is_script(path: Path) -> bool:
    """A command: it defines ``main`` (run by ``adr-rl`` or ``python -m``)."""
    tree = ast.parse(path.read_text())
    return any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)


def test_scripts_never_import_other_scripts():
    """Shared code lives in modules without ``main``; a command imports only those."""
    modules = _application_modules()
    scripts = {name for name, path in modules.items() if _is_script(path)}
    offenders = []
    for name, path in modules.items():
        for module, names in _imports(path, name.rpartition(".")[0]):
            targets = {module} | {f"{module}.{n}" for n in names}
            offenders += [f"{name} imports {t}" for t in sorted(targets & scripts) if t != name]
    assert not offenders, offenders
