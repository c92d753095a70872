"""The package's import graph: no cycle, the math core free of files and studies, the commands on top.

Every import is read from the source (module level and inside functions alike), so a lazy import that
closes a circle is caught as well as a top-level one.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "asymnet"

MATH = ("operators", "networks", "schedule", "walkback", "plasticity", "sampler", "metrics", "anchor", "langevin",
        "readout", "dequantization")
"""The math core: tensors and numbers in, tensors out."""

FILES_AND_STUDIES = ("study", "runlog", "data", "plots", "classifier", "model", "evaluate", "cli", "long_run",
                     "inpainting")
"""Modules that read YAML, files or HDF5, or wire a study: never imported by the math core."""

COMMANDS = ("run", "sample", "measure", "inpaint", "inspect")
"""The commands: they stand on top, and no module imports one."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str], package: str = "asymnet") -> set[str]:
    """The package modules that the file at ``path`` (in ``package``, for relative imports) imports anywhere
    in its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != "asymnet":
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in files}
    return {module_name(path): imports_of(path, modules, _package(path)) - {module_name(path)} for path in files}


def _package(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def _top(name: str) -> str:
    return name.split(".")[1] if name.count(".") else name


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from asymnet.run import main\n")
    assert imports_of(source, {"asymnet", "asymnet.run"}) == {"asymnet.run"}


@pytest.mark.parametrize("module", sorted(name for name in import_graph() if _top(name) in MATH))
def test_the_math_core_imports_no_file_study_or_command_module(module):
    bad = {name for name in import_graph()[module] if _top(name) in FILES_AND_STUDIES + COMMANDS}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_no_module_imports_a_command():
    graph = import_graph()
    importers = {module: sorted(name for name in targets if _top(name) in COMMANDS and name.count(".") == 1)
                 for module, targets in graph.items()}
    assert {module: names for module, names in importers.items() if names} == {}
