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
destination folder, fsync it and rename it over the destination.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from semisam.fileio import atomic_path

log = logging.getLogger(__name__)

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

#: File suffixes SimpleITK reads and writes for us (a folder is read as a DICOM series).
SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")

#: Tolerances for "same grid": spacing and origin in mm, direction cosines unitless.
GRID_ATOL_MM = 1e-4
GRID_ATOL_DIRECTION = 1e-5


class VolumeError(ValueError):
    """A scan or mask could not be read, written or used. ``path`` names the file, if any."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ScanNotFoundError(VolumeError, FileNotFoundError):
    """The file or folder does not exist."""


class ScanReadError(VolumeError):
    """The file exists but cannot be decoded (unreadable, corrupt header, truncated data, bad format)."""


class NotA3DScalarError(VolumeError):
    """The image is 2D, 4D, a single slice, or has several components per voxel (RGB, vector)."""


class NonFiniteVoxelsError(VolumeError):
    """The image holds NaN or infinite voxels."""


class BadDirectionError(VolumeError):
    """The voxel axes are not orthogonal (sheared) or the direction matrix is singular."""


class GridTooLargeError(VolumeError):
    """Resampling the scan would make an array too large to allocate (absurd spacing in a header)."""


#: Largest 3D grid (voxels) any resampling may produce: 2^30 float32 voxels = 4 GiB. A whole-body CT
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


class GeometryMismatchError(VolumeError):
    """A mask (or second image) is not on the grid of its reference image."""


class MaskValueError(VolumeError):
    """A mask holds values that are not non-negative integer labels."""


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
    if min(size) < 2:
        raise NotA3DScalarError(
            f"has size {size} (X, Y, Z): a single slice is a 2D image; a 3D scan is needed", source
        )


# --------------------------------------------------------------------- reading
def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in (".nii.gz", ".seg.nrrd"):
        if name.endswith(s):
            return ".nrrd" if s == ".seg.nrrd" else s
    return path.suffix.lower()


def _read_sitk(path: str | os.PathLike) -> tuple[sitk.Image, str, tuple[int, tuple[int, int, int]] | None]:
    """``(image, source, raw_nonfinite)``; ``raw_nonfinite`` is ``(count, first (i, j, k))`` of NaN/inf
    voxels found in a NIfTI file's raw float data (ITK's NIfTI reader turns them into 0), else ``None``."""
    p = Path(path)
    if not p.exists():
        raise ScanNotFoundError("no such file or folder", p)
    if p.is_dir():
        return _read_dicom_series(p), str(p), None
    if _suffix(p) not in SUPPORTED_SUFFIXES and p.suffix.lower() not in (".dcm", ""):
        raise ScanReadError(
            f"unsupported file type {p.suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)} or a DICOM folder",
            p,
        )
    if not os.access(p, os.R_OK):
        raise ScanReadError("file is not readable (permission denied)", p)
    if p.stat().st_size == 0:
        raise ScanReadError("file is empty (0 bytes)", p)
    nonfinite = None
    if _suffix(p) in (".nii", ".nii.gz"):
        nonfinite = _check_nifti_complete(p)
    elif _suffix(p) in (".nrrd", ".nhdr", ".mha", ".mhd"):
        _check_text_header(p)
    try:
        return sitk.ReadImage(str(p)), str(p), nonfinite
    except RuntimeError as exc:  # SimpleITK reports every decode failure as RuntimeError
        raise ScanReadError(
            f"cannot be decoded (corrupt header or truncated data): {_first_line(exc)}", p
        ) from exc


#: NIfTI datatype codes of float voxels -> numpy type (float128 and complex are not checked here).
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _check_text_header(path: Path) -> None:
    """NRRD / MetaImage headers are checked before ITK parses them: hostile values crash it."""
    from semisam.headers import HeaderError, check_metaimage_header, check_nrrd_header

    try:
        if _suffix(path) in (".nrrd", ".nhdr"):
            check_nrrd_header(path)
        else:
            check_metaimage_header(path)
    except HeaderError as exc:
        raise ScanReadError(f"corrupt header: {str(exc).removeprefix(str(path) + ': ')}", path) from exc
    except OSError as exc:
        raise ScanReadError(f"cannot be read: {exc.strerror or exc}", path) from exc


def _check_nifti_complete(path: Path) -> tuple[int, tuple[int, int, int]] | None:
    """Fail on a truncated NIfTI: ITK's NIfTI reader silently fills missing voxels with zeros.

    Float data is also scanned for NaN/inf in the raw bytes, because ITK's NIfTI reader returns them as 0
    (measured with SimpleITK 2.5: a NaN and an inf voxel written to .nii/.nii.gz read back as 0.0, while
    the NRRD and MHA readers keep them). Returns ``(count, first (i, j, k))`` of such voxels, or ``None``.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    scan: _FiniteScan | None = None
    try:
        with opener(path, "rb") as fh:
            header = fh.read(352)
            if len(header) < 348:
                raise ScanReadError(f"NIfTI header is truncated ({len(header)} of 348 bytes)", path)
            for endian in "<>":
                if struct.unpack(endian + "i", header[:4])[0] == 348:
                    break
            else:
                raise ScanReadError("corrupt NIfTI header (sizeof_hdr is not 348)", path)
            dims = struct.unpack(endian + "8h", header[40:56])
            datatype = struct.unpack(endian + "h", header[70:72])[0]
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset_f = struct.unpack(endian + "f", header[108:112])[0]
            if not np.isfinite(offset_f) or not 0 <= offset_f < 2**31:
                raise ScanReadError(f"corrupt NIfTI header (vox_offset={offset_f})", path)
            vox_offset = int(offset_f)
            if not 1 <= dims[0] <= 7 or bitpix <= 0 or min(dims[1 : dims[0] + 1]) < 1:
                raise ScanReadError(f"corrupt NIfTI header (dim={dims}, bitpix={bitpix})", path)
            n_voxels = int(np.prod(dims[1 : dims[0] + 1], dtype=np.int64))
            start = max(vox_offset, 352)
            expected = start + n_voxels * bitpix // 8
            ftype = _NIFTI_FLOATS.get(datatype)
            if ftype and np.dtype(ftype).itemsize * 8 != bitpix:
                ftype = None  # inconsistent header: SimpleITK decides (and usually refuses)
            if opener is open:
                actual = path.stat().st_size
            else:  # stream through the gzip data to count it (about 0.3 s per 100 MB)
                actual = len(header)
                if ftype:  # scanned as it streams by: no second copy of the data in memory
                    scan = _FiniteScan(np.dtype(endian + ftype), start, n_voxels)
                    scan.feed(header, 0)
                while block := fh.read(1 << 22):
                    if scan is not None:
                        scan.feed(block, actual)
                    actual += len(block)
    except (OSError, EOFError, zlib.error) as exc:
        raise ScanReadError(f"cannot be decoded (corrupt or truncated compressed data): {exc}", path) from exc
    if actual < expected:
        raise ScanReadError(
            f"truncated data: {actual} bytes where the NIfTI header needs {expected} (corrupt or incomplete copy)",
            path,
        )
    if not ftype:
        return None
    if scan is None:  # an uncompressed file: read in 4 MiB chunks
        scan = _FiniteScan(np.dtype(endian + ftype), start, n_voxels)
        with open(path, "rb") as fh:
            fh.seek(start)
            pos = start
            while not scan.done and (block := fh.read(1 << 22)):
                scan.feed(block, pos)
                pos += len(block)
    if not scan.count:
        return None
    nx, ny = max(1, dims[1]), max(1, dims[2])
    f = scan.first
    return scan.count, (f % nx, (f // nx) % ny, f // (nx * ny))


class _FiniteScan:
    """Counts NaN/inf among ``n`` values of ``dtype`` starting at byte ``start`` of a byte stream fed
    in blocks (any block boundaries); remembers the flat index of the first one."""

    def __init__(self, dtype: np.dtype, start: int, n: int) -> None:
        self.dtype, self.start, self.n = dtype, start, n
        self.seen = 0
        self.count = 0
        self.first = -1
        self._carry = b""

    @property
    def done(self) -> bool:
        return self.seen >= self.n

    def feed(self, block: bytes, pos: int) -> None:
        """``block`` holds the stream's bytes ``pos .. pos + len(block)``."""
        if self.done or pos + len(block) <= self.start:
            return
        buf = self._carry + block[max(0, self.start - pos) :]
        usable = len(buf) - len(buf) % self.dtype.itemsize
        values = np.frombuffer(buf, dtype=self.dtype, count=usable // self.dtype.itemsize)
        values = values[: self.n - self.seen]
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            if self.first < 0:
                self.first = self.seen + int(bad[0])
            self.count += int(bad.size)
        self.seen += len(values)
        self._carry = buf[usable:]


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # SimpleITK's messages start with a source location; the last line usually holds the reason.
    return lines[-1] if lines else type(exc).__name__


def _read_dicom_series(folder: Path, series_uid: str | None = None) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise ScanReadError("folder holds no DICOM series", folder)
    if series_uid is None:
        # Several series in one folder: take the one with the most slices and say so.
        files = {uid: reader.GetGDCMSeriesFileNames(str(folder), uid) for uid in ids}
        series_uid = max(files, key=lambda u: len(files[u]))
        if len(ids) > 1:
            log.warning(
                "%s holds %d DICOM series; reading %s (%d files)",
                folder,
                len(ids),
                series_uid,
                len(files[series_uid]),
            )
    names = reader.GetGDCMSeriesFileNames(str(folder), series_uid)
    reader.SetFileNames(names)
    reader.MetaDataDictionaryArrayUpdateOn()  # per-slice tags, for the slice-spacing check below
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ScanReadError(
            f"DICOM series {series_uid} cannot be decoded: {_first_line(exc)}", folder
        ) from exc
    for problem in _slice_spacing_problems(reader, len(names)):
        log.warning("%s: DICOM series %s: %s", folder, series_uid, problem)
    return image


#: Relative deviation of one slice gap from the median gap above which the series counts as uneven.
SLICE_GAP_RTOL = 0.1


def _slice_spacing_problems(reader: sitk.ImageSeriesReader, n: int) -> list[str]:
    """Missing or unevenly spaced slices of a read series (ITK stacks them at one spacing regardless:
    the volume is then geometrically wrong between those slices, so the user is told)."""
    if n < 3:
        return []
    try:
        cosines = [float(v) for v in reader.GetMetaData(0, "0020|0037").split("\\")]
        normal = np.cross(cosines[:3], cosines[3:6])
        pos = [
            float(np.dot([float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")], normal))
            for i in range(n)
        ]
    except (RuntimeError, ValueError, IndexError):
        return ["slice positions (ImagePositionPatient) are missing; slice spacing could not be checked"]
    gaps = np.abs(np.diff(np.sort(pos)))
    median = float(np.median(gaps))
    if median <= 0:
        return ["several slices share one position (duplicate slices?)"]
    out = []
    missing = int(np.sum(np.round(gaps / median) - 1, where=gaps > median * 1.5))
    if missing > 0:
        out.append(
            f"about {missing} slice(s) are missing (gaps of up to {gaps.max():.3g} mm, median {median:.3g} mm)"
        )
    elif float(np.max(np.abs(gaps - median))) > SLICE_GAP_RTOL * median:
        out.append(f"slices are unevenly spaced ({gaps.min():.3g}..{gaps.max():.3g} mm)")
    return out


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
