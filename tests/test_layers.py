"""The package's layers, as import rules read from every module's source (its AST, nothing run):
serving never imports training; the model layer imports neither serving nor training; errors
imports nothing of the project and environment (the settings) only errors; harness (the tests'
and benchmarks' local server and checkpoints) may import any layer, and no layer imports it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "container" / "flower_classifier"
NAME = PACKAGE.name
# module or subpackage -> the project parts it must not import
FORBIDDEN = {
    "serving": {"training", "cli", "harness"},
    "model": {"serving", "training", "cli", "harness"},
    "training": {"serving", "cli", "harness"},
    "cli": {"harness"},
    "errors": {"*"},
    "environment": {"*", "-errors"},
    "harness": set(),
}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def dotted(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def project_imports(path: Path) -> set[str]:
    """The project modules `path` imports, as dotted names under the package (no package
    prefix): absolute and relative imports, at any depth (function-level imports too)."""
    here = dotted(path)
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == NAME or name.startswith(NAME + "."):
                found.add(name[len(NAME) + 1:])
    return {name for name in found if name}


def layer(path: Path) -> str:
    parts = dotted(path)
    return parts[1] if len(parts) > 1 else ""


def test_every_module_is_in_a_layer():
    assert {layer(p) for p in modules()} >= {"errors", "environment", "model", "serving",
                                              "training", "cli", "harness"}


def test_every_layer_has_a_rule():
    assert {layer(p) for p in modules()} - {""} <= set(FORBIDDEN)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    forbidden = FORBIDDEN.get(layer(path), set())
    wrong = set()
    for name in project_imports(path):
        top = name.split(".")[0]
        if top in forbidden or ("*" in forbidden and f"-{top}" not in forbidden):
            wrong.add(name)
    assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)} across its layer"


def test_the_checker_sees_relative_and_nested_imports():
    """The checker itself: a relative import two levels up, inside a function, is found."""
    source = PACKAGE / "model" / "checkpoint.py"
    assert "errors" in project_imports(source)
    server = project_imports(PACKAGE / "serving" / "server.py")
    assert any(name.startswith("model.") for name in server)
