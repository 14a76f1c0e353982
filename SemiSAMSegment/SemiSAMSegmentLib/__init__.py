"""SemiSAMSegment's own helpers (auto-segment, markups, propagate, accept, the case in progress, MRML I/O).

What both modules share is the ``SemiSAMLib`` package; importing this package makes it (and through it the
``semisam`` core) importable in a development checkout, where ``SemiSAMLib/`` sits at the repository root.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("SemiSAMLib") is None:  # development checkout: the repository root
    sys.path.append(str(Path(__file__).resolve().parents[2]))

import SemiSAMLib  # noqa: E402,F401  (checks Python, makes ``semisam`` importable)
