"""The package's shape, kept by tests: no import cycle (imports inside functions included), imports
only downward between the layers of docs/architecture.md, and no module over 400 lines."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "causal_das"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path) -> set[str]:
    """Every package module `path` imports, anywhere in the file: `from causal_das.x import y` counts
    as importing the module `causal_das.x.y` when that is a module, else `causal_das.x`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("causal_das"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("causal_das"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return {name for name in found if name in MODULES}


IMPORTS = {name: imported_modules(path) - {name} for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_is_read():
    # Guards the tests below against passing on an empty graph.
    assert len(MODULES) > 40
    assert sum(len(v) for v in IMPORTS.values()) > 80
    assert "causal_das.das.training" in IMPORTS["causal_das.das.pyvene_engine"]
    assert "causal_das.das.pyvene_engine" in IMPORTS["causal_das.das.engine"]  # the lazy import is seen


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle():
    # Package __init__ modules import nothing here; a cycle through one would still be found.
    cycle = find_cycle(IMPORTS)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


LAYER_RULES = {
    # layer: the layers it may import (besides itself); see docs/architecture.md
    "runtime": set(),
    "causal_model": set(),
    "metrics": {"causal_model"},
    "das": {"runtime", "causal_model"},
    "tasks": {"causal_model", "models"},  # models: a task writes its prompts with models.prompts
    "plots": {"runtime"},
    "analysis": {"das", "runtime", "causal_model"},  # no task: the task's inputs come in as an InputTable
    "models": {"das", "runtime"},  # no task: a model or site knows no task
    "studies": {"analysis", "plots", "models", "tasks", "das", "runtime", "causal_model", "metrics"},
    "experiments": {"studies", "analysis", "plots", "models", "tasks", "das", "runtime", "causal_model", "metrics"},
}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "root"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) != "root"))
def test_imports_go_downward(module):
    allowed = LAYER_RULES[layer(module)] | {layer(module)}
    upward = sorted(m for m in IMPORTS[module] if layer(m) not in allowed)
    assert not upward, f"{module} imports {upward}, above its layer {layer(module)!r}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "experiments"))
def test_no_experiment_module_imports_another(module):
    # What two experiments share lives in `studies/`: an experiment module is one script's work.
    others = sorted(m for m in IMPORTS[module] if layer(m) == "experiments" and m != "causal_das.experiments")
    assert not others, f"{module} imports {others}; move what they share into causal_das.studies"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "analysis"))
def test_the_analyses_know_no_task(module):
    # The disentangling algorithms serve any task: what they need of one (its inputs, their features,
    # intermediate values and counterfactual labels) comes in as an `analysis.inputs.InputTable`,
    # which the task's study builds (`studies.arithmetic_analysis` for X+Y+Z).
    task_side = sorted(m for m in IMPORTS[module] if layer(m) in ("tasks", "studies", "experiments"))
    assert not task_side, f"{module} imports {task_side}; pass what it needs of the task in an analysis.inputs.InputTable"


def test_the_shared_das_loop_imports_no_engine():
    for module in ("causal_das.das.training", "causal_das.das.data", "causal_das.das.pyvene_engine"):
        assert "causal_das.das.engine" not in IMPORTS[module], module


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_too_long(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines; split it by what its parts do"
