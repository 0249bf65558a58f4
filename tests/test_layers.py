"""The layering contract (.importlinter, run by `make test`) holds for the code, and fails for a wrong-way import:
each case copies the packages, adds one import that breaks a rule of DESIGN.md, and runs the linter on the copy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("defect_model", "ui", "pages")


def copy_of_the_code(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tree / ".importlinter")
    return tree


def lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=tree, capture_output=True, text=True,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "COLUMNS": "500"})


def broken(result: subprocess.CompletedProcess) -> list[str]:
    """The names of the contracts the linter reports broken."""
    return [line.removesuffix(" BROKEN") for line in result.stdout.splitlines() if line.endswith(" BROKEN")]


def add_import(tree: Path, module: str, line: str) -> None:
    path = tree / (module.replace(".", "/") + ".py")
    text = path.read_text()
    anchor = "from __future__ import annotations\n"
    assert anchor in text or module.startswith("pages."), f"{path}: no place for the import"
    path.write_text(text.replace(anchor, anchor + line + "\n", 1) if anchor in text else line + "\n" + text)


# (where the wrong-way import goes, the import, the contract it breaks)
WRONG_WAY = [
    ("defect_model.runs.folders", "from defect_model.train.engine import fit", "Layers"),
    ("defect_model.train.familiarity", "from defect_model.serve.unfamiliar import Familiarity", "Layers"),
    ("defect_model.serve.inference", "from defect_model.runs.folders import RunDir", "serve imports nothing from runs"),
    ("defect_model.photos.synthetic", "from defect_model.train.data import scan_image_folder",
     "photos and access import nothing above them"),
    ("defect_model.access.accounts", "from defect_model.runs.store import InspectionStore", "Layers"),
    ("defect_model.workflows.review", "import streamlit", "never imports streamlit"),
    ("pages.inspect", "from defect_model.runs.folders import RunDir", "Pages import only ui"),
    ("defect_model.runs.store", "import sqlite3", "Only defect_model.database talks to a database"),
    ("defect_model.access.accounts", "from sqlalchemy import select", "Only defect_model.database talks"),
    ("ui.inspect_widgets", "import psycopg", "Only defect_model.database talks to a database"),
    ("defect_model.database.engine", "from defect_model.access.accounts import Actor", "database package imports "
                                                                                        "only common"),
]


def test_the_code_keeps_every_contract(tmp_path):
    result = lint(copy_of_the_code(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 7 kept, 0 broken." in result.stdout


@pytest.mark.parametrize("module, line, contract", WRONG_WAY, ids=[case[0] for case in WRONG_WAY])
def test_one_wrong_way_import_fails_the_linter(tmp_path, module, line, contract):
    tree = copy_of_the_code(tmp_path)
    add_import(tree, module, line)
    result = lint(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert any(contract in name for name in broken(result)), result.stdout


def import_graph() -> dict[str, set[str]]:
    graph = grimp.build_graph(*PACKAGES[:2], cache_dir=None)
    return {module: {m for m in graph.find_modules_directly_imported_by(module) if m.split(".")[0] in PACKAGES}
            for module in graph.modules if module.split(".")[0] in PACKAGES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan, iteratively)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter[0]
                    counter[0] += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(edges.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_two_modules_or_packages_import_each_other(monkeypatch):
    """Imports inside functions count: a cycle hidden in a function is still a cycle."""
    monkeypatch.syspath_prepend(str(ROOT))
    modules = import_graph()
    assert cycles(modules) == []
    package = lambda name: ".".join(name.split(".")[:2]) if name.startswith("defect_model.") else name.split(".")[0]
    packages: dict[str, set[str]] = {}
    for module, imported in modules.items():
        outside = {package(m) for m in imported} - {package(module)}
        packages.setdefault(package(module), set()).update(outside)
    assert cycles(packages) == []


def test_cycles_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
