"""Benchmark: LiteMedSAM encode (s/slice) and prompt latency (ms), eager fp32 vs the fast backend, in one
process, plus Dice of the fast path's masks against eager fp32 on real lesion slices with ground-truth boxes.

Prints one JSON object. The machine is shared, so next to every timing it reports the throughput of a
large fp32 matrix product measured in the same moments (``gemm_gflops``): divide by it to compare runs
taken under different load. Run: ``python Testing/benchmarks/encoder.py [--repeats 5] [--prompts 20]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import machine_info

from semisam import samples
from semisam.generalists import SlicePrompt, build_generalist
from semisam.generalists.fast_encoder import apply_backend
from semisam.metrics import dice
from semisam.scan.intensity import apply_window, window_for
from semisam.scan.volume import read_mask, read_volume

ENCODER_GFLOP = 74.95  # LiteMedSAM TinyViT at 256x256, torch.utils.flop_counter.FlopCounterMode
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def gemm_gflops(n: int = 1024) -> float:
    a = torch.randn(n, n)
    a @ a
    t = time.perf_counter()
    a @ a
    return 2 * n**3 / (time.perf_counter() - t) / 1e9


def gemm_gflops_per_cpu_second(n: int = 1024) -> float:
    """Single-thread fp32 GEMM throughput per CPU-second: the core's speed, mostly free of the load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = torch.randn(n, n)
        a @ a
        best = 0.0
        for _ in range(3):
            c = time.process_time()
            a @ a
            best = max(best, 2 * n**3 / max(time.process_time() - c, 1e-9) / 1e9)
        return best
    finally:
        torch.set_num_threads(threads)


def lesion_slices(case_name: str):
    case = samples.find_case(case_name, extra=[SHARED])
    if case is None:
        return []
    vol = read_volume(case.image)
    lab = read_mask(case.label, vol).array > 0
    win = window_for(vol, case.modality)
    out = []
    for z in np.nonzero(lab.reshape(lab.shape[0], -1).any(1))[0]:
        ys, xs = np.nonzero(lab[z])
        out.append(
            (f"{case_name}:{z}", apply_window(vol.array[z], win), (xs.min(), ys.min(), xs.max(), ys.max()))
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="encodes per backend (median reported)")
    ap.add_argument("--prompts", type=int, default=20, help="prompts per backend (median reported)")
    ap.add_argument("--backend", default="onnxruntime", help="fast backend to compare with eager")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    model = build_generalist("litemedsam", device="cpu", backend=args.backend)
    load_s = time.perf_counter() - t0
    slices = lesion_slices("lung1") + lesion_slices("brain1")
    if not slices:
        print(json.dumps({"error": "no sample data found (semisam samples fetch)"}))
        return 1
    _, img0, box0 = slices[len(slices) // 2]
    prompt0 = SlicePrompt(box=tuple(float(v) for v in box0))

    t0 = time.perf_counter()
    model.encode(img0)  # first use: ONNX export (or reuse of the cached file) + session start
    fast_first_s = time.perf_counter() - t0

    enc = {"eager": [], "fast": []}
    cpu = {"eager": [], "fast": []}
    pr = {"eager": [], "fast": []}
    prc = {"eager": [], "fast": []}
    gflops = []
    for _ in range(args.repeats):  # interleaved, so both backends see the same load
        for which in ("fast", "eager"):
            (model.use_eager_encoder if which == "eager" else lambda: apply_backend(model, args.backend))()
            t, c = time.perf_counter(), time.process_time()
            model.encode(img0)
            enc[which].append(time.perf_counter() - t)
            cpu[which].append(time.process_time() - c)
        gflops.append(gemm_gflops())
    for which in ("fast", "eager"):
        (model.use_eager_encoder if which == "eager" else lambda: apply_backend(model, args.backend))()
        emb = model.encode(img0)
        model.predict(emb, prompt0)
        for _ in range(args.prompts):
            t, c = time.perf_counter(), time.process_time()
            model.predict(emb, prompt0)
            pr[which].append(time.perf_counter() - t)
            prc[which].append(time.process_time() - c)
        gflops.append(gemm_gflops())

    dices = {}
    for name, img, box in slices:
        p = SlicePrompt(box=tuple(float(v) for v in box))
        model.use_eager_encoder()
        ref = model.predict(model.encode(img), p).mask
        apply_backend(model, args.backend)
        dices[name] = round(dice(model.predict(model.encode(img), p).mask, ref), 5)

    med = {k: statistics.median(v) for k, v in enc.items()}
    pmed = {k: statistics.median(v) * 1e3 for k, v in pr.items()}
    g = statistics.median(gflops)
    gpc = gemm_gflops_per_cpu_second()
    result = {
        "benchmark": "encoder",
        "model": "litemedsam",
        "fast_backend": args.backend,
        "encode_s_per_slice": {k: round(v, 4) for k, v in med.items()},
        "encode_slices_per_s_fast": round(1 / med["fast"], 3),
        # CPU seconds the process burnt per encode (all threads): on an idle machine wall ~ cpu / cores
        "encode_cpu_s_per_slice": {k: round(statistics.median(v), 4) for k, v in cpu.items()},
        "encode_speedup_fast_vs_eager": round(med["eager"] / med["fast"], 3),
        "prompt_ms": {k: round(v, 2) for k, v in pmed.items()},
        "prompt_speedup_fast_vs_eager": round(pmed["eager"] / pmed["fast"], 3),
        "dice_fast_vs_eager": dices,
        "dice_fast_vs_eager_min": min(dices.values()),
        "repeats": {"encode": args.repeats, "prompt": args.prompts},
        "first_fast_encode_s": round(fast_first_s, 2),
        "model_load_s": round(load_s, 2),
        "gemm_gflops_fp32_1024_median": round(g, 1),
        "gemm_gflops_samples": [round(x, 1) for x in gflops],
        # Load-independent view: GFLOP per CPU-second of the fast encoder (75 GFLOP per slice, counted with
        # torch FlopCounterMode) against a single-thread fp32 GEMM per CPU-second on the same cores.
        "encoder_gflop_per_slice": ENCODER_GFLOP,
        "gemm_gflops_per_cpu_s_1thread": round(gpc, 1),
        "encode_fast_gflops_per_cpu_s": round(ENCODER_GFLOP / statistics.median(cpu["fast"]), 1),
        "encode_fast_fraction_of_gemm_peak": round(ENCODER_GFLOP / statistics.median(cpu["fast"]) / gpc, 3),
        # estimate for an idle machine, NOT a measurement: fast CPU-seconds spread over all cores
        "encode_s_per_slice_fast_idle_est": round(statistics.median(cpu["fast"]) / (os.cpu_count() or 1), 3),
        "prompt_cpu_ms_fast": round(statistics.median(prc["fast"]) * 1e3, 2),
        "machine": machine_info(onnxruntime=__import__("onnxruntime").__version__),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
