"""``semisam info IMAGE [--mask MASK]``: read a scan (and mask), check it, print its geometry as JSON."""

from __future__ import annotations

import argparse
import json

import numpy as np

from semisam.scan.volume import read_mask, read_volume


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="check a scan (and mask) and print its geometry as JSON")
    p.add_argument("image", help="NIfTI / NRRD / MHA file or DICOM folder")
    p.add_argument("--mask", help="label map that must lie on the image's grid")
    p.set_defaults(func=run)


def describe(path: str, mask_path: str | None = None) -> dict:
    vol = read_volume(path)
    a = vol.array
    out = {
        "image": vol.source,
        "size_xyz": list(vol.size_ijk),
        "spacing_mm": list(vol.spacing),
        "origin_ras_mm": list(vol.origin),
        "direction_ras": vol.direction.round(6).tolist(),
        "dtype": str(a.dtype),
        "intensity": {"min": float(a.min()), "max": float(a.max()), "mean": float(a.mean())},
        "first_voxel_ras_mm": vol.voxel_to_ras([0, 0, 0]).round(4).tolist(),
        "last_voxel_ras_mm": vol.voxel_to_ras(np.array(vol.size_ijk) - 1).round(4).tolist(),
    }
    if mask_path:
        m = read_mask(mask_path, reference=vol).array
        labels, counts = np.unique(m[m > 0], return_counts=True)
        slices = np.flatnonzero(m.reshape(m.shape[0], -1).any(axis=1))
        out["mask"] = {
            "path": mask_path,
            "labels": {int(v): int(c) for v, c in zip(labels, counts, strict=True)},
            "slices_k": slices.tolist(),
            "volume_ml": float((m > 0).sum() * np.prod(vol.spacing) / 1000.0),
        }
    return out


def run(args: argparse.Namespace) -> int:
    print(json.dumps(describe(args.image, args.mask), indent=2))
    return 0
