"""Dependencies point one way: front end -> daemon -> formats -> IO adapters -> pure core.

A module's layer is read from its path (``framesink/<layer>/...``). Every import is
seen: absolute and relative, ``import x`` and ``from x import y``, at top level or
inside a function, and ``importlib.import_module`` with a literal name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from framesink.daemon import Settings

SOURCE = Path(__file__).parents[2] / "src"
PACKAGE = SOURCE / "framesink"
README = Path(__file__).parents[2] / "README.md"

RANK = {
    "core": 0,
    "store": 1,
    "transport": 1,
    "tiff": 2,
    "omezarr": 2,
    "formats": 3,
    "api": 4,
    "daemon": 4,
    "mmcore": 4,
    "napari": 4,
    "cli": 5,
}
"""A layer may import its own package and layers of lower rank only (layers of equal
rank do not import each other: the store and the transports, one format package and
another; ``api`` is ``framesink/__init__``)."""
FORMAT_PACKAGES = {"tiff", "omezarr"}
"""Packages that encode one storage format; only :mod:`framesink.formats` lists them."""
REGISTRY = "formats"
DAEMON_DOOR_TO_FORMATS = "framesink.daemon._service"
"""The one daemon module that reaches the formats (through their registry)."""
TOP_LEVEL = {"__init__": "api", "__main__": "cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """The layer of a ``framesink`` module, from its dotted name (that is, its path)."""
    parts = module.split(".")
    assert parts[0] == "framesink", module
    if len(parts) == 1:
        return "api"
    if parts[1] in TOP_LEVEL:
        return TOP_LEVEL[parts[1]]
    if parts[1] not in RANK:
        raise AssertionError(f"{module} is not inside a layer package ({', '.join(RANK)})")
    return parts[1]


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported_modules(module: str, source: str, is_package: bool = False) -> set[str]:
    """Every ``framesink`` module that ``source`` (the text of ``module``) imports."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and _dynamic_import(node):
            argument = node.args[0]
            assert isinstance(argument, ast.Constant)
            found.add(str(argument.value))
    return {name for name in found if name.split(".")[0] == "framesink" and _exists(name)}


def _dynamic_import(node: ast.Call) -> bool:
    function = node.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
    return (
        name in {"import_module", "__import__"}
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
    )


def _exists(module: str) -> bool:
    """True for a real module or package (``from x import name`` also yields x.name)."""
    path = SOURCE.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def upward_imports(module: str, source: str, is_package: bool = False) -> set[str]:
    """The imports of ``module`` that point to a layer it may not depend on."""
    own = layer_of(module)
    return {
        target
        for target in imported_modules(module, source, is_package)
        if layer_of(target) != own and RANK[layer_of(target)] >= RANK[own]
    }


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_its_own_layer_or_lower(path: Path) -> None:
    module = module_name(path)
    upward = upward_imports(module, path.read_text(), _is_package(path))
    assert not upward, f"{module} ({layer_of(module)}) imports {upward} from a higher layer"


def test_every_module_sits_in_a_layer_package() -> None:
    flat = {p.stem for p in PACKAGE.glob("*.py")} - set(TOP_LEVEL)
    assert not flat, f"modules outside the layer packages: {flat}"
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} == set(RANK) - {
        "api"
    }


BUDGET = PACKAGE / "core" / "_budget.py"


@pytest.mark.parametrize(
    "planted",
    [
        "from framesink.daemon import Daemon",
        "from ..daemon import Daemon",
        "from .. import cli",
        "import framesink.cli",
        "import framesink.daemon._service as service",
        "from framesink import daemon",
        "from framesink import Publisher",
        "from ..store._writer import AcquisitionWriter",
        "from ..formats import StreamWriter",
        "def later() -> None:\n    from framesink.transport import Publisher",
        "import importlib\nimportlib.import_module('framesink.daemon')",
    ],
)
def test_a_planted_upward_import_is_caught(planted: str) -> None:
    source = BUDGET.read_text() + "\n" + planted + "\n"
    assert upward_imports("framesink.core._budget", source)


def test_the_io_adapters_do_not_import_each_other() -> None:
    assert upward_imports("framesink.store._writer", "from ..transport import Publisher\n")
    assert upward_imports("framesink.transport._publisher", "from framesink.store import recover\n")
    assert upward_imports("framesink.store._writer", "from ..tiff import OmeTiffFormat\n")


