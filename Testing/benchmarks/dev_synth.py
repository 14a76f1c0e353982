"""Pieces shared by the development-dataset builders (``dev_datasets.py`` brain tasks, ``dev_lesions.py``
lung-lesion tasks): smooth random fields, thick slices, the check that the source scans are there, and what
the whole-scan variant needs to carry a cropped case's fields onto a larger grid (:func:`sample_separable`,
:func:`taper`)."""

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


def thick_slices(
    img: np.ndarray, lab: np.ndarray, t: float, z0: float = 0.0, n: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Image and soft label ``(Z, Y, X)`` at 1 mm made into slices about ``t`` mm thick: a running mean over
    ``round(t)`` slices along Z (2 for 1.5 and 2.5 mm: Python rounds half to even), then one slice every
    ``t`` mm (the label averaged alike: partial volume). ``t <= 1``: as given.

    ``z0``, ``n``: the first slice lies ``z0`` mm into the input and there are ``n`` (default: as many as fit),
    so a larger grid can hold a cropped case's slices exactly (``z0`` and ``t`` multiples of 0.5 mm)."""
    return thick_axis0(img, t, z0, n), thick_axis0(lab, t, z0, n)


def thick_axis0(arr: np.ndarray, t: float, z0: float = 0.0, n: int | None = None) -> np.ndarray:
    """One array of :func:`thick_slices`: running mean over ``round(t)`` slices, then linear interpolation
    along Z at ``z0 + k t`` (``nearest`` past the last slice), float32 like the input."""
    if t <= 1.0 and z0 == 0.0 and n is None:
        return arr
    if t > 1.0:
        arr = ndi.uniform_filter1d(arr, size=max(1, int(round(t))), axis=0, mode="nearest")
    if n is None:
        n = int(np.floor((arr.shape[0] - 1 - z0) / t)) + 1
    zs = z0 + np.arange(n, dtype=np.float64) * t
    i0 = np.floor(zs).astype(np.intp)
    f = (zs - i0)[:, None, None]
    i1 = np.minimum(i0 + 1, arr.shape[0] - 1)
    # z0 and t are multiples of 0.5 mm: the weights are 0, 1 or 0.5, so the slices are exact
    return (arr[i0] * (1.0 - f) + arr[i1] * f).astype(arr.dtype, copy=False)


def taper(pos: np.ndarray, lo: float, hi: float, sigma: float) -> np.ndarray:
    """Weights along one axis: 1 where ``lo <= pos <= hi`` (mm), a Gaussian fall-off of ``sigma`` mm outside."""
    d = np.maximum(0.0, np.maximum(lo - pos, pos - hi))
    return np.exp(-0.5 * (d / sigma) ** 2).astype(np.float32)


def sample_separable(field: np.ndarray, coords: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """``field`` (Z, Y, X) at the grid ``coords`` (one 1-D array of continuous indices per axis): linear
    along each axis, the edge value past the edges (so a field drawn on a crop extends beyond it). Integer
    coordinates give the field's own values exactly."""
    out = field
    for axis in (2, 1, 0):
        n = out.shape[axis]
        c = np.clip(np.asarray(coords[axis], dtype=np.float64), 0.0, n - 1)
        i0 = np.minimum(np.floor(c).astype(np.intp), max(n - 2, 0))
        i1 = np.minimum(i0 + 1, n - 1)
        shape = [1, 1, 1]
        shape[axis] = len(c)
        f = (c - i0).astype(out.dtype).reshape(shape)
        out = np.take(out, i0, axis=axis) * (1 - f) + np.take(out, i1, axis=axis) * f
    return out
