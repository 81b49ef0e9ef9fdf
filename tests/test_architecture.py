"""The package's shape: layers (the import contract in .importlinter) and no import cycles."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contract_is_kept() -> None:
    """`lint-imports` with the repository's .importlinter: layers, and a pure evaluation."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    done = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.find_modules_directly_imported_by(node) & modules:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("fus2net", exclude_type_checking_imports=False)


def test_no_import_cycle_between_files(graph: grimp.ImportGraph) -> None:
    modules = {m for m in graph.modules if m.startswith("fus2net")}
    # A package's __init__ importing its own modules is how a package exports; not a cycle.
    assert _cycles(graph, modules - _packages(graph)) == []


def test_no_import_cycle_between_packages(graph: grimp.ImportGraph) -> None:
    top = {m for m in graph.modules if m.count(".") == 1}
    edges = {
        (a, b)
        for a in top
        for b in top
        if a != b and graph.find_shortest_chain(importer=a, imported=b, as_packages=True)
    }
    assert not {(a, b) for a, b in edges if (b, a) in edges}


def test_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    """The check above can fail: a two-file cycle in a throwaway package is found."""
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic import b\n")
    (package / "b.py").write_text("from cyclic import a\n")
    (package / "c.py").write_text("from cyclic import a\n")
    sys.path.insert(0, str(tmp_path))
    try:
        cyclic = grimp.build_graph("cyclic", cache_dir=None)
        assert _cycles(cyclic, set(cyclic.modules) - {"cyclic"}) == [["cyclic.a", "cyclic.b"]]
    finally:
        sys.path.remove(str(tmp_path))


def _packages(graph: grimp.ImportGraph) -> set[str]:
    return {
        m for m in graph.modules if (ROOT / "src" / Path(*m.split(".")) / "__init__.py").is_file()
    }


IMPORT_EVERYTHING = r"""
import importlib, json, logging, os, pkgutil, sys, warnings


def state():
    loggers = logging.Logger.manager.loggerDict.items()
    levels = {n: lg.level for n, lg in loggers if isinstance(lg, logging.Logger)}
    backend = sys.modules["matplotlib"].get_backend() if "matplotlib" in sys.modules else ""
    return list(map(repr, warnings.filters)), dict(os.environ), backend, levels


# What the third-party libraries do when imported is theirs: import them all first.
for name in sys.stdin.read().split(","):  # on stdin: too long for one argument
    try:
        importlib.import_module(name)
    except Exception:
        pass
import matplotlib  # noqa: E402

filters, environ, backend, levels = state()
import fus2net  # noqa: E402

names = [m.name for m in pkgutil.walk_packages(fus2net.__path__, "fus2net.")]
for name in names:
    importlib.import_module(name)
after = state()
print(json.dumps({
    "warnings": [f for f in after[0] if f not in filters],
    "environ": sorted(k for k in set(after[1]) | set(environ) if after[1].get(k) != environ.get(k)),
    "backend": after[2] != backend,
    "levels": {n: v for n, v in after[3].items() if v != levels.get(n, logging.NOTSET)},
    "modules": len(names),
    "third_party": sorted({m for m in sys.modules if not m.startswith("fus2net")}),
}))
"""


def _import_everything(preload: list[str]) -> dict:
    import json

    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING],
        input=",".join(preload),
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_every_module_changes_nothing() -> None:
    """No work at import time: importing every module of the package changes no warning filter,
    environment variable, logger level or matplotlib backend (beyond what the libraries it
    imports do themselves, measured by importing those first)."""
    libraries = _import_everything([])["third_party"]
    changed = _import_everything(libraries)
    assert changed["modules"] > 50
    assert changed["warnings"] == [], "a module changes warning filters at import"
    assert changed["environ"] == [], "a module changes the environment at import"
    assert not changed["backend"], "a module chooses a matplotlib backend at import"
    assert changed["levels"] == {}, "a module sets log levels at import"
