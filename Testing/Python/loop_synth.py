"""A tiny synthetic dataset in the MSD / nnU-Net v2 raw layout, for the loop tests (``semisam simulate``).

Each case is an MR-like volume ``(Z, Y, X)`` with one bright ellipsoid (the "structure") of varied centre,
radii and contrast on a smooth, noisy background; its label map marks the ellipsoid. The images are
written with 1 x 1 x 2 mm voxels so the propagation sees realistic millimetres.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from semisam.scan.volume import Volume, write_mask, write_volume


def ellipsoid_case(
    shape: tuple[int, int, int], rng: np.random.Generator, spacing=(1.0, 1.0, 2.0)
) -> tuple[Volume, np.ndarray]:
    """One synthetic case: ``(image Volume, label uint8 (Z, Y, X))``."""
    z, y, x = shape
    zz, yy, xx = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
    rz = rng.uniform(0.25, 0.35) * z
    ry, rx = rng.uniform(0.15, 0.25) * y, rng.uniform(0.15, 0.25) * x
    # centres keep the ellipsoid inside (or, for very few slices, centred)
    cz, cy, cx = (
        rng.uniform(min(r + m, n / 2), max(n - r - m, n / 2))
        for r, n, m in ((rz, z, 1), (ry, y, 2), (rx, x, 2))
    )
    r = ((zz - cz) / rz) ** 2 + ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    label = (r <= 1.0).astype(np.uint8)
    background = 200.0 + 60.0 * np.sin(xx / x * np.pi * rng.uniform(0.5, 1.5)) * np.cos(yy / y * np.pi)
    image = background + rng.uniform(350.0, 500.0) / (1.0 + np.exp((r - 1.0) * 8.0))
    image += rng.normal(0.0, 20.0, shape)
    vol = Volume(image.astype(np.float32), spacing, (0.0, 0.0, 0.0), np.eye(3), None)
    return vol, label


def write_dataset(
    out_dir: str | os.PathLike,
    n_cases: int = 8,
    shape: tuple[int, int, int] = (24, 48, 48),
    seed: int = 0,
    label_name: str = "structure",
) -> Path:
    """Write ``n_cases`` synthetic cases as an nnU-Net v2 raw dataset at ``out_dir``; returns the folder."""
    out = Path(out_dir)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for n in range(n_cases):
        vol, label = ellipsoid_case(shape, rng)
        cid = f"synth_{n:03d}"
        write_volume(vol, out / "imagesTr" / f"{cid}_0000.nii.gz")
        write_mask(label, vol, out / "labelsTr" / f"{cid}.nii.gz")
    meta = {
        "name": "synthetic_ellipsoids",
        "description": "synthetic MR-like volumes, one bright ellipsoid each (Testing/Python/loop_synth.py)",
        "channel_names": {"0": "MR"},
        "labels": {"background": 0, label_name: 1},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out
