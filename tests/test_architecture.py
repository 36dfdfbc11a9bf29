"""Dependencies point one way: front end -> daemon -> IO -> pure core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "framesink"
LAYERS = {
    "core": {"_version", "models", "layout", "ome", "record", "wire", "routing", "budget"},
    "io": {
        "writer",
        "series",
        "pixels",
        "journal",
        "files",
        "recovery",
        "paths",
        "batch",
        "source",
        "control",
        "publisher",
        "notify",
    },
    "daemon": {"daemon", "session", "counters", "settings"},
    "front": {"cli", "logs", "statusview", "demo", "camera", "progress", "__main__", "__init__"},
}
ORDER = ["core", "io", "daemon", "front"]


def _layer(module: str) -> str:
    (layer,) = [name for name, modules in LAYERS.items() if module in modules]
    return layer


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
    }


def test_every_module_has_a_layer() -> None:
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    assert modules == set().union(*LAYERS.values())


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.stem)
def test_imports_only_its_own_layer_or_lower(path: Path) -> None:
    own = ORDER.index(_layer(path.stem))
    upward = {module for module in _imports(path) if ORDER.index(_layer(module)) > own}
    assert not upward, f"{path.stem} ({ORDER[own]}) imports {upward} from a higher layer"
