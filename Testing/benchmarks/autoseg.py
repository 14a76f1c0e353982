"""Auto-segmentation end to end: mamba_unet vs unet3d, same preprocessing, same run.

For each case ((a) lung1, (b) a synthetic 512x512x300 CT, (c) ``colin27``: the whole-head Colin27 T1 MRI,
181x217x181 at 1 mm) and each model, a fresh child process does
read -> preprocess -> infer -> post-process -> write (the mask, .nii.gz) and reports its stage times and
peak resident memory (``resource.getrusage``, so each model's peak is its own). Models run interleaved
(A, B, A, B, ...) so load from other users of the CPU hits both alike; medians of the repeats and the
ratio unet3d / mamba_unet are printed as JSON, with the machine and the shared target spacing.

Both models are untrained (seeded random weights): speed and memory do not depend on the weights.
``unet3d_overlap0`` is unet3d with no window overlap, the cheapest way to run it (seams at window
borders), reported as a lower bound on its time.

Each run also reports its CPU time (user + system, ``getrusage``; OpenMP told to sleep rather than spin
when idle): on a shared machine wall-clock times swing 2-4x between runs, CPU time much less.
``--threads 1`` makes CPU time a clean measure of work; wall-clock on an idle 2-core machine is then
roughly CPU time / 1.8 with 2 threads.

Run: ``python Testing/benchmarks/autoseg.py [--repeats 3] [--cases lung1,synthetic,colin27] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import load_average, machine_info

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
MODELS = {
    "mamba_unet": {"arch": "mamba_unet", "inference": {}},
    "unet3d": {"arch": "unet3d", "inference": {}},
    "unet3d_overlap0": {"arch": "unet3d", "inference": {"overlap": 0.0}},
}
#: The synthetic scan: 512 x 512 x 300 voxels of 0.78 x 0.78 x 1.25 mm (a 400 x 400 x 375 mm chest-abdomen CT).
SYNTH_SHAPE_ZYX = (300, 512, 512)
SYNTH_SPACING = (0.78, 0.78, 1.25)


def child(args: argparse.Namespace) -> None:
    """One timed run in this (fresh) process; prints one JSON line."""
    import resource

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from semisam.inference import segment
    from semisam.model_folder import load_model
    from semisam.scan.volume import read_volume, write_mask

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    vol = read_volume(args.image)
    t_read = time.perf_counter() - t0
    model, man = load_model(args.model, "cpu")
    res = segment(vol, model, man, "cpu")
    t1 = time.perf_counter()
    write_mask(res.labels, vol, args.output)
    t_write = time.perf_counter() - t1
    total = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB
    out = {
        "total_s": total,
        "cpu_s": cpu,
        "read_s": t_read,
        **{f"{k}_s": v for k, v in res.seconds.items()},
        "write_s": t_write,
        "peak_rss_gb": rss_gb,
        "model_shape_zyx": list(res.model_shape),
        "model_spacing_mm": [round(s, 4) for s in res.model_spacing],
        "foreground_voxels": int(np.count_nonzero(res.labels)),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(out))


def make_synthetic(path: Path) -> None:
    """A CT-like phantom: air, a body ellipse of soft tissue, two lungs, spine, a few nodules; noise."""
    import numpy as np

    from semisam.scan.volume import Volume, write_volume

    z, y, x = SYNTH_SHAPE_ZYX
    rng = np.random.default_rng(0)
    yy, xx = np.ogrid[-1 : 1 : y * 1j, -1 : 1 : x * 1j]
    body = (xx / 0.85) ** 2 + (yy / 0.65) ** 2 < 1
    lungs = (((xx - 0.35) / 0.25) ** 2 + (yy / 0.4) ** 2 < 1) | (
        ((xx + 0.35) / 0.25) ** 2 + (yy / 0.4) ** 2 < 1
    )
    spine = (xx / 0.08) ** 2 + ((yy - 0.45) / 0.08) ** 2 < 1
    sl = np.where(body, 40, -1000).astype(np.int16)
    sl[lungs & body] = -850
    sl[spine] = 700
    arr = np.empty((z, y, x), dtype=np.int16)
    for k in range(z):
        arr[k] = sl
    for cz, cy, cx, r in [(80, 250, 150, 12), (150, 230, 360, 8), (220, 280, 170, 15)]:
        zz, yy2, xx2 = np.ogrid[:z, :y, :x]
        ball = ((zz - cz) * 1.25) ** 2 + ((yy2 - cy) * 0.78) ** 2 + ((xx2 - cx) * 0.78) ** 2 < (
            r * 0.78 * 2
        ) ** 2
        arr[ball] = 30
    arr += rng.normal(0, 20, size=(1, y, x)).astype(np.int16)  # fixed-pattern noise, cheap to make
    write_volume(Volume(arr, spacing=SYNTH_SPACING, origin=(-200.0, -200.0, -400.0)), path, compress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", default="lung1,synthetic")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--workdir", help="keep inputs/models here (default: a temporary folder)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each run (default: torch's)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--image", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    import torch

    from semisam.model_folder import new_manifest, save_model
    from semisam.specialists import build_specialist, count_parameters

    info = machine_info()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="semisam-autoseg-"))
    work.mkdir(parents=True, exist_ok=True)
    names = [m for m in args.models.split(",") if m]
    params = {}
    for name in names:
        d = work / "models" / name
        if not d.exists():
            spec = MODELS[name]
            man = new_manifest(spec["arch"], ["lesion"], "CT")
            man.inference = dict(spec["inference"])
            torch.manual_seed(0)
            model = build_specialist(man.arch, **man.kwargs)
            save_model(d, model, man)
        params[name] = count_parameters(build_specialist(MODELS[name]["arch"], n_classes=2))
    images = {}
    for case in args.cases.split(","):
        if case == "synthetic":
            p = work / "synthetic_ct_512x512x300.nrrd"
            if not p.exists():
                make_synthetic(p)
            images[case] = p
        elif case == "colin27":  # a whole head, as a user loads it
            images[case] = SHARED_DATA / "ch2.nii.gz"
        else:
            images[case] = SHARED_DATA / f"{case}_image.nrrd"
    runs: dict = {c: {m: [] for m in names} for c in images}
    for case, image in images.items():
        for r in range(args.repeats):
            for name in names:
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    "--image",
                    str(image),
                    "--model",
                    str(work / "models" / name),
                    "--output",
                    str(work / f"{case}_{name}_mask.nii.gz"),
                    "--threads",
                    str(args.threads),
                ]
                # Idle OpenMP threads sleep instead of spinning, so CPU time measures work, not waiting
                # for a core (the machine is shared: wall-clock time swings 2-4x between runs).
                env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
                if proc.returncode != 0:
                    raise SystemExit(f"child failed for {case}/{name}:\n{proc.stderr}")
                runs[case][name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(f"{case} {name} run {r + 1}: {runs[case][name][-1]['total_s']:.2f} s", file=sys.stderr)
    from semisam.model_folder import read_manifest

    target = read_manifest(work / "models" / names[0]).preprocessing["target_spacing"]
    result = {
        "benchmark": "autoseg",
        "torch_threads_per_run": args.threads or info["torch_threads"],
        "machine": {**info, "load_avg_1min_end": load_average()},
        "target_spacing_mm_ijk": target,
        "input_files": {c: str(p) for c, p in images.items()},
        "parameters": params,
        "repeats": args.repeats,
        "cases": {},
    }
    for case in images:
        entry = {}
        for name in names:
            rs = runs[case][name]
            med = {
                k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0] if k.endswith(("_s", "_gb"))
            }
            entry[name] = {
                "median": med,
                "all_total_s": [round(r["total_s"], 2) for r in rs],
                "all_cpu_s": [round(r["cpu_s"], 2) for r in rs],
                "model_shape_zyx": rs[0]["model_shape_zyx"],
                "model_spacing_mm": rs[0]["model_spacing_mm"],
            }
        if "mamba_unet" in entry:
            base = entry["mamba_unet"]["median"]
            for name in names:
                if name != "mamba_unet":
                    o = entry[name]["median"]
                    per_run = [
                        round(a["total_s"] / b["total_s"], 2)
                        for a, b in zip(runs[case][name], runs[case]["mamba_unet"], strict=True)
                    ]
                    entry[f"ratio_{name}_over_mamba_unet"] = {
                        "total": round(o["total_s"] / base["total_s"], 2),
                        "infer": round(o["infer_s"] / base["infer_s"], 2),
                        "cpu": round(o["cpu_s"] / base["cpu_s"], 2),
                        "total_per_interleaved_run": per_run,
                    }
        result["cases"][case] = entry
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "scripted_modules"))
    main()
