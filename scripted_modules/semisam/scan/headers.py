"""Checks of NRRD and MetaImage (MHA/MHD) text headers before ITK parses them.

ITK's readers trust these headers: fuzzing found that ``NDims = 1e6`` in an MHA header makes
SimpleITK 2.5 crash the process (segmentation fault), and other hostile values abort it. A crash is
the worst failure for a Slicer extension (it takes the whole application with it), so the fields
ITK allocates or loops by are checked here first, and a bad one becomes a :class:`HeaderError` naming
the file and the field.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: Header bytes read at most (real headers are < 2 KB; the data follows).
MAX_HEADER_BYTES = 1 << 16
#: Largest voxel count a header may announce (2^40: far beyond any scan, below ITK's overflow).
MAX_VOXELS = 1 << 40
MAX_DIMS = 16

_MET_TYPES = {
    f"MET_{t}{suffix}"
    for t in ("CHAR", "UCHAR", "SHORT", "USHORT", "INT", "UINT", "LONG", "ULONG", "LONG_LONG",
              "ULONG_LONG", "FLOAT", "DOUBLE")
    for suffix in ("", "_ARRAY")
}  # fmt: skip
_NRRD_TYPES = {
    "signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t", "short", "short int",
    "signed short", "signed short int", "int16", "int16_t", "ushort", "unsigned short",
    "unsigned short int", "uint16", "uint16_t", "int", "signed int", "int32", "int32_t", "uint",
    "unsigned int", "uint32", "uint32_t", "longlong", "long long", "long long int", "signed long long",
    "signed long long int", "int64", "int64_t", "ulonglong", "unsigned long long",
    "unsigned long long int", "uint64", "uint64_t", "float", "double", "block",
}  # fmt: skip
_NRRD_ENCODINGS = {"raw", "txt", "text", "ascii", "hex", "gz", "gzip", "bz2", "bzip2"}


class HeaderError(ValueError):
    """A NRRD / MetaImage header holds a value ITK must not be given."""


def _numbers(value: str, n: int | None, what: str, where: str, *, integer: bool = False) -> list[float]:
    parts = value.replace(",", " ").replace("(", " ").replace(")", " ").split()
    try:
        nums = [int(p) if integer else float(p) for p in parts]
    except ValueError:
        kind = "integers" if integer else "numbers"
        raise HeaderError(
            f"{where}: header field {what} must be {kind}, got {value.strip()[:60]!r}"
        ) from None
    if n is not None and len(nums) != n:
        raise HeaderError(
            f"{where}: header field {what} needs {n} value(s), got {len(nums)} ({value.strip()[:60]!r})"
        )
    if not all(math.isfinite(x) for x in nums):
        raise HeaderError(
            f"{where}: header field {what} holds NaN or infinite values ({value.strip()[:60]!r})"
        )
    return nums


def _dims(value: str, what: str, where: str) -> int:
    (n,) = _numbers(value, 1, what, where, integer=True)
    if not 1 <= n <= MAX_DIMS:
        raise HeaderError(f"{where}: header field {what} = {n} is not a number of dimensions (1..{MAX_DIMS})")
    return int(n)


def _sizes(value: str, n: int, what: str, where: str) -> None:
    sizes = _numbers(value, n, what, where, integer=True)
    if min(sizes) < 1 or math.prod(int(s) for s in sizes) > MAX_VOXELS:
        raise HeaderError(f"{where}: header field {what} = {value.strip()[:60]!r} is not a usable image size")


def _read_head(path: Path) -> str:
    with open(path, "rb") as fh:
        raw = fh.read(MAX_HEADER_BYTES)
    return raw.decode("latin-1")


def check_metaimage_header(path: str | os.PathLike) -> None:
    """Check an ``.mha`` / ``.mhd`` header (``Key = Value`` lines up to ``ElementDataFile``)."""
    p = Path(path)
    where = str(p)
    fields: dict[str, str] = {}
    for line in _read_head(p).split("\n"):
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip()
        fields[key] = value.strip()
        if key == "ElementDataFile":
            break
    else:
        raise HeaderError(f"{where}: not a MetaImage file (no ElementDataFile line in the header)")
    if "NDims" not in fields:
        raise HeaderError(f"{where}: MetaImage header has no NDims")
    n = _dims(fields["NDims"], "NDims", where)
    if "DimSize" not in fields:
        raise HeaderError(f"{where}: MetaImage header has no DimSize")
    _sizes(fields["DimSize"], n, "DimSize", where)
    for key in ("ElementSpacing", "ElementSize", "Offset", "Origin", "Position", "CenterOfRotation"):
        if key in fields:
            _numbers(fields[key], n, key, where)
    for key in ("TransformMatrix", "Rotation", "Orientation"):
        if key in fields:
            _numbers(fields[key], n * n, key, where)
    if fields.get("ElementType") not in _MET_TYPES:
        raise HeaderError(
            f"{where}: header field ElementType {fields.get('ElementType')!r} is not a MetaImage type"
        )
    if "ElementNumberOfChannels" in fields:
        (c,) = _numbers(fields["ElementNumberOfChannels"], 1, "ElementNumberOfChannels", where, integer=True)
        if not 1 <= c <= 64:
            raise HeaderError(f"{where}: header field ElementNumberOfChannels = {c} is not 1..64")
    for key in ("BinaryData", "CompressedData", "BinaryDataByteOrderMSB", "ElementByteOrderMSB"):
        if key in fields and fields[key].lower() not in ("true", "false"):
            raise HeaderError(f"{where}: header field {key} must be True or False, got {fields[key][:60]!r}")
    if "HeaderSize" in fields:
        (h,) = _numbers(fields["HeaderSize"], 1, "HeaderSize", where, integer=True)
        if h < -1 or h > 1 << 40:
            raise HeaderError(f"{where}: header field HeaderSize = {h} is not usable")
    if "CompressedDataSize" in fields:
        (c,) = _numbers(fields["CompressedDataSize"], 1, "CompressedDataSize", where, integer=True)
        if c < 0:
            raise HeaderError(f"{where}: header field CompressedDataSize = {c} is negative")


def check_nrrd_header(path: str | os.PathLike) -> None:
    """Check a ``.nrrd`` / ``.nhdr`` header (``key: value`` lines up to the first blank line)."""
    p = Path(path)
    where = str(p)
    text = _read_head(p)
    if not text.startswith("NRRD000"):
        raise HeaderError(f"{where}: not a NRRD file (no NRRD000x magic)")
    fields: dict[str, str] = {}
    for line in text.split("\n")[1:]:
        line = line.rstrip("\r")
        if not line:
            break
        if line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if sep and not value.startswith("="):  # "key:=value" lines are free-form key/value pairs
            fields[key.strip().lower()] = value.strip()
    if "dimension" not in fields:
        raise HeaderError(f"{where}: NRRD header has no dimension")
    n = _dims(fields["dimension"], "dimension", where)
    if "sizes" not in fields:
        raise HeaderError(f"{where}: NRRD header has no sizes")
    _sizes(fields["sizes"], n, "sizes", where)
    if fields.get("type", "").lower() not in _NRRD_TYPES:
        raise HeaderError(f"{where}: header field type {fields.get('type')!r} is not a NRRD type")
    if fields.get("encoding", "raw").lower() not in _NRRD_ENCODINGS:
        raise HeaderError(f"{where}: header field encoding {fields.get('encoding')!r} is not a NRRD encoding")
    if fields.get("endian", "little").lower() not in ("little", "big"):
        raise HeaderError(f"{where}: header field endian must be little or big, got {fields.get('endian')!r}")
    space_dim = None
    if "space dimension" in fields:
        space_dim = _dims(fields["space dimension"], "space dimension", where)
    if "space directions" in fields:
        entries = fields["space directions"].split()
        vectors = [e for e in entries if e.lower() != "none"]
        if len(entries) != n:
            raise HeaderError(f"{where}: header field space directions needs {n} entries, got {len(entries)}")
        width = space_dim or 3
        for v in vectors:
            _numbers(v, width, "space directions", where)
    if "space origin" in fields:
        _numbers(fields["space origin"], space_dim or 3, "space origin", where)
    for key in ("spacings", "thicknesses"):
        if key in fields:
            vals = [v for v in fields[key].split() if v.lower() != "nan"]
            _numbers(" ".join(vals), None, key, where)
    if "byte skip" in fields:
        (b,) = _numbers(fields["byte skip"], 1, "byte skip", where, integer=True)
        if b < -1:
            raise HeaderError(f"{where}: header field byte skip = {b} is not usable")
    if "line skip" in fields:
        (b,) = _numbers(fields["line skip"], 1, "line skip", where, integer=True)
        if b < 0:
            raise HeaderError(f"{where}: header field line skip = {b} is negative")
