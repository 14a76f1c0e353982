"""Helpers shared by the SemiSAMSegment and SemiSAMTrain modules (no qt, no ``slicer.app``).

Importing this package makes the ``semisam`` core importable: an installed extension carries it beside
the modules; a development checkout (``Slicer --additional-module-paths SemiSAMSegment SemiSAMTrain``)
has it in ``../scripted_modules``, which is added to ``sys.path`` when ``semisam`` is not importable yet.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

#: ``scripted_modules/`` of a development checkout (absent in an installed extension).
DEV_CORE_DIR = Path(__file__).resolve().parents[2] / "scripted_modules"


#: The core needs Python >= 3.11 (pyproject.toml): Slicer 5.10 and later (Python 3.12).
MIN_PYTHON = (3, 11)


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:2])) -> None:
    """Raise an ImportError that says which Slicer is needed when the interpreter is too old."""
    if tuple(version[:2]) < MIN_PYTHON:
        raise ImportError(
            f"SemiSAM needs Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} (3D Slicer 5.10 or later); "
            f"this interpreter is Python {version[0]}.{version[1]}"
        )


def ensure_core_importable() -> None:
    """Put the checkout's ``scripted_modules/`` on ``sys.path`` if ``import semisam`` would fail."""
    if importlib.util.find_spec("semisam") is None and (DEV_CORE_DIR / "semisam").is_dir():
        sys.path.insert(0, str(DEV_CORE_DIR))


check_python()
ensure_core_importable()
