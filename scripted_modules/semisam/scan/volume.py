"""One type for a 3D scan and its masks, with voxel <-> RAS geometry and atomic file I/O.

Conventions (used everywhere in ``semisam``):

* ``Volume.array`` is indexed ``[k, j, i]`` = ``(Z, Y, X)``: ``i`` is the file's first voxel axis
  (column), ``j`` the second (row), ``k`` the third (slice). This is numpy's order for SimpleITK's
  ``GetArrayFromImage`` and for Slicer's ``arrayFromVolume``.
* Geometry is stored in **RAS** (Slicer's patient coordinate system), in millimetres:
  ``spacing`` is ``(si, sj, sk)``; ``origin`` is the RAS position of the centre of voxel
  ``(i, j, k) = (0, 0, 0)``; ``direction`` is a 3x3 matrix whose *columns* are the unit RAS
  directions of the i, j and k axes. Files (NIfTI, NRRD, MHA, DICOM) are read through SimpleITK,
  which works in LPS; the LPS <-> RAS flip happens only in :func:`Volume.from_sitk` and
  :func:`Volume.to_sitk`.
* Masks are integer label maps on exactly the grid of their image.

Every failure to read or check a scan raises a subclass of :class:`VolumeError` whose message names
the file and the problem. Writers never leave a half-written file: they write a temporary file in the
destination folder, fsync it and rename it over the destination. The errors live in
:mod:`semisam.scan.errors`, the geometry limits in :mod:`semisam.scan.checks` and the distrustful file
readers in :mod:`semisam.scan.files`; all are re-exported here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from semisam.fileio import atomic_path
from semisam.scan.checks import (
    MAX_GRID_VOXELS,
    MAX_RESAMPLE_GROWTH,
    MAX_SLICE_PIXELS,
    ORTHOGONALITY_ATOL,
    _check_3d_scalar,
    check_direction,
    check_grid_size,
)
from semisam.scan.errors import (
    BadDirectionError,
    GeometryMismatchError,
    GridTooLargeError,
    MaskValueError,
    NonFiniteVoxelsError,
    NotA3DScalarError,
    ScanNotFoundError,
    ScanReadError,
    VolumeError,
)
from semisam.scan.files import SLICE_GAP_RTOL, SUPPORTED_SUFFIXES, _first_line, _read_sitk, _suffix

__all__ = [
    "GRID_ATOL_DIRECTION",
    "GRID_ATOL_MM",
    "MAX_GRID_VOXELS",
    "MAX_RESAMPLE_GROWTH",
    "MAX_SLICE_PIXELS",
    "ORTHOGONALITY_ATOL",
    "SLICE_GAP_RTOL",
    "SUPPORTED_SUFFIXES",
    "BadDirectionError",
    "GeometryMismatchError",
    "GridTooLargeError",
    "MaskValueError",
    "NonFiniteVoxelsError",
    "NotA3DScalarError",
    "ScanNotFoundError",
    "ScanReadError",
    "Volume",
    "VolumeError",
    "check_direction",
    "check_grid_size",
    "read_mask",
    "read_volume",
    "write_mask",
    "write_volume",
]

log = logging.getLogger(__name__)

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


#: Tolerances for "same grid": spacing and origin in mm, direction cosines unitless.
GRID_ATOL_MM = 1e-4
GRID_ATOL_DIRECTION = 1e-5


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D scalar scan: voxels ``array`` of shape ``(Z, Y, X)`` and its RAS geometry (mm).

    Attributes:
        array: voxel values, shape ``(Z, Y, X)`` = ``(nk, nj, ni)``.
        spacing: voxel size along ``(i, j, k)`` in mm.
        origin: RAS position (mm) of the centre of voxel ``(0, 0, 0)``.
        direction: ``(3, 3)``; column ``c`` is the RAS unit vector of voxel axis ``c`` (i, j, k).
        source: where it was read from (for messages), or ``None``.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = None  # type: ignore[assignment]  # identity when None
    source: str | None = None

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise NotA3DScalarError(f"expected a 3D (Z, Y, X) array, got shape {arr.shape}", self.source)
        d = np.eye(3) if self.direction is None else np.asarray(self.direction, dtype=float)
        if d.shape != (3, 3):
            raise VolumeError(f"direction must be 3x3, got {d.shape}", self.source)
        sp = tuple(float(s) for s in self.spacing)
        if len(sp) != 3 or min(sp) <= 0 or not all(np.isfinite(sp)):
            raise VolumeError(f"spacing must be three positive numbers (mm), got {self.spacing}", self.source)
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "spacing", sp)
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", d)

    # ----------------------------------------------------------------- geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)``."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        """Number of voxels along ``(i, j, k)`` = ``(X, Y, Z)``."""
        z, y, x = self.array.shape
        return (x, y, z)

    @property
    def ijk_to_ras(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping voxel index ``(i, j, k, 1)`` to RAS mm (Slicer's IJKToRAS)."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    @property
    def ras_to_ijk(self) -> np.ndarray:
        """Inverse of :attr:`ijk_to_ras`."""
        return np.linalg.inv(self.ijk_to_ras)

    def voxel_to_ras(self, ijk: Sequence[float] | np.ndarray) -> np.ndarray:
        """Map voxel indices ``(..., 3)`` in ``(i, j, k)`` order to RAS mm ``(..., 3)``."""
        p = np.asarray(ijk, dtype=float)
        return p @ self.ijk_to_ras[:3, :3].T + self.ijk_to_ras[:3, 3]

    def ras_to_voxel(self, ras: Sequence[float] | np.ndarray) -> np.ndarray:
        """Map RAS mm ``(..., 3)`` to continuous voxel indices ``(..., 3)`` in ``(i, j, k)`` order."""
        p = np.asarray(ras, dtype=float)
        inv = self.ras_to_ijk
        return p @ inv[:3, :3].T + inv[:3, 3]

    def same_grid(self, other: Volume, atol_mm: float = GRID_ATOL_MM) -> bool:
        """True when ``other`` has the same shape, spacing, origin and direction (within tolerance)."""
        return not self.grid_differences(other, atol_mm)

    def grid_differences(self, other: Volume, atol_mm: float = GRID_ATOL_MM) -> list[str]:
        """Human-readable list of how ``other``'s grid differs from this one (empty when equal)."""
        out = []
        if self.shape != other.shape:
            out.append(f"size (X, Y, Z) {other.size_ijk} != {self.size_ijk}")
        if not np.allclose(self.spacing, other.spacing, atol=atol_mm, rtol=0):
            out.append(f"spacing {_fmt(other.spacing)} != {_fmt(self.spacing)} mm")
        if not np.allclose(self.origin, other.origin, atol=max(atol_mm, 1e-6 * _scale(self.origin)), rtol=0):
            out.append(f"origin {_fmt(other.origin)} != {_fmt(self.origin)} mm (RAS)")
        if not np.allclose(self.direction, other.direction, atol=GRID_ATOL_DIRECTION, rtol=0):
            out.append("direction matrices differ")
        return out

    def with_array(self, array: np.ndarray) -> Volume:
        """Same geometry, new voxels (must have the same ``(Z, Y, X)`` shape)."""
        array = np.asarray(array)
        if array.shape != self.shape:
            raise GeometryMismatchError(
                f"array shape {array.shape} != volume shape {self.shape}", self.source
            )
        return Volume(array, self.spacing, self.origin, self.direction, self.source)

    # ------------------------------------------------------------ SimpleITK glue
    @classmethod
    def from_sitk(cls, image: sitk.Image, source: str | None = None) -> Volume:
        """Build from a 3D scalar SimpleITK image (LPS geometry converted to RAS)."""
        _check_3d_scalar(image, source)
        d_lps = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
        check_direction(d_lps, source)
        origin = np.array(image.GetOrigin(), dtype=float)
        if not np.all(np.isfinite(origin)):
            raise ScanReadError(f"origin {tuple(origin)} is not finite (corrupt header)", source)
        return cls(
            array=sitk.GetArrayFromImage(image),
            spacing=tuple(image.GetSpacing()),
            origin=tuple(_LPS_TO_RAS @ np.array(image.GetOrigin(), dtype=float)),
            direction=_LPS_TO_RAS @ d_lps,
            source=source,
        )

    def to_sitk(self, array: np.ndarray | None = None) -> sitk.Image:
        """SimpleITK image with this geometry (RAS converted back to LPS) and ``array`` (default: own)."""
        arr = self.array if array is None else np.asarray(array)
        if arr.shape != self.shape:
            raise GeometryMismatchError(f"array shape {arr.shape} != volume shape {self.shape}", self.source)
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr), isVector=False)
        img.SetSpacing(self.spacing)
        img.SetOrigin(tuple(float(v) for v in _LPS_TO_RAS @ np.asarray(self.origin)))
        img.SetDirection(tuple(float(v) for v in (_LPS_TO_RAS @ self.direction).ravel()))
        return img


