"""``semisam segment IMAGE --model DIR --output MASK.nii.gz [--uncertainty UNC.nii.gz] [--device cpu|cuda]``.

Runs the specialist on a scan and writes the label map (and optionally the per-voxel uncertainty) on
exactly the scan's grid; prints a JSON summary (seconds per stage, voxels per label, the slices to
review first) on stdout and a progress bar on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from semisam.device import DEVICE_CHOICES
from semisam.scan.volume import read_volume, write_mask, write_volume

#: As ``semisam.device.DEVICE_CHOICES``; repeated so building the parser does not import torch.


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="auto-segment a scan with a specialist model")
    p.add_argument("image", help="NIfTI / NRRD / MHA file or DICOM folder")
    p.add_argument("--model", required=True, help="model directory (manifest.json + weights.safetensors)")
    p.add_argument("--output", required=True, help="label map to write (e.g. MASK.nii.gz)")
    p.add_argument("--uncertainty", help="also write the per-voxel uncertainty (float32, 0..1) here")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="default: %(default)s")
    p.add_argument("--review", type=int, default=5, help="how many slices to list for review (default 5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from semisam.model_folder import verify_model_dir
    from semisam.outputs import commit_outputs, plan_outputs

    t0 = time.perf_counter()
    # Checked before the model is loaded: never the scan or the model folder, never each other.
    outputs = plan_outputs(
        {"IMAGE": args.image, "--model": args.model},
        {"--output": (args.output, "image"), "--uncertainty": (args.uncertainty, "image")},
    )
    # The model folder (files, sha256, manifest fields and a built-in network's inference settings) is
    # checked before torch and MONAI are imported: a bad manifest costs 0.3 s instead of 5.
    verify_model_dir(args.model)
    from tqdm import tqdm

    from semisam.device import resolve_device
    from semisam.inference import segment
    from semisam.model_folder import load_model

    device = resolve_device(args.device)
    model, manifest = load_model(args.model, device)
    volume = read_volume(args.image)
    t_read = time.perf_counter() - t0
    bar = tqdm(total=100, unit="%", file=sys.stderr, disable=args.no_progress, desc="segment")

    def progress(fraction: float, stage: str) -> None:
        bar.set_postfix_str(stage)
        bar.update(int(round(fraction * 100)) - bar.n)

    try:
        result = segment(volume, model, manifest, device, progress=progress)
    except BaseException:
        bar.leave = False  # erase the bar: the error line stays the only output
        raise
    finally:
        bar.close()
    t1 = time.perf_counter()
    with commit_outputs(outputs) as tmp:  # both files appear together, or neither is touched
        write_mask(result.labels, volume, tmp["--output"])
        if "--uncertainty" in tmp:
            write_volume(volume.with_array(result.uncertainty), tmp["--uncertainty"])
    t_write = time.perf_counter() - t1
    values, counts = np.unique(result.labels[result.labels > 0], return_counts=True)
    names = {v: k for k, v in manifest.labels.items()}
    k = max(0, int(args.review))
    summary = {
        "image": str(args.image),
        "output": str(args.output),
        "uncertainty": args.uncertainty,
        "device": str(device),
        "model": {"arch": manifest.arch, "sha256": manifest.sha256},
        "model_grid": {"shape_zyx": list(result.model_shape), "spacing_mm": list(result.model_spacing)},
        "voxels": {names.get(int(v), str(int(v))): int(c) for v, c in zip(values, counts, strict=True)},
        "review_slices_k": [int(i) for i in result.review_order[:k]],
        "seconds": {
            "read": round(t_read, 3),
            **{s: round(t, 3) for s, t in result.seconds.items()},
            "write": round(t_write, 3),
            "total": round(time.perf_counter() - t0, 3),
        },
    }
    print(json.dumps(summary, indent=2))
    return 0
