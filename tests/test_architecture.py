"""The package's shape: layers (the import contract in .importlinter) and no import cycles."""

from __future__ import annotations

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
