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


def ensure_core_importable() -> None:
    """Put the checkout's ``scripted_modules/`` on ``sys.path`` if ``import semisam`` would fail."""
    if importlib.util.find_spec("semisam") is None and (DEV_CORE_DIR / "semisam").is_dir():
        sys.path.insert(0, str(DEV_CORE_DIR))


ensure_core_importable()
