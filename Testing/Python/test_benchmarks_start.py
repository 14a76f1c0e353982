"""The benchmark scripts start: none shadows a standard-library module, and one that imports torch runs.

A script's folder comes first on ``sys.path``; a file there named like a standard-library module (a
benchmark once was ``ssl.py``) replaces that module for every script in the folder, and torch's import
of ``ssl`` (through ``urllib``) then fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_no_benchmark_file_is_named_like_a_standard_library_module():
    names = {p.stem for p in BENCHMARKS.glob("*.py")} | {p.name for p in BENCHMARKS.iterdir() if p.is_dir()}
    assert names, "no benchmark scripts found"
    assert not names & set(sys.stdlib_module_names)


def test_a_benchmark_that_imports_torch_starts_as_a_script():
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "encoder.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage" in out.stdout
