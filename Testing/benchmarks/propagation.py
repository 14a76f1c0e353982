"""Benchmark: sparse-slice propagation on the sample cases against an oracle and a naive propagation.

Prints one JSON object: per case, the Dice of

* ``oracle``: the label's box on EVERY lesion slice, each answered by the same model (the ceiling for
  box prompts);
* ``naive``: one box (label box) on the middle lesion slice, then previous mask's box + 4 px on the next
  slice, stop when empty (the baseline of /work/shared/data/README.md);
* ``middle_k1``: our propagation from one label box on the middle lesion slice;
* ``k1``, ``k2``, ``k3``: our propagation from label boxes on k key slices chosen by the product's rule
  (:func:`semisam.propagation.simulate.key_slices`);

and timings (wall and process CPU seconds; on a shared machine CPU seconds / threads is the better guide
to the idle wall time): ``cold_10_slices_s`` (one box propagated through exactly 10 slices, fresh embedding cache,
median of ``--repeats``), ``encode_s`` (one slice, warm, median) and ``predict_ms`` (one prompt answered
from a cached embedding, median) — ratios are against ``encode_s`` measured in this same process.

Usage: ``python Testing/benchmarks/propagation.py [--cases lung1,brain1,breast1] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import machine_info

from semisam.generalists import SlicePrompt, build_generalist
from semisam.generalists.cache import EmbeddingCache
from semisam.metrics import dice
from semisam.prompts import box_from_mask
from semisam.propagation import PropagationParams, add_prompt, add_prompts, init_state, propagate
from semisam.propagation.simulate import boxes_from_label, key_slices, lesion_slices, middle_slice
from semisam.samples import find_case
from semisam.volume import read_mask, read_volume

REPO = Path(__file__).resolve().parents[2]


def oracle(state, label: np.ndarray) -> np.ndarray:
    """Label box on every lesion slice, answered independently by the model."""
    out = np.zeros(label.shape, np.uint8)
    for s in lesion_slices(label):
        pred = state.predict(state.embedding(s), SlicePrompt(box=box_from_mask(label[s] > 0)))
        out[s] = pred.mask
    return out


def naive(state, label: np.ndarray, key: int, margin_px: int = 4) -> np.ndarray:
    """Previous mask's box + ``margin_px`` as the next prompt, both ways, stop when the mask is empty."""
    out = np.zeros(label.shape, np.uint8)
    first = state.predict(state.embedding(key), SlicePrompt(box=box_from_mask(label[key] > 0))).mask
    out[key] = first
    h, w = label.shape[1:]
    for d in (-1, 1):
        prev, s = first, key + d
        while 0 <= s < label.shape[0]:
            b = box_from_mask(prev)
            if b is None:
                break
            box = (
                max(0, b[0] - margin_px),
                max(0, b[1] - margin_px),
                min(w - 1, b[2] + margin_px),
                min(h - 1, b[3] + margin_px),
            )
            prev = state.predict(state.embedding(s), SlicePrompt(box=box)).mask
            if not prev.any():
                break
            out[s] = prev
            s += d
    return out


def ours(model, volume, label, slices, modality, cache) -> tuple[float, object, object]:
    state = init_state(model, volume, "axial", modality=modality, cache=cache)
    add_prompts(state, list(boxes_from_label(label, slices).prompts))
    result = propagate(state)
    return dice(result.mask, label), result, state


def cold_ten_slices(model, volume, label, modality, repeats: int) -> dict:
    """One label box on the middle lesion slice, propagated through exactly 10 slices with a fresh cache.

    Stopping tests are switched off and negative-point key slices bound the range, so every run does the
    same work (10 encodes) whatever the structure does.
    """
    key = middle_slice(label)
    lo = max(0, min(key - 4, volume.shape[0] - 10))
    relaxed = PropagationParams(min_score=0.0, min_likeness=0.0, min_overlap=0.0, max_area_ratio=1e9)
    times, cpu = [], []
    for _ in range(repeats):
        state = init_state(model, volume, "axial", modality=modality, params=relaxed, cache=EmbeddingCache())
        add_prompt(state, key, box=box_from_mask(label[key] > 0))
        x = int(np.flatnonzero(label[key].any(0))[0])
        y = int(np.flatnonzero(label[key].any(1))[0])
        for s in (lo - 1, lo + 10):
            if 0 <= s < volume.shape[0]:
                add_prompt(state, s, point=(x, y), positive=False)
        t, c = time.perf_counter(), time.process_time()
        propagate(state)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        assert state.n_encode == 10, state.n_encode
    return {
        "seconds": round(statistics.median(times), 3),
        "cpu_seconds": round(statistics.median(cpu), 3),
        "runs": [round(t, 3) for t in times],
        "slices": 10,
    }


