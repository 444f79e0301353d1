"""The import graph, read from the source (nothing is imported): the library never imports
the actors or the entry point, and no modules of notifi/ and actors/ import each other in a
circle."""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("notifi", "actors")  # plus supervisor.py, the entry point at the top


def module_names(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name → file, for every .py file under the packages and at the top."""
    found = {path.stem: path for path in root.glob("*.py")}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under `if TYPE_CHECKING:` (they
    never run, so they cannot close a cycle)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes_in(other)
            continue
        yield from _import_nodes_in(child)


def _import_nodes_in(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    yield from _import_nodes(node)


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is one of our modules (`a.b.C` → `a.b`)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, modules: dict[str, Path]) -> set[str]:
    """The modules of ours that `module` imports. `from x import y` counts as importing
    `x.y` when that is a module, else `x`."""
    path = modules[module]
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
        for target in targets:
            known = _known(target, modules)
            if known is not None and known != module:
                found.add(known)
    return found


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    modules = module_names(root, packages)
    return {name: imports_of(name, modules) for name in modules}


def upward_imports(graph: dict[str, set[str]], library: str = "notifi") -> list[str]:
    """Imports from the library into the actors or the entry point: 'importer -> imported'."""

    def top(name: str) -> str:
        return name.split(".")[0]

    return sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        if top(name) == library
        for target in targets
        if top(target) in ("actors", "supervisor")
    )


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the modules, or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


# -- the project ------------------------------------------------------------------------


def test_the_graph_sees_the_project() -> None:
    graph = import_graph(ROOT)
    assert "notifi.runtime.supervisor" in graph["notifi.runtime"]
    assert "actors.tree" in graph["supervisor"]
    assert "notifi.store.sql" in graph["notifi.store"]  # `from notifi.store.sql import query`


def test_the_library_does_not_import_the_actors_or_the_entry_point() -> None:
    assert upward_imports(import_graph(ROOT)) == []


def test_no_import_cycles() -> None:
    graph = import_graph(ROOT)
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


# -- the checker itself, on trees made to fail ----------------------------------------


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "notifi/__init__.py": "",
            "notifi/wiring.py": "from actors.router import Router\nimport supervisor\n",
            "actors/__init__.py": "",
            "actors/router.py": "from notifi import wiring\n",
            "supervisor.py": "",
        },
    )
    assert upward_imports(import_graph(root)) == [
        "notifi.wiring -> actors.router",
        "notifi.wiring -> supervisor",
    ]


@pytest.mark.parametrize(
    "b_imports_a",
    [
        "from notifi import a\n",  # `from package import submodule`
        "from . import a\n",  # relative
        "import notifi.a\n",
        "from notifi.a import thing\n",
        "def late():\n    from notifi.a import thing\n",  # inside a function still counts
    ],
)
def test_a_cycle_is_found(tmp_path: Path, b_imports_a: str) -> None:
    root = write(
        tmp_path,
        {
            "notifi/__init__.py": "",
            "notifi/a.py": "from notifi.b import other\n",
            "notifi/b.py": b_imports_a,
        },
    )
    cycle = find_cycle(import_graph(root))
    assert cycle is not None and set(cycle) == {"notifi.a", "notifi.b"}


def test_a_cycle_through_a_package_init_is_found(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "notifi/__init__.py": "",
            "notifi/store/__init__.py": "from notifi.store.sql import query\n",
            "notifi/store/sql.py": "from notifi.model import Job\n",
            "notifi/model.py": "from notifi.store import Store\n",
        },
    )
    cycle = find_cycle(import_graph(root))
    assert cycle is not None and set(cycle) == {"notifi.store", "notifi.store.sql", "notifi.model"}


def test_type_checking_imports_are_not_a_cycle(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "notifi/__init__.py": "",
            "notifi/a.py": "from notifi.b import other\n",
            "notifi/b.py": (
                "import typing\nfrom typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from notifi.a import thing\n"
                "if typing.TYPE_CHECKING:\n    import notifi.a\n"
            ),
        },
    )
    assert find_cycle(import_graph(root)) is None
    assert import_graph(root)["notifi.b"] == set()