def _fmt(v: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.6g}" for x in v) + ")"


def _scale(v: Sequence[float]) -> float:
    return float(max(1.0, np.max(np.abs(v))))


# --------------------------------------------------------------------- reading
def read_volume(path: str | os.PathLike, *, allow_nonfinite: bool = False) -> Volume:
    """Read a 3D scalar scan (NIfTI, NRRD, MHA/MHD, or a DICOM series folder) into a :class:`Volume`.

    Raises:
        ScanNotFoundError: ``path`` does not exist.
        ScanReadError: unreadable, unsupported, empty or corrupt.
        NotA3DScalarError: 2D, 4D, single-slice or multi-component.
        NonFiniteVoxelsError: NaN/inf voxels (unless ``allow_nonfinite``).
    """
    image, source, raw_nonfinite = _read_sitk(path)
    vol = Volume.from_sitk(image, source=source)
    if raw_nonfinite:
        n, (i, j, k) = raw_nonfinite
        if not allow_nonfinite:
            raise NonFiniteVoxelsError(
                f"{n} voxel(s) are NaN or infinite (first at voxel i={i}, j={j}, k={k})", source
            )
        log.warning("%s: %d NaN/infinite voxel(s) were read as 0 by the NIfTI reader", source, n)
    if not allow_nonfinite and np.issubdtype(vol.array.dtype, np.floating):
        bad = ~np.isfinite(vol.array)
        n = int(bad.sum())
        if n:
            k, j, i = np.argwhere(bad)[0]
            raise NonFiniteVoxelsError(
                f"{n} voxel(s) are NaN or infinite (first at voxel i={i}, j={j}, k={k})", source
            )
    if vol.array.size and vol.array.min() == vol.array.max():
        log.warning(
            "%s: every voxel has the value %g (a constant image): there is nothing to segment in it",
            source,
            float(vol.array.flat[0]),
        )
    return vol


