"""Sanity limits on scan geometry, checked before anything allocates or indexes voxels.

Grid size (a header's absurd spacing would make a resampled array of terabytes), orthogonal voxel axes
(every part of SemiSAM indexes along them) and 3D scalar images. Re-exported by :mod:`semisam.scan.volume`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from semisam.scan.errors import BadDirectionError, GridTooLargeError, NotA3DScalarError

#: at 0.8 x 0.8 x 1.5 mm is ~0.2e9; beyond 2^30 the header's spacing (or a model's target) is wrong.
MAX_GRID_VOXELS = 1 << 30
#: Largest 2D slice (pixels) a resampling may produce: 4096 x 4096.
MAX_SLICE_PIXELS = 1 << 24
#: Largest growth of the element count by one resampling. Real cases stay far below: 5 mm slices to
#: 1.5 mm with 0.7 mm pixels to 0.8 mm is x2.6; a coronal slice of a 5 mm CT made square is x8.8. A
#: bigger factor means a wrong spacing (1e6 mm) or target (0.01 mm), and memory in proportion.
MAX_RESAMPLE_GROWTH = 64.0
#: |cos| between two voxel axes above which they count as not orthogonal (0.06 degrees off 90).
ORTHOGONALITY_ATOL = 1e-3


def check_grid_size(
    shape: Sequence[float],
    what: str,
    fix: str,
    source: str | None = None,
    limit: int | None = None,
    grown_from: Sequence[int] | None = None,
) -> None:
    """Raise :class:`GridTooLargeError` when ``shape`` holds more than ``limit`` (default
    :data:`MAX_GRID_VOXELS`, or :data:`MAX_SLICE_PIXELS` for 2D) elements, or, given the shape it is
    resampled from (``grown_from``), more than :data:`MAX_RESAMPLE_GROWTH` times as many.

    ``what`` says what would be made (``"the model grid"``), ``fix`` what the user should change.
    """
    limit = limit or (MAX_SLICE_PIXELS if len(shape) == 2 else MAX_GRID_VOXELS)
    n = float(np.prod([float(s) for s in shape]))
    dims = " x ".join(f"{s:.3g}" for s in shape)
    if not n <= limit:  # also catches NaN
        raise GridTooLargeError(
            f"{what} would be {dims} = {n:.3g} elements (at most {limit:.3g}); {fix}", source
        )
    if grown_from is not None:
        growth = n / max(1.0, float(np.prod([float(s) for s in grown_from])))
        if growth > MAX_RESAMPLE_GROWTH:
            raise GridTooLargeError(
                f"{what} would multiply the element count by {growth:.3g} (to {dims}; at most "
                f"x{MAX_RESAMPLE_GROWTH:g}); {fix}",
                source,
            )


def check_direction(direction: np.ndarray, source: str | None = None) -> None:
    """Refuse a singular or non-orthogonal direction matrix (columns = voxel axes).

    Not handled by resampling: every part of SemiSAM indexes voxels along orthogonal axes, and a sheared
    grid would get masks whose geometry differs from the scan's. The message says how to fix the file.
    """
    d = np.asarray(direction, dtype=float)
    if not np.all(np.isfinite(d)):
        raise BadDirectionError("direction matrix holds NaN or infinite values (corrupt header)", source)
    norms = np.linalg.norm(d, axis=0)
    if np.any(norms < 1e-6) or abs(np.linalg.det(d)) < 1e-6:
        raise BadDirectionError(
            "direction matrix is singular (two voxel axes point the same way, or one is zero); corrupt header",
            source,
        )
    u = d / norms
    cos = u.T @ u - np.eye(3)
    worst = float(np.max(np.abs(cos)))
    if worst > ORTHOGONALITY_ATOL:
        a, b = np.unravel_index(np.argmax(np.abs(cos)), cos.shape)
        angle = float(np.degrees(np.arccos(np.clip(cos[a, b], -1, 1))))
        axes = "ijk"
        raise BadDirectionError(
            f"voxel axes {axes[a]} and {axes[b]} are not orthogonal ({angle:.2f} degrees apart: a sheared "
            "grid, e.g. a gantry-tilted CT); SemiSAM needs orthogonal axes - resample the scan onto an "
            "orthogonal grid first (e.g. Slicer's Resample Scalar Volume, or SimpleITK Resample)",
            source,
        )


def _check_3d_scalar(image: sitk.Image, source: str | None) -> None:
    dim = image.GetDimension()
    size = image.GetSize()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise NotA3DScalarError(
            f"has {image.GetNumberOfComponentsPerPixel()} components per voxel "
            f"({image.GetPixelIDTypeAsString()}); a 3D scalar (grey-value) scan is needed",
            source,
        )
    if dim != 3:
        raise NotA3DScalarError(f"is a {dim}D image of size {size}; a 3D scan is needed", source)
    if min(size[:2]) < 2:
        # A 1 x 1 x 500 "scan" is a line of voxels, not a stack of slices: say which size is wrong.
        raise NotA3DScalarError(
            f"has size {size} (X, Y, Z): its slices are {size[0]} x {size[1]} voxels in-plane; a 3D scan "
            "needs slices of at least 2 x 2 voxels",
            source,
        )
    if size[2] < 2:
        raise NotA3DScalarError(
            f"has size {size} (X, Y, Z): a single slice (Z = {size[2]}) is a 2D image; a 3D scan is needed",
            source,
        )
