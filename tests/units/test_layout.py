"""The package layout is a contract: the core stays Sans-I/O, arrows point one way, nothing cycles.

docs/architecture.md draws the layers: tools → server → (carriers, tts, agents) → core. A
violation would not break a test by itself (Python imports whatever it is asked to), so these
tests read every module of ``bridge/`` with :mod:`ast` and check the import graph, counting
imports inside functions, methods and ``if TYPE_CHECKING`` blocks too: a deferred import is still
a dependency, and it fails only on the day that code path runs.

The same checker is first run on small made-up packages, so a change that blinds it (a missed
import form, a wrong module name) fails here instead of passing everything.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["ImportGraph", "cycles", "forbidden_imports", "layer_violations"]

REPO = Path(__file__).resolve().parents[2]

CORE_FORBIDDEN = (
    # time and concurrency: the core is handed its time on events and never waits
    "asyncio", "time", "threading", "_thread", "concurrent", "multiprocessing", "signal", "trio", "anyio",
    # the wire: sockets, serialisation, HTTP, the web stack
    "socket", "ssl", "selectors", "json", "orjson", "http", "urllib.request", "httpx", "websockets",
    "starlette", "uvicorn", "subprocess",
    # logging set-up belongs to the process, not to a library module (getLogger is fine)
    "logging.handlers", "logging.config",
    # a dynamic import would hide any of the above from this check
    "importlib",
)
"""Modules (and their submodules) nothing under ``bridge/core/`` may import."""

LAYER_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bridge.core", ("bridge.server", "bridge.tools", "bridge.carriers", "bridge.tts", "bridge.agents",
                     "bridge.testing", "bridge.config", "bridge.app")),
    ("bridge.carriers", ("bridge.server", "bridge.tools", "bridge.tts", "bridge.agents")),
    ("bridge.tts", ("bridge.server", "bridge.tools")),
    ("bridge.agents", ("bridge.server", "bridge.tools")),
    ("bridge.server", ("bridge.tools",)),
)
"""(importer, what it must not import): the arrows of docs/architecture.md, read backwards."""


@dataclass(frozen=True, slots=True)
class Import:
    importer: str
    target: str  # the module imported, as resolved (a submodule when ``from pkg import submodule``)
    line: int


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


class ImportGraph:
    """Every import statement of every module of one top-level package, wherever it appears."""

    def __init__(self, root: Path, package: str) -> None:
        self.root = root
        self.package = package
        self.modules = dict(self._find_modules())
        self.imports = [imp for name in sorted(self.modules) for imp in self._imports_of(name)]

    def _find_modules(self) -> Iterator[tuple[str, Path]]:
        for path in sorted((self.root / self.package).rglob("*.py")):
            parts = list(path.relative_to(self.root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path

    def _imports_of(self, name: str) -> Iterator[Import]:
        path = self.modules[name]
        is_package = path.name == "__init__.py"
        here = name if is_package else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):  # walks into functions, classes and conditionals alike
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(name, alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = self._resolve(here, node.level, node.module)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    yield Import(name, sub if sub in self.modules else base, node.lineno)

    @staticmethod
    def _resolve(here: str, level: int, module: str | None) -> str:
        if level == 0:
            assert module is not None
            return module
        parts = here.split(".")
        base = parts[: len(parts) - (level - 1)]
        return ".".join([*base, module] if module else base)

    def edges(self) -> dict[str, set[str]]:
        """Module → the modules of this package it imports (parent packages are not implied)."""
        graph: dict[str, set[str]] = {name: set() for name in self.modules}
        for imp in self.imports:
            if imp.target in self.modules and imp.target != imp.importer:
                graph[imp.importer].add(imp.target)
        return graph


def forbidden_imports(graph: ImportGraph, package: str, forbidden: Iterable[str]) -> list[str]:
    """Imports under ``package`` of a forbidden module, or of this project outside ``package``."""
    banned = tuple(forbidden)
    found = []
    for imp in graph.imports:
        if not _within(imp.importer, package):
            continue
        if any(_within(imp.target, b) for b in banned):
            found.append(f"{imp.importer}:{imp.line} imports {imp.target}")
        elif _within(imp.target, graph.package) and not _within(imp.target, package):
            found.append(f"{imp.importer}:{imp.line} imports {imp.target}, outside {package}")
    return found


def layer_violations(graph: ImportGraph, rules: Iterable[tuple[str, tuple[str, ...]]]) -> list[str]:
    found = []
    for importer, banned in rules:
        for imp in graph.imports:
            if _within(imp.importer, importer) and any(_within(imp.target, b) for b in banned):
                found.append(f"{imp.importer}:{imp.line} imports {imp.target}")
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


# ------------------------------------------------------------------------ the checker, on made-up code


def _package(tmp_path: Path, files: dict[str, str]) -> ImportGraph:
    for rel, text in files.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for folder in [p for p in (tmp_path / "pkg").rglob("*") if p.is_dir()] + [tmp_path / "pkg"]:
        (folder / "__init__.py").touch()
    return ImportGraph(tmp_path, "pkg")


@pytest.mark.parametrize("source", [
    "import asyncio\n",
    "import logging.handlers\n",
    "from json import dumps\n",
    "def later():\n    import socket\n",
    "class C:\n    def m(self):\n        from starlette import responses\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import httpx\n",
    "import time as clock\n",
    "from ..server import app\n",
    "from .. import tools\n",
    "from pkg.server.app import create_app\n",
    "import pkg\n",
])
def test_the_checker_sees_every_way_a_core_module_can_import_what_it_must_not(tmp_path, source):
    graph = _package(tmp_path, {"core/call.py": source, "server/app.py": "", "tools/cli.py": ""})
    assert forbidden_imports(graph, "pkg.core", CORE_FORBIDDEN), source


@pytest.mark.parametrize("source", [
    "import logging\nimport enum\nfrom dataclasses import dataclass\n",
    "from .events import Tick\nfrom pkg.core import events\nfrom . import events as e\n",
    "import numpy as np\nimport timeit_free_name\n",  # "time" must not match a longer name
])
def test_the_checker_lets_the_core_import_the_core_and_pure_libraries(tmp_path, source):
    graph = _package(tmp_path, {"core/call.py": source, "core/events.py": ""})
    assert forbidden_imports(graph, "pkg.core", CORE_FORBIDDEN) == []


def test_the_checker_finds_cycles_through_deferred_and_package_imports(tmp_path):
    graph = _package(tmp_path, {
        "a.py": "from pkg import b\n",
        "b.py": "def f():\n    from pkg.sub import c\n",
        "sub/__init__.py": "from pkg.sub.c import X\n",
        "sub/c.py": "import pkg.a\nX = 1\n",
        "d.py": "from . import a\n",
    })
    assert cycles(graph.edges()) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def test_the_checker_finds_an_arrow_pointing_back_up(tmp_path):
    graph = _package(tmp_path, {"tts/x.py": "def f():\n    from pkg.server import app\n", "server/app.py": ""})
    assert layer_violations(graph, [("pkg.tts", ("pkg.server",))]) == ["pkg.tts.x:2 imports pkg.server.app"]


# ------------------------------------------------------------------------ the contract, on bridge/


@pytest.fixture(scope="module")
def bridge_graph() -> ImportGraph:
    graph = ImportGraph(REPO, "bridge")
    # Not vacuous: the checker read the real packages and their imports.
    assert {"bridge.core.call", "bridge.server.app", "bridge.server.session", "bridge.tts.base"} <= set(graph.modules)
    assert "bridge.core.events" in graph.edges()["bridge.server.session"]
    return graph


def test_the_core_imports_no_io_no_clock_and_nothing_of_bridge_outside_it(bridge_graph):
    found = forbidden_imports(bridge_graph, "bridge.core", CORE_FORBIDDEN)
    assert not found, "\n".join(found)


def test_arrows_point_one_way_tools_server_then_carriers_tts_agents_then_core(bridge_graph):
    found = layer_violations(bridge_graph, LAYER_RULES)
    assert not found, "\n".join(found)


def test_no_import_cycles_anywhere_in_bridge(bridge_graph):
    found = cycles(bridge_graph.edges())
    assert not found, "\n".join(" <-> ".join(group) for group in found)