def format_imports(module: str, source: str, is_package: bool = False) -> set[str]:
    """The format packages and registry that ``module`` reaches, when it should not."""
    if layer_of(module) != "daemon" or module == DAEMON_DOOR_TO_FORMATS:
        reachable = set(FORMAT_PACKAGES)
    else:
        reachable = {*FORMAT_PACKAGES, REGISTRY}
    if layer_of(module) in {REGISTRY, *FORMAT_PACKAGES}:
        return set()
    return {
        target
        for target in imported_modules(module, source, is_package)
        if layer_of(target) in reachable
    }


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_format_packages_are_reached_through_the_registry_only(path: Path) -> None:
    """No module names a format package but the registry; in the daemon one module
    reaches the registry."""
    module = module_name(path)
    found = format_imports(module, path.read_text(), _is_package(path))
    assert not found, f"{module} reaches the formats {found} outside their registry"


@pytest.mark.parametrize(
    ("module", "planted"),
    [
        ("framesink.daemon._dispatch", "from ..formats import open_sink"),
        ("framesink.daemon._recovering", "from framesink.formats import recover_each"),
        ("framesink.daemon._service", "from ..tiff import OmeTiffFormat"),
        ("framesink.cli._main", "from ..tiff._format import OmeTiffFormat"),
        ("framesink.store._writer", "import framesink.tiff"),
    ],
)
def test_a_planted_format_import_is_caught(module: str, planted: str) -> None:
    path = SOURCE.joinpath(*module.split(".")).with_suffix(".py")
    assert format_imports(module, path.read_text() + "\n" + planted + "\n")


def test_the_daemon_reaches_the_registry_through_its_one_module() -> None:
    path = SOURCE.joinpath(*DAEMON_DOOR_TO_FORMATS.split(".")).with_suffix(".py")
    assert "framesink.formats" in imported_modules(DAEMON_DOOR_TO_FORMATS, path.read_text())


def test_the_clean_budget_module_passes() -> None:
    assert upward_imports("framesink.core._budget", BUDGET.read_text()) == set()


def test_readme_layout_is_the_source_tree() -> None:
    """The README's layout block names exactly the modules in src (it cannot drift)."""
    block = README.read_text().split("<!-- layout -->")[1]
    listed = set(re.findall(r"\b([A-Za-z_]+\.py)\b", block))
    packages = set(re.findall(r"\b([a-z]+)/", block)) - {"src", "framesink"}
    assert listed == {path.name for path in SOURCES}
    assert packages == set(RANK) - {"api"}


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = README.read_text()
    undocumented = [name for name in Settings.model_fields if f"`{name}`" not in readme]
    assert undocumented == [], "settings missing from the README's table"


MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_classes_stay_small(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    long_classes = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES
    }
    assert long_classes == {}


FORMAT_WORDS = re.compile(r"tiff|zarr|\.npy\b", re.IGNORECASE)
RECORD_COMPATIBILITY = ("tiff: str | None = None", 'EARLIER_IMAGE_KEY = "tiff"')
"""The record's files.tiff, kept for readers of earlier records (CONTRACT section 7)."""


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").glob("*.py")), ids=lambda p: p.name)
def test_the_core_names_no_file_format(path: Path) -> None:
    """Code in core (docstrings and comments aside) knows no format."""
    code = [
        line
        for line in _code_lines(path.read_text())
        if not any(kept in line for kept in RECORD_COMPATIBILITY)
    ]
    assert [line for line in code if FORMAT_WORDS.search(line)] == []


def _code_lines(source: str) -> list[str]:
    """The source's lines without docstrings and comments."""
    docstrings = {
        (node.body[0].lineno, node.body[0].end_lineno)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    strings = {
        (node.lineno, node.end_lineno)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    skipped = {n for first, last in docstrings | strings for n in range(first, (last or first) + 1)}
    return [
        line.split("#", 1)[0]
        for number, line in enumerate(source.splitlines(), start=1)
        if number not in skipped
    ]


def test_a_format_named_in_core_code_is_caught() -> None:
    planted = 'SUFFIX = ".ome.tiff"\n'
    assert any(FORMAT_WORDS.search(line) for line in _code_lines(planted))
    assert not any(FORMAT_WORDS.search(line) for line in _code_lines('"""An OME-TIFF."""\n'))


def test_the_core_exports_only_what_the_layers_above_use() -> None:
    """``framesink.core``'s names are its interface to the layers above, nothing more:
    a name no module outside the core uses is not exported (tests reach such names in
    their private module)."""
    import framesink.core

    outside = "\n".join(
        path.read_text()
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).parts[0] != "core"
    )
    unused = [name for name in framesink.core.__all__ if not re.search(rf"\b{name}\b", outside)]
    assert not unused, f"framesink.core exports names no other layer uses: {unused}"