def read_mask(path: str | os.PathLike, reference: Volume | None = None) -> Volume:
    """Read an integer label map; when ``reference`` is given, it must lie on the reference's grid.

    Returns a :class:`Volume` whose array is ``uint8`` (or ``uint16`` for labels > 255).

    Raises:
        GeometryMismatchError: the mask's grid differs from ``reference``'s (the message lists how).
        MaskValueError: negative, fractional or non-finite values.
    """
    image, source, raw_nonfinite = _read_sitk(path)
    if raw_nonfinite:
        raise MaskValueError("mask holds NaN or infinite values", source)
    mask = Volume.from_sitk(image, source=source)
    arr = _as_label_array(mask.array, source)
    mask = Volume(arr, mask.spacing, mask.origin, mask.direction, source)
    if reference is not None:
        diffs = reference.grid_differences(mask)
        if diffs:
            ref = reference.source or "the image"
            raise GeometryMismatchError(f"mask grid does not match {ref}: " + "; ".join(diffs), source)
    return mask


def _as_label_array(arr: np.ndarray, source: str | None) -> np.ndarray:
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise MaskValueError("mask holds NaN or infinite values", source)
        if not np.all(arr == np.round(arr)):
            raise MaskValueError("mask holds fractional values; a label map of integers is needed", source)
    if arr.size and arr.min() < 0:
        raise MaskValueError(f"mask holds negative label {arr.min()}", source)
    top = int(arr.max()) if arr.size else 0
    if top > 65535:
        raise MaskValueError(f"mask label {top} is larger than 65535", source)
    return arr.astype(np.uint8 if top <= 255 else np.uint16)


# --------------------------------------------------------------------- writing
def _atomic_write_sitk(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    dest = Path(path)
    suffix = _suffix(dest)
    if suffix not in SUPPORTED_SUFFIXES:
        raise VolumeError(f"cannot write {dest.suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}", dest)
    if suffix in (".mhd", ".nhdr"):
        raise VolumeError(
            "detached-header formats (.mhd, .nhdr) cannot be written atomically; use .mha or .nrrd", dest
        )
    # Keep the real suffix at the end of the temporary name: SimpleITK picks the writer from it.
    tmp_suffix = ".nii.gz" if dest.name.lower().endswith(".nii.gz") else suffix
    try:
        with atomic_path(dest, suffix=tmp_suffix) as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
    except RuntimeError as exc:  # SimpleITK reports write failures (disk full, permissions) this way
        raise VolumeError(f"cannot be written: {_first_line(exc)}", dest) from exc
    return dest


def write_volume(volume: Volume, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``volume`` (voxels and geometry) atomically; the format follows the suffix."""
    return _atomic_write_sitk(volume.to_sitk(), path, compress)


def write_mask(mask: np.ndarray, reference: Volume, path: str | os.PathLike) -> Path:
    """Write an integer label map ``(Z, Y, X)`` on exactly ``reference``'s grid, atomically.

    Raises:
        GeometryMismatchError: ``mask.shape`` differs from ``reference.shape``.
        MaskValueError: negative, fractional or non-finite values.
    """
    mask = np.asarray(mask)
    if mask.shape != reference.shape:
        raise GeometryMismatchError(
            f"mask shape (Z, Y, X) {mask.shape} does not match the image's {reference.shape}", path
        )
    arr = _as_label_array(mask, str(path))
    return _atomic_write_sitk(reference.to_sitk(arr), path)
