"""Reading scan files through SimpleITK without trusting them: headers checked before ITK parses them,
truncated or NaN-holding NIfTI found in the raw bytes, DICOM series checked for missing slices.

Used by :func:`semisam.scan.volume.read_volume` and :func:`semisam.scan.volume.read_mask`.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from semisam.scan.errors import ScanNotFoundError, ScanReadError

log = logging.getLogger(__name__)

#: File suffixes SimpleITK reads and writes for us (a folder is read as a DICOM series).
SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


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
    from semisam.scan.headers import HeaderError, check_metaimage_header, check_nrrd_header

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
