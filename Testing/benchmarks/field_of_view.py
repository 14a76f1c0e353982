"""Benchmark: how much of the slice the generalist should see, with a ground-truth box on every slice.

LiteMedSAM sees the whole slice resized to 256 px: on a 181 x 217 head a 15 px structure is a few cells of
its 64 x 64 embedding. This measures the box-per-slice oracle (a tight ground-truth box of each 2D
connected part on every truth slice, each slice answered on its own, no propagation) under these
field-of-view rules:

* ``whole``: the whole windowed slice, the model's normal path (what the product does today);
* ``window2.5``: a square window of side 2.5 x the box's longer side (at least ``MIN_WINDOW_PX``) around
  the box, moved inside the slice where the slice is large enough, else padded with 0 (the windowed
  intensity's floor); the model resizes it to its input; the box is mapped into it and the logits are put
  back exactly onto the slice grid;
* ``window4``: the same at 4 x;
* ``adaptive``: both ``whole`` and ``window2.5``, keeping the one with the higher predicted IoU (the
  model's score), per part;
* ``adaptive_small``: ``window2.5`` when the box's longer side is below 1/8 of the slice's shorter side,
  else ``whole`` (from the box size alone);
* ``auto``: the product's rule (:mod:`semisam.generalists.view`): the whole slice and the view around the
  box (2.5-3x the box, only where it is under half the slice), keeping the answer whose mask's bounding
  box agrees better with the box.

Each slice is encoded once per window (the whole slice once, each part's window once); the derived rules
reuse those answers. Dice is over the case's volume (the union of the parts' masks on every truth slice).

Cases: development tasks (``dev_datasets.py``) as whole heads (``--whole``, 181 x 217 in-plane) and their
cropped twins (a box around the structure), built into ``--dev-dir`` when missing; and the lesion sample
cases ``lung1``, ``brain1``, ``breast1`` (:mod:`semisam.samples`, or ``../shared/data``).

Prints one JSON object: machine info, and per task and variant the per-case Dice of every rule, the
median over cases, the mean box (longer side, pixels), the slice size and seconds (encode + decode per
rule, summed over cases; ``adaptive`` is ``whole`` + ``window2.5``).

Usage: ``OMP_NUM_THREADS=1 python Testing/benchmarks/field_of_view.py [--tasks thalamus,caudate,amygdala,
lung1,brain1,breast1] [--cases 3] [--variants whole,cropped] [--rules whole,window2.5,window4,adaptive,
adaptive_small] [--dev-dir DIR] [--data DIR]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEV_TASKS = ("thalamus", "caudate", "amygdala")
LESION_CASES = ("lung1", "brain1", "breast1")
RULES = ("whole", "window2.5", "window4", "adaptive", "adaptive_small", "auto")
#: the smallest window side in slice pixels
MIN_WINDOW_PX = 32
#: ``adaptive_small`` windows a box whose longer side is below this fraction of the slice's shorter side
SMALL_FRACTION = 1 / 8


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=",".join(DEV_TASKS + LESION_CASES), help="comma-separated tasks/cases")
    p.add_argument("--cases", type=int, default=3, help="cases per development task")
    p.add_argument("--variants", default="whole,cropped", help="development task variants: whole, cropped")
    p.add_argument("--rules", default=",".join(RULES), help=f"comma-separated, of {', '.join(RULES)}")
    p.add_argument(
        "--dev-dir",
        type=Path,
        default=None,
        help="folder with the built development tasks (TASK/, TASK_whole/); missing ones are built there "
        "(default: a temporary folder)",
    )
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="source scans folder")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    args = p.parse_args(argv)
    args.rules = [r for r in args.rules.split(",") if r]
    bad = set(args.rules) - set(RULES)
    if bad:
        p.error(f"unknown rules {sorted(bad)}; choose from {', '.join(RULES)}")
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.variants = [v for v in args.variants.split(",") if v]
    return args


# --- geometry ------------------------------------------------------------------------------------------


def window_origin(lo: int, hi: int, side: int, size: int) -> int:
    """First pixel of a ``side``-long window centred on ``lo..hi`` (inclusive), moved inside ``0..size-1``
    when ``side <= size``, else centred on the slice (padded both sides)."""
    start = int(math.floor((lo + hi + 1) / 2 - side / 2))
    if side <= size:
        return min(max(start, 0), size - side)
    return -((side - size) // 2)


def crop_window(image, y0: int, x0: int, side: int):
    """``(side, side)`` window of ``image`` at ``(y0, x0)``, 0 outside the slice."""
    import numpy as np

    h, w = image.shape
    out = np.zeros((side, side), np.float32)
    ys, ye = max(0, y0), min(h, y0 + side)
    xs, xe = max(0, x0), min(w, x0 + side)
    out[ys - y0 : ye - y0, xs - x0 : xe - x0] = image[ys:ye, xs:xe]
    return out


# --- one case ------------------------------------------------------------------------------------------


def run_case(model, volume, label, modality: str, rules: list[str]) -> dict:
    """Dice of every rule on one case, plus box sizes and seconds."""
    import numpy as np
    from scipy import ndimage as ndi

    from semisam.generalists import SlicePrompt
    from semisam.generalists.view import choose, encode_view, predict, view_around
    from semisam.metrics import dice
    from semisam.propagation import init_state
    from semisam.propagation.simulate import lesion_slices

    state = init_state(model, volume, "axial", modality=modality)
    net = state.model  # the generalist (wrapped for square pixels where the scan needs it)
    truth = label > 0
    factors = {"window2.5": 2.5, "window4": 4.0}
    need = set()
    for r in rules:
        need |= {r: {"whole", "window2.5"} for r in ("adaptive", "adaptive_small")}.get(r, {r})
    seconds = dict.fromkeys(need, 0.0)
    masks = {r: np.zeros(truth.shape, bool) for r in rules}
    sides, chosen_window = [], {"adaptive": 0, "adaptive_small": 0, "auto": 0}
    n_parts = 0
    h, w = truth.shape[1:]
    for s in lesion_slices(label):
        img = state.image(s)
        parts, n = ndi.label(truth[s])
        emb_whole = None
        seconds_whole_encode = 0.0
        if "whole" in need or "auto" in rules:
            t = time.perf_counter()
            emb_whole = net.encode(img)
            seconds_whole_encode = time.perf_counter() - t
            if "whole" in need:
                seconds["whole"] += seconds_whole_encode
        for i in range(1, n + 1):
            ys, xs = np.nonzero(parts == i)
            y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
            longer = max(y1 - y0 + 1, x1 - x0 + 1)
            sides.append(longer)
            n_parts += 1
            answers = {}  # rule -> (mask on the slice, score)
            if "whole" in need:
                t = time.perf_counter()
                p = net.predict(emb_whole, SlicePrompt(box=(x0, y0, x1, y1)))
                answers["whole"] = (p.mask, p.score)
                seconds["whole"] += time.perf_counter() - t
            for name, f in factors.items():
                if name not in need:
                    continue
                t = time.perf_counter()
                side = max(MIN_WINDOW_PX, int(math.ceil(f * longer)))
                wy, wx = window_origin(y0, y1, side, h), window_origin(x0, x1, side, w)
                emb = net.encode(crop_window(img, wy, wx, side))
                p = net.predict(emb, SlicePrompt(box=(x0 - wx, y0 - wy, x1 - wx, y1 - wy)))
                full = np.zeros((h, w), bool)
                ys_, ye_ = max(0, wy), min(h, wy + side)
                xs_, xe_ = max(0, wx), min(w, wx + side)
                full[ys_:ye_, xs_:xe_] = p.mask[ys_ - wy : ye_ - wy, xs_ - wx : xe_ - wx]
                answers[name] = (full, p.score)
                seconds[name] += time.perf_counter() - t
            if "auto" in rules:  # the product's rule (semisam.generalists.view)
                t = time.perf_counter()
                box = (x0, y0, x1, y1)
                whole_p = predict(net, emb_whole, SlicePrompt(box=box))
                v = view_around(box, (h, w))
                if v is None:
                    answers["auto"] = (whole_p.mask, whole_p.score, False)
                else:
                    closer_p = predict(net, encode_view(net, img, v), SlicePrompt(box=box))
                    use = choose(whole_p, closer_p, box)
                    p = closer_p if use else whole_p
                    answers["auto"] = (p.mask, p.score, use)
                seconds["auto"] = seconds.get("auto", 0.0) + time.perf_counter() - t + seconds_whole_encode
                seconds_whole_encode = 0.0  # the slice is encoded once for all its parts
            for r in rules:
                if r == "adaptive":
                    use_window = answers["window2.5"][1] > answers["whole"][1]
                    pick = "window2.5" if use_window else "whole"
                    chosen_window[r] += use_window
                elif r == "adaptive_small":
                    use_window = longer < SMALL_FRACTION * min(h, w)
                    pick = "window2.5" if use_window else "whole"
                    chosen_window[r] += use_window
                elif r == "auto":
                    pick = "auto"
                    chosen_window[r] += answers["auto"][2]
                else:
                    pick = r
                masks[r][s] |= answers[pick][0]
    secs = {r: round(seconds[r], 2) for r in need | ({"auto"} & set(rules))}
    if "adaptive" in rules:
        secs["adaptive"] = round(seconds["whole"] + seconds["window2.5"], 2)
    return {
        "dice": {r: round(dice(masks[r], truth), 4) for r in rules},
        "window_chosen": {r: f"{chosen_window[r]}/{n_parts}" for r in chosen_window if r in rules},
        "slices": len(lesion_slices(label)),
        "parts": n_parts,
        "box_px_mean": round(float(np.mean(sides)), 1) if sides else None,
        "slice_px": [int(h), int(w)],
        "seconds": secs,
    }


def summarise(cases: dict, rules: list[str]) -> dict:
    vals = [c for c in cases.values() if "dice" in c]
    if not vals:
        return {"cases": cases}
    return {
        "median_dice": {r: round(statistics.median(c["dice"][r] for c in vals), 4) for r in rules},
        "box_px_mean": round(statistics.mean(c["box_px_mean"] for c in vals), 1),
        "slice_px": vals[0]["slice_px"],
        "seconds": round(
            sum(sum(v for k, v in c["seconds"].items() if k not in ("adaptive", "auto")) for c in vals), 1
        ),
        "cases": cases,
    }


def dev_cases(
    task: str, variant: str, n_cases: int, dev_dir: Path, data: Path
) -> list[tuple[str, Path, Path]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import dev_datasets

    name = f"{task}_whole" if variant == "whole" else task
    folder = dev_dir / name
    meta = folder / "dataset.json"
    if not meta.is_file() or len(json.loads(meta.read_text())["training"]) < n_cases:
        if folder.exists():
            raise SystemExit(f"{folder} holds fewer than {n_cases} cases; give another --dev-dir")
        dev_datasets.build(task, dev_dir, n_cases, 0, data, whole=variant == "whole")
    entries = json.loads(meta.read_text())["training"][:n_cases]
    return [(Path(e["image"]).name.split(".")[0], folder / e["image"], folder / e["label"]) for e in entries]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import tempfile

    import torch
    from bench_common import machine_info

    from semisam.generalists import build_generalist
    from semisam.samples import MODALITY, find_case
    from semisam.scan.volume import read_mask, read_volume

    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    model = build_generalist("litemedsam", device="cpu")
    dev_dir = args.dev_dir or Path(tempfile.mkdtemp(prefix="semisam-fov-"))
    results = {}
    for task in args.tasks:
        if task in LESION_CASES:
            case = find_case(task, extra=[args.data])
            if case is None:
                results[task] = {"skipped": "sample case not found (run `semisam samples fetch`)"}
                continue
            t = time.perf_counter()
            vol = read_volume(case.image)
            lab = read_mask(case.label, reference=vol).array
            one = run_case(model, vol, lab, MODALITY[task], args.rules)
            one["wall_s"] = round(time.perf_counter() - t, 1)
            results[task] = summarise({task: one}, args.rules)
            print(f"{task}: {one['dice']}", file=sys.stderr, flush=True)
            continue
        for variant in args.variants:
            cases = {}
            for cid, img_path, lab_path in dev_cases(task, variant, args.cases, dev_dir, args.data):
                t = time.perf_counter()
                vol = read_volume(img_path)
                lab = read_mask(lab_path, reference=vol).array
                cases[cid] = run_case(model, vol, lab, "MR", args.rules)
                cases[cid]["wall_s"] = round(time.perf_counter() - t, 1)
                print(f"{cid}: {cases[cid]['dice']}", file=sys.stderr, flush=True)
            results[f"{task}/{variant}"] = summarise(cases, args.rules)
    out = {
        "benchmark": "field_of_view",
        "machine": machine_info(
            generalist="litemedsam", encoder_backend=getattr(model, "encoder_backend", "eager")
        ),
        "rules": args.rules,
        "min_window_px": MIN_WINDOW_PX,
        "small_fraction": SMALL_FRACTION,
        "results": results,
        "total_s": round(time.perf_counter() - t_all, 1),
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
