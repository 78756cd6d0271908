"""Every name that the scripts, benchmarks, examples and tests take from the package exists.

Benchmarks are not run by the suite, so a function moved between modules would otherwise break one
of them silently (as once happened to `benchmarks/gpu_check_cases.py`). Read statically: each
`from causal_das.x import name` and each `alias.attribute` on an imported package module must resolve."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(p for folder in ("scripts", "benchmarks", "examples", "tests", "src/causal_das") for p in (ROOT / folder).rglob("*.py"))


def package_aliases(tree: ast.Module) -> tuple[dict[str, str], list[tuple[int, str, str]]]:
    """Local names bound to package modules, and the (line, module, name) of every imported name."""
    aliases, imported = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("causal_das") and alias.asname:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("causal_das"):
            for alias in node.names:
                imported.append((node.lineno, node.module, alias.name))
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                except ImportError:
                    pass
    return aliases, imported


def missing_references(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    aliases, imported = package_aliases(tree)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    missing = [f"{shown}:{line} {module}.{name}" for line, module, name in imported
               if not hasattr(importlib.import_module(module), name)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            module = importlib.import_module(aliases[node.value.id])
            if not hasattr(module, node.attr):
                missing.append(f"{shown}:{node.lineno} {module.__name__}.{node.attr}")
    return missing


def test_a_moved_name_is_caught(tmp_path):
    script = tmp_path / "uses_a_gone_name.py"
    script.write_text("from causal_das.das import engine\nfrom causal_das.studies import four_objects_mlp as m\n"
                      "engine.train\nm.no_such_function\n")
    assert [entry.split(" ")[1] for entry in missing_references(script)] == ["causal_das.studies.four_objects_mlp.no_such_function"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_package_name_used_exists(path):
    assert missing_references(path) == []
