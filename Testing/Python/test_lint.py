"""Static: ruff is clean, and the core never imports slicer / qt / ctk / vtk (it must run headless)."""

from __future__ import annotations

import ast
import shutil
import subprocess

import pytest
from conftest import REPO

CORE = REPO / "scripted_modules" / "semisam"
FORBIDDEN = {"slicer", "qt", "ctk", "vtk"}


def test_core_imports_no_gui_toolkit():
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{path.relative_to(REPO)}:{node.lineno} imports {n}"
                for n in names
                if n.split(".")[0] in FORBIDDEN
            ]
    assert not offenders, "\n".join(offenders)


def test_ruff_clean():
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(REPO / ".venv" / "bin"))
    if ruff is None:
        pytest.skip("ruff is not installed (it is in the `test` extra)")
    res = subprocess.run(
        [ruff, "check", "--no-cache", "scripted_modules", "Testing", "SemiSAMSegment", "SemiSAMTrain"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_no_pickle_loading():
    """``torch.load`` only with ``weights_only=True``: checkpoints are user files and must not run code."""
    bad = []
    for path in sorted(REPO.glob("**/*.py")):
        if {".venv", "build"} & set(path.relative_to(REPO).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not ok:
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not bad, "torch.load without weights_only=True at:\n" + "\n".join(bad)
