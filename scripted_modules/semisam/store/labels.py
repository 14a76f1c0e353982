"""Label tables and mask checks: every mask value must be declared in the store's label table."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from semisam.metrics import dice  # noqa: F401 - re-exported (store API)
from semisam.scan.volume import GeometryMismatchError, Volume, read_mask
from semisam.store.errors import LabelError

MaskLike = Volume | np.ndarray | str | os.PathLike


def checked_mask(mask: MaskLike, image: Volume, labels: Mapping[int, str]) -> np.ndarray:
    """The mask as a uint8/uint16 ``(Z, Y, X)`` array, checked against ``image``'s grid and ``labels``.

    Raises:
        GeometryMismatchError: shape or grid differs from the image's.
        LabelError: non-integer values, or values missing from the label table ``labels``.
    """
    if isinstance(mask, str | os.PathLike):
        arr = read_mask(mask, reference=image).array
    elif isinstance(mask, Volume):
        diffs = image.grid_differences(mask)
        if diffs:
            raise GeometryMismatchError(
                f"mask grid does not match the image {image.source or ''}: " + "; ".join(diffs),
                mask.source,
            )
        arr = mask.array
    else:
        arr = np.asarray(mask)
        if arr.shape != image.shape:
            raise GeometryMismatchError(
                f"mask shape (Z, Y, X) {arr.shape} does not match the image's {image.shape}", image.source
            )
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise LabelError("mask holds non-integer values; a label map is needed")
        arr = arr.astype(np.int64)
    values = {int(v) for v in np.unique(arr)}
    unknown = sorted(values - set(labels))
    if unknown:
        table = ", ".join(f"{k}={v}" for k, v in labels.items())
        raise LabelError(
            f"mask holds label value(s) {unknown} not declared in the store's label table ({table}); "
            "declare them first (LabeledStore.declare_labels)",
            getattr(mask, "source", None) or (mask if isinstance(mask, str | os.PathLike) else None),
        )
    top = max(values) if values else 0
    return arr.astype(np.uint8 if top <= 255 else np.uint16)


def label_counts(mask: np.ndarray) -> dict[str, int]:
    """Voxel count of every label value > 0 present in ``mask`` (keys are strings, for JSON)."""
    values, counts = np.unique(mask[mask > 0], return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)}


def check_label_table(labels: Mapping[int, str]) -> dict[int, str]:
    """Validate a label table (value -> name); returns it with ``0: "background"`` added."""
    table: dict[int, str] = {0: "background"}
    for k, v in dict(labels).items():
        try:
            value = int(k)
        except (TypeError, ValueError):
            raise LabelError(f"label value {k!r} is not an integer") from None
        if not 0 <= value <= 65535 or str(k).strip() != str(value):
            raise LabelError(f"label value {k!r} must be an integer within 0..65535")
        if not isinstance(v, str) or not v.strip():
            raise LabelError(f"label {value} needs a non-empty name")
        if value == 0 and v != "background":
            raise LabelError(f"label 0 is the background; it cannot be named {v!r}")
        table[value] = v.strip()
    if len(table) < 2:
        raise LabelError("declare at least one foreground label, e.g. {1: 'lesion'}")
    return table
