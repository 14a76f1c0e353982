"""Helpers shared by the SemiSAMSegment and SemiSAMTrain modules (no qt, no ``slicer.app`` at import).

``defaults`` (the one defaults table and the choices the GUI offers), ``headless`` (stand-ins for Slicer's
application-only classes, so each module's Logic runs against the slicer-core wheel), ``dependencies``
(Python packages, checked and installed the Slicer way), ``worker`` (long computations on a thread the
Widget polls), ``training_job`` (the retraining child process, its events and its job-state file),
``training_plot`` (losses and validation Dice as table + plot nodes) and ``gui`` (Widget-only helpers).

An installed extension carries this package, the modules and the ``semisam`` core side by side in its
scripted-modules folder. A development checkout (``Slicer --additional-module-paths SemiSAMSegment
SemiSAMTrain``) has this package at the repository root (the modules add the root to ``sys.path``) and the
core in ``scripted_modules/``, which is added to ``sys.path`` here when ``semisam`` is not importable yet.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

#: ``scripted_modules/`` of a development checkout (absent in an installed extension).
DEV_CORE_DIR = Path(__file__).resolve().parents[1] / "scripted_modules"


#: The core needs Python >= 3.11 (pyproject.toml): Slicer 5.10 and later (Python 3.12).
MIN_PYTHON = (3, 11)


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:2])) -> None:
    """Raise an ImportError that says which Slicer is needed when the interpreter is too old."""
    if tuple(version[:2]) < MIN_PYTHON:
        raise ImportError(
            f"SemiSAM needs Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} (3D Slicer 5.10 or later); "
            f"this interpreter is Python {version[0]}.{version[1]}"
        )


def core_dir() -> Path | None:
    """The folder that holds the ``semisam`` package (what a child process needs on ``PYTHONPATH``)."""
    spec = importlib.util.find_spec("semisam")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve().parent


def ensure_core_importable() -> None:
    """Put the checkout's ``scripted_modules/`` on ``sys.path`` if ``import semisam`` would fail."""
    if importlib.util.find_spec("semisam") is None and (DEV_CORE_DIR / "semisam").is_dir():
        sys.path.insert(0, str(DEV_CORE_DIR))


check_python()
ensure_core_importable()
