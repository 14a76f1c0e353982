"""Overlap metrics used by the demo, the store's provenance, the benchmarks and the Slicer self-tests."""

from __future__ import annotations

import numpy as np

from semisam.scan.volume import GeometryMismatchError


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of the foregrounds (label > 0) of two masks of equal shape; 1.0 when both are empty."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    if a.shape != b.shape:
        raise GeometryMismatchError(f"masks of shape {a.shape} and {b.shape} cannot be compared")
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total
