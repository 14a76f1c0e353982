"""Pieces shared by the development-dataset builders (``dev_datasets.py`` brain tasks, ``dev_lesions.py``
lung-lesion tasks): smooth random fields, thick slices, and the check that the source scans are there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi


def require_files(*paths: Path, what: str) -> None:
    """Raise ``FileNotFoundError`` naming the first missing file and ``what`` it is."""
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing ({what}; see shared/data/README.md)")


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int, int], ctrl_mm: float, std: float
) -> np.ndarray:
    """A smooth random field on ``shape`` (1 mm voxels): Gaussian control points every ``ctrl_mm``, cubic spline."""
    coarse = tuple(max(2, int(round(s / ctrl_mm)) + 1) for s in shape)
    ctrl = rng.normal(0.0, std, size=coarse)
    zoom = [s / c for s, c in zip(shape, coarse, strict=True)]
    out = ndi.zoom(ctrl, zoom, order=3, mode="nearest")
    return out[: shape[0], : shape[1], : shape[2]]


def thick_slices(img: np.ndarray, lab: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Image and soft label ``(Z, Y, X)`` at 1 mm made into slices about ``t`` mm thick: a running mean over
    ``round(t)`` slices along Z (2 for 1.5 and 2.5 mm: Python rounds half to even), then one slice every
    ``t`` mm (the label averaged alike: partial volume). ``t <= 1``: as given."""
    if t <= 1.0:
        return img, lab
    img = ndi.uniform_filter1d(img, size=max(1, int(round(t))), axis=0, mode="nearest")
    lab = ndi.uniform_filter1d(lab, size=max(1, int(round(t))), axis=0, mode="nearest")
    n = int(np.floor((img.shape[0] - 1) / t)) + 1
    zs = np.arange(n, dtype=np.float32) * t
    grid = np.meshgrid(zs, np.arange(img.shape[1]), np.arange(img.shape[2]), indexing="ij")
    sub = np.stack(grid).astype(np.float32)
    return ndi.map_coordinates(img, sub, order=1, mode="nearest"), ndi.map_coordinates(
        lab, sub, order=1, mode="nearest"
    )