def micro(model, volume, label, modality, repeats: int) -> dict:
    state = init_state(model, volume, "axial", modality=modality, cache=EmbeddingCache())
    key = middle_slice(label)
    img = state.image(key)
    model.encode(img)  # warm-up (ONNX session, allocator)
    enc, enc_cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        emb = model.encode(img)
        enc.append(time.perf_counter() - t)
        enc_cpu.append(time.process_time() - c)
    prompt = SlicePrompt(box=box_from_mask(label[key] > 0))
    model.predict(emb, prompt)
    pred, pred_cpu = [], []
    for _ in range(max(5, repeats)):
        t, c = time.perf_counter(), time.process_time()
        model.predict(emb, prompt)
        pred.append(time.perf_counter() - t)
        pred_cpu.append(time.process_time() - c)
    return {
        "encode_s": round(statistics.median(enc), 3),
        "encode_cpu_s": round(statistics.median(enc_cpu), 3),
        "predict_ms": round(1000 * statistics.median(pred), 1),
        "predict_cpu_ms": round(1000 * statistics.median(pred_cpu), 1),
    }


def run_case(model, name: str, repeats: int) -> dict:
    case = find_case(name, extra=[REPO.parent / "shared" / "data"])
    if case is None:
        return {"skipped": "sample case not found (run `semisam samples fetch`)"}
    volume = read_volume(case.image)
    label = read_mask(case.label, reference=volume).array
    cache = EmbeddingCache(max_bytes=2 * 2**30)
    out: dict = {"lesion_slices": lesion_slices(label)}
    t = time.perf_counter()
    d, res, state = ours(model, volume, label, [middle_slice(label)], case.modality, cache)
    out["middle_k1"] = {
        "slices": [middle_slice(label)],
        "dice": round(d, 4),
        "seconds": round(time.perf_counter() - t, 2),
    }
    out["middle_k1"]["stops"] = res.stops
    for k in (1, 2, 3):
        keys = key_slices(label, k)
        t = time.perf_counter()
        d, res, _ = ours(model, volume, label, keys, case.modality, cache)
        out[f"k{k}"] = {"slices": keys, "dice": round(d, 4), "seconds": round(time.perf_counter() - t, 2)}
    out["oracle"] = round(dice(oracle(state, label), label), 4)
    out["naive"] = round(dice(naive(state, label, middle_slice(label)), label), 4)
    o = out["oracle"]
    out["ratio_to_oracle"] = {k: round(out[k]["dice"] / o, 3) for k in ("middle_k1", "k1", "k2", "k3")}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="lung1,brain1,breast1")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timing-case", default="brain1", help="case for the cold 10-slice timing ('' to skip)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    t = time.perf_counter()
    model = build_generalist("litemedsam", device="cpu")
    report: dict = {
        "machine": machine_info(),
        "model": "litemedsam",
        "build_s": round(time.perf_counter() - t, 2),
    }
    report["params"] = PropagationParams().to_json()
    report["cases"] = {name: run_case(model, name, args.repeats) for name in args.cases.split(",") if name}
    if args.timing_case:
        case = find_case(args.timing_case, extra=[REPO.parent / "shared" / "data"])
        if case is not None:
            volume = read_volume(case.image)
            label = read_mask(case.label, reference=volume).array
            m = micro(model, volume, label, case.modality, args.repeats)
            c = cold_ten_slices(model, volume, label, case.modality, args.repeats)
            report["timing"] = {
                "case": case.name,
                **m,
                "cold_10_slices_s": c["seconds"],
                "cold_10_slices_cpu_s": c["cpu_seconds"],
                "cold_runs_s": c["runs"],
                "cold_10_slices_in_encodes": round(c["seconds"] / m["encode_s"], 2),
                "cold_10_slices_in_encodes_cpu": round(c["cpu_seconds"] / m["encode_cpu_s"], 2),
            }
    report["machine"]["load_avg_1min_end"] = (
        round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
