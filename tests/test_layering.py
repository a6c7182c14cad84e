"""The import graph of pgq_nb: no cycle, and the façade is on top.

Built with grimp (what import-linter runs on), TYPE_CHECKING imports left out, imports inside
functions counted: a lazy import is still a dependency.
"""

from __future__ import annotations

import tomllib

import grimp
import pytest

from tests.conftest import REPO

#: The façade (the queue classes and the package's namespace) and the CLI, which sits on it.
FACADE = {"pgq_nb.queue", "pgq_nb.facade"}
MAY_IMPORT_FACADE = {"pgq_nb", "pgq_nb.queue", "pgq_nb.facade", "pgq_nb.cli", "pgq_nb.cli_admin"}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("pgq_nb", exclude_type_checking_imports=True)


def _cycle(graph: grimp.ImportGraph) -> list[str] | None:
    """One import cycle among pgq_nb's modules, or None (depth-first search)."""
    modules = sorted(graph.modules)
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if not imported.startswith("pgq_nb"):
                continue
            if state.get(imported) == 1:
                return [*path[path.index(imported) :], imported]
            if imported not in state and (found := visit(imported)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in modules:
        if module not in state and (found := visit(module)):
            return found
    return None


def test_pgq_nb_has_no_import_cycle(graph: grimp.ImportGraph) -> None:
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_only_the_facade_and_the_cli_import_the_facade(graph: grimp.ImportGraph) -> None:
    importers = {
        importer
        for module in FACADE
        for importer in graph.find_modules_that_directly_import(module)
        if importer.startswith("pgq_nb")
    }
    assert importers <= MAY_IMPORT_FACADE, sorted(importers - MAY_IMPORT_FACADE)


def test_a_cycle_is_found_when_there_is_one() -> None:
    graph = grimp.ImportGraph()
    for module in ("pgq_nb.a", "pgq_nb.b", "pgq_nb.c"):
        graph.add_module(module)
    graph.add_import(importer="pgq_nb.a", imported="pgq_nb.b")
    graph.add_import(importer="pgq_nb.b", imported="pgq_nb.c")
    assert _cycle(graph) is None
    graph.add_import(importer="pgq_nb.c", imported="pgq_nb.a")
    assert _cycle(graph) == ["pgq_nb.a", "pgq_nb.b", "pgq_nb.c", "pgq_nb.a"]


def _contract(name: str) -> set[str]:
    """The modules a contract covers: its sources, and what it forbids them."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    (found,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["name"] == name]
    return set(found["source_modules"]) | set(found["forbidden_modules"])


def _top_level_modules() -> set[str]:
    package = REPO / "pgq_nb"
    names = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    return {f"pgq_nb.{n}" for n in names}


def test_every_module_is_in_the_layering_contracts() -> None:
    """A module added to pgq_nb is checked by the import contracts from its first commit: the
    contracts list their source modules by hand, and four of issue #21's were left out."""
    modules = _top_level_modules()
    notebook_free = _contract("core does not import the notebook stack")
    assert modules - {"pgq_nb.notebook", "pgq_nb.web"} - notebook_free == set()
    web_free = _contract("core does not import the web dashboard")
    assert modules - {"pgq_nb.web"} - web_free == set()
