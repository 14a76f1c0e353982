"""Training speed of the specialists in one process: iterations/s of ``mamba_unet`` vs ``unet3d``.

Runs the real :class:`semisam.training.trainer.Trainer` (supervised, augmentation on) on a synthetic
CT-like scan of 64 x 256 x 256 voxels at the models' target spacing, with the default training sample
of each architecture: 2.5D crops of 128 x 128 (batch 8) for ``mamba_unet``, 3D patches of 32 x 96 x 96
(batch 2) for ``unet3d``. Prints JSON: median seconds per iteration over repeats of ``--iterations``
steps (after one warm-up step), iterations/s and labeled voxels/s (voxels of the samples' labels).

    python Testing/benchmarks/train_speed.py [--iterations 10] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine_info  # noqa: E402

from semisam.device import resolve_device  # noqa: E402
from semisam.model_folder import new_manifest  # noqa: E402
from semisam.specialists import build_specialist, count_parameters  # noqa: E402
from semisam.training.config import TrainConfig  # noqa: E402
from semisam.training.ddp import DistInfo  # noqa: E402
from semisam.training.methods import build_parts  # noqa: E402
from semisam.training.methods.base import CaseData, TrainContext  # noqa: E402
from semisam.training.trainer import Trainer  # noqa: E402


def synthetic(shape=(64, 256, 256), seed=0) -> CaseData:
    rng = np.random.default_rng(seed)
    img = rng.normal(0.35, 0.05, shape).astype(np.float32)
    z, y, x = np.indices(shape)
    inside = ((z - 32) / 6) ** 2 + ((y - 120) / 12) ** 2 + ((x - 130) / 12) ** 2 <= 1
    img[inside] += 0.2
    return CaseData("synthetic", torch.from_numpy(img), torch.from_numpy(inside.astype(np.uint8)))


def measure(arch: str, device: torch.device, iterations: int, repeats: int, tmp: Path) -> dict:
    torch.manual_seed(0)
    man = new_manifest(arch, ["lesion"], "CT")
    student = build_specialist(arch, **man.kwargs).train()
    cfg = TrainConfig(
        iterations=10**6,
        device=str(device),
        checkpoint_every=10**6,
        batch_size=8 if arch == "mamba_unet" else 2,
    )
    ctx = TrainContext(
        config=cfg, device=device, student=student, manifest=man, store=None, cache=tmp, labeled=[synthetic()]
    )
    parts = build_parts(cfg.part_names, {}, ctx)
    trainer = Trainer(ctx, parts, DistInfo(), tmp / arch, {})
    trainer.step(0)  # warm-up (allocations, oneDNN kernel selection)
    times = []
    it = 1
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iterations):
            trainer.step(it)
            it += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / iterations)
    s = statistics.median(times)
    size = cfg.crop_size if arch == "mamba_unet" else cfg.patch_size
    voxels = cfg.batch_size * int(np.prod(size))
    return {
        "arch": arch,
        "parameters": count_parameters(student),
        "batch": cfg.batch_size,
        "sample": list(size),
        "seconds_per_iteration": round(s, 4),
        "iterations_per_s": round(1 / s, 3),
        "labeled_voxels_per_s": round(voxels / s),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import tempfile

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            measure(a, device, args.iterations, args.repeats, Path(tmp)) for a in ("mamba_unet", "unet3d")
        ]
    ratio = rows[0]["iterations_per_s"] / rows[1]["iterations_per_s"]
    print(
        json.dumps(
            {
                "benchmark": "train_speed",
                "device": str(device),
                "results": rows,
                "mamba_unet_over_unet3d_iterations_per_s": round(ratio, 2),
                "machine": machine_info(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
