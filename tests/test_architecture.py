"""The library's layout as a specification: a package per stage, dependencies one way.

Read from the source (imports at module level and inside functions alike), so that a new
import that climbs a layer or closes a circle fails here, not in a review.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_runs import REPO_ROOT

LIBRARY = REPO_ROOT / "src" / "ftcompare"
# Bottom to top: a package imports only those before it (and itself).
LAYERS = ("contract", "methods", "data", "model", "plan", "train", "evaluate", "report", "use")


def _modules() -> dict[str, Path]:
    found = {}
    for path in LIBRARY.rglob("*.py"):
        parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _api(package: str) -> dict[str, str]:
    """A package's public names (its __init__'s _API table): name -> module."""
    for node in ast.parse(MODULES[package].read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_API" for t in node.targets):
            return {name: module for module, names in ast.literal_eval(node.value).items() for name in names.split()}
    return {}


def _imports(module: str) -> set[str]:
    """The library modules `module` imports anywhere in its source; a package's public name
    counts as an import of the module that defines it."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ftcompare"):
            base = node.module
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if candidate in MODULES:
                    found.add(candidate)
                elif base in MODULES and alias.name in _api(base):
                    found.add(f"{base}.{_api(base)[alias.name]}")
                else:
                    found.add(base)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("ftcompare")}
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: _imports(module) for module in MODULES}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_lives_in_a_stage_package():
    loose = sorted(m for m in MODULES if m.count(".") == 1 and m.split(".")[1] not in (*LAYERS, "__main__", "_lazy"))
    assert loose == []
    assert {m.split(".")[1] for m in MODULES if m.count(".") >= 1} == {*LAYERS, "__main__", "_lazy"}


def test_no_import_climbs_a_layer():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if _layer(module) is not None and _layer(target) is not None and _layer(target) > _layer(module)
    )
    assert upward == []


def test_no_import_circle():
    # Depth-first search for a back edge; the circle it finds is the message.
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        state[module] = 2
        path.pop()
        return None

    circles = [circle for module in sorted(GRAPH) if module not in state and (circle := visit(module))]
    assert circles == []


@pytest.mark.parametrize("package", LAYERS)
def test_each_package_says_what_it_offers(package):
    module = importlib.import_module(f"ftcompare.{package}")
    assert (module.__doc__ or "").strip(), f"ftcompare.{package} has no docstring"
    api = _api(f"ftcompare.{package}")
    submodules = {path.stem for path in (LIBRARY / package).glob("*.py")} - {"__init__"}
    assert api, f"ftcompare.{package} offers nothing"
    # A public name equal to a module's name would be shadowed once that module is imported.
    assert sorted(set(api) & submodules) == []
    for name, where in api.items():
        assert where in submodules, (name, where)
        assert hasattr(importlib.import_module(f"ftcompare.{package}.{where}"), name), (name, where)
    assert set(module.__all__) == set(api)


def test_across_packages_only_public_names_are_imported():
    """A module imports another package's names through that package (its public API), not
    from inside it, and never a private name."""
    offenders = []
    for module, path in MODULES.items():
        package = module.split(".")[1] if module.count(".") else None
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ftcompare.")):
                continue
            target = node.module.split(".")[1]
            if target == package or target not in LAYERS:
                continue
            if node.module != f"ftcompare.{target}" or any(a.name.startswith("_") for a in node.names):
                offenders.append(f"{module}: from {node.module} import {', '.join(a.name for a in node.names)}")
    assert offenders == []


def test_planning_imports_no_torch_transformers_or_peft():
    code = (
        "import sys\n"
        "import ftcompare.plan.graph, ftcompare.plan.estimate, ftcompare.plan.checks, ftcompare.use.status\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'sklearn') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
