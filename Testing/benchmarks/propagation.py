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

Long structures (``aal``): Colin27 T1 (1 mm) with AAL atlas structures 10-66 slices long, along the axial
and coronal axes. Per structure and axis: ``oracle`` (the label's tight box on every slice, same model),
``k1``/``k3``/``k5`` (boxes on k key slices chosen by the product's rule, each side moved by up to
``JITTER_PX`` as a human draws), their ratio to the oracle, the Spearman correlation of per-slice
confidence with per-slice Dice on the propagated slices, and ``review.wrong_first`` (of the slices with
Dice < 0.5, the fraction found in as many first places of the review order). ``--draws N`` repeats each
structure and axis with N draws of the jitter (``"axial"``, ``"axial/draw1"``, ...), each a run of the
summary (the jitter alone moves one cell's Dice: over 3 draws, by 0.05 median and up to 0.42 on the
seven AAL structures). ``aal_summary`` groups
``AAL_DEV`` (the structures the rules were developed on) and the others (never looked at while
developing). Every slice is encoded once per run (one cache across cases, structures and k);
``--embedding-cache DIR`` keeps the encoded slices between runs.

Usage: ``python Testing/benchmarks/propagation.py [--cases lung1,brain1,breast1] [--repeats 3]
[--structures Caudate_L,...] [--axes axial,coronal] [--ks 1,3,5] [--draws N] [--embedding-cache DIR]
[--quick]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from bench_common import load_average, machine_info

from semisam.generalists import SlicePrompt, build_generalist
from semisam.generalists.cache import EmbeddingCache
from semisam.metrics import dice
from semisam.propagation import PropagationParams, add_prompt, add_prompts, init_state, propagate
from semisam.propagation.params import FIELDS_OF_VIEW
from semisam.propagation.simulate import boxes_from_label, key_slices, lesion_slices, middle_slice
from semisam.samples import find_case
from semisam.scan.volume import read_mask, read_volume
from semisam.slices import box_from_mask, put_slice, take_slice

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("propagation-benchmark")


def oracle(state, label: np.ndarray) -> np.ndarray:
    """Label box on every lesion slice (along ``state.axis``), answered independently by the model."""
    out = np.zeros(label.shape, np.uint8)
    for s in lesion_slices(label, state.axis):
        pred = state.predict(
            state.embedding(s), SlicePrompt(box=box_from_mask(take_slice(label, state.axis, s) > 0))
        )
        put_slice(out, state.axis, s, pred.mask.astype(np.uint8))
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


#: what the propagations (not the oracle, always the whole slice) look at; ``--field-of-view`` sets it
PARAMS = PropagationParams()


def ours(model, volume, label, slices, modality, cache) -> tuple[float, object, object]:
    state = init_state(model, volume, "axial", modality=modality, cache=cache, params=PARAMS)
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
        # Ten slices, and the view around the key slice's box where one fits (field of view "auto").
        assert state.n_encode in (10, 11), state.n_encode
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


def run_case(model, name: str, repeats: int, cache: EmbeddingCache | None = None) -> dict:
    case = find_case(name, extra=[REPO.parent / "shared" / "data"])
    if case is None:
        return {"skipped": "sample case not found (run `semisam samples fetch`)"}
    volume = read_volume(case.image)
    label = read_mask(case.label, reference=volume).array
    cache = cache if cache is not None else EmbeddingCache(max_bytes=2 * 2**30)
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


# --- Long structures: Colin27 T1 + AAL atlas (1 mm, 10-66 slices per structure) -------------------------

#: Structures the propagation rules were developed on (looked at, debugged on).
AAL_DEV = ("Caudate_L", "Thalamus_L", "Pallidum_L")
#: Structures never looked at while developing: the evaluation of rules fixed on AAL_DEV and the lesions.
AAL_HELD_OUT = ("Amygdala_R", "Insula_R", "Caudate_R", "Heschl_L")
AAL_AXES = ("axial", "coronal")
#: A human's box is not the label's tight box: each side moves by up to this many pixels (1 mm here).
JITTER_PX = 2


class DiskEmbeddingCache(EmbeddingCache):
    """The in-memory LRU backed by ``.pt`` files, so that repeated benchmark runs encode each slice once.

    Files are named by a hash of the full :class:`~semisam.generalists.cache.EmbeddingKey` (model identity
    with its weights digest, scan fingerprint, axis, index, window), so a changed model or scan never
    reads a stale file.
    """

    def __init__(self, folder: Path, max_bytes: int = 2 * 2**30) -> None:
        super().__init__(max_bytes)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key) -> Path:
        import hashlib

        return self.folder / (hashlib.sha256(repr(key).encode()).hexdigest()[:40] + ".pt")

    def get(self, key):
        emb = super().get(key)
        if emb is None and self._path(key).exists():
            import torch

            from semisam.generalists.base import SliceEmbedding

            d = torch.load(self._path(key), weights_only=True)
            emb = SliceEmbedding(d["features"], tuple(int(v) for v in d["shape"]), dict(d["extras"]))
            super().put(key, emb)
        return emb

    def put(self, key, emb) -> None:
        super().put(key, emb)
        import torch

        path = self._path(key)
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(
                {
                    "features": emb.features.cpu(),
                    "shape": list(emb.slice_shape),
                    "extras": {k: v for k, v in emb.extras.items() if not callable(v)},
                },
                tmp,
            )
            tmp.replace(path)


def aal_names(path: Path) -> dict[str, int]:
    """``{name: label value}`` from ``aal_dev.txt`` (lines ``value name code``)."""
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            out[parts[1]] = int(parts[0])
    return out


def jittered_box(label2d: np.ndarray, seed: int, jitter: int = JITTER_PX) -> tuple[int, int, int, int]:
    """The label's box with each side moved by a random integer in ``[-jitter, jitter]`` (kept valid)."""
    x0, y0, x1, y1 = box_from_mask(label2d)
    d = np.random.default_rng(seed).integers(-jitter, jitter + 1, size=4)
    h, w = label2d.shape
    bx0, by0 = int(np.clip(x0 + d[0], 0, w - 1)), int(np.clip(y0 + d[1], 0, h - 1))
    bx1, by1 = int(np.clip(x1 + d[2], bx0, w - 1)), int(np.clip(y1 + d[3], by0, h - 1))
    return bx0, by0, bx1, by1


def per_slice_dice(mask: np.ndarray, label: np.ndarray, axis: str, slices) -> dict[int, float]:
    return {int(s): dice(take_slice(mask, axis, s), take_slice(label, axis, s)) for s in slices}


def spearman(x, y) -> float | None:
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return round(float(spearmanr(x, y).statistic), 3)


def review_hits(order: list[int], slice_dice: dict[int, float], bad: float = 0.5) -> dict:
    """How well the review order puts wrong slices (Dice < ``bad``) first: of the first ``n_bad`` slices
    in the order, the fraction that are wrong (1.0 = all wrong slices come first)."""
    wrong = {s for s, d in slice_dice.items() if d < bad}
    if not wrong:
        return {"n_wrong": 0, "wrong_first": None}
    head = order[: len(wrong)]
    return {"n_wrong": len(wrong), "wrong_first": round(len(wrong & set(head)) / len(wrong), 3)}


def run_structure(model, volume, label: np.ndarray, axis: str, ks, cache, seed: int) -> dict:
    """Oracle and k-box propagation of one structure along one axis (jittered label boxes)."""
    state = init_state(model, volume, axis, modality="MR", cache=cache)
    lab_slices = lesion_slices(label, axis)
    out: dict = {"slices": len(lab_slices), "range": [lab_slices[0], lab_slices[-1]]}
    t = time.perf_counter()
    orc = oracle(state, label)
    out["oracle"] = round(dice(orc, label), 4)
    out["oracle_s"] = round(time.perf_counter() - t, 1)
    for k in ks:
        keys = key_slices(label, k, axis)
        st = init_state(model, volume, axis, modality="MR", cache=cache, params=PARAMS)
        for s in keys:
            add_prompt(st, s, box=jittered_box(take_slice(label, axis, s) > 0, seed * 1000 + s))
        t = time.perf_counter()
        res = propagate(st)
        sec = time.perf_counter() - t
        shown = sorted(set(res.slices) | set(lab_slices))
        sd = per_slice_dice(res.mask, label, axis, shown)
        free = [s for s in res.slices if s not in keys]  # confidence is judged on propagated slices only
        conf = [float(res.confidence[s]) for s in free]
        entry = {
            "keys": keys,
            "dice": round(dice(res.mask, label), 4),
            "seconds": round(sec, 1),
            "decoder_calls": st.n_predict,
            "spearman_conf_dice": spearman(conf, [sd[s] for s in free]),
            "review": review_hits([s for s in _review_order(res) if s not in keys], {s: sd[s] for s in free}),
            "_pairs": list(zip(conf, [sd[s] for s in free], strict=True)),
        }
        if hasattr(res, "flagged"):
            entry["flagged"] = [int(s) for s in res.flagged]
        missed = [s for s in lab_slices if not np.isfinite(res.confidence[s])]
        entry["missed_slices"] = len(missed)
        entry["extra_slices"] = len([s for s in res.slices if s not in set(lab_slices)])
        out[f"k{k}"] = entry
    o = out["oracle"]
    out["ratio_to_oracle"] = {f"k{k}": round(out[f"k{k}"]["dice"] / o, 3) if o else None for k in ks}
    return out


def _run_name(axis: str, draw: int) -> str:
    """``"axial"`` for the first jitter draw (the key every earlier run used), ``"axial/draw1"``, ... after."""
    return axis if draw == 0 else f"{axis}/draw{draw}"


def _jitter_seed(name: str, axis: str, draw: int) -> int:
    return zlib.crc32((f"{name}:{axis}" if draw == 0 else f"{name}:{axis}:{draw}").encode())


def _review_order(res) -> list[int]:
    order = getattr(res, "review_order", None)
    if order is not None:
        return [int(s) for s in order]
    return [int(s) for s in sorted(res.slices, key=lambda s: float(res.confidence[s]))]


def run_aal(model, data: Path, structures, axes, ks, cache, draws: int = 1) -> dict:
    image, atlas, names_txt = data / "ch2.nii.gz", data / "aal_dev.nii.gz", data / "aal_dev.txt"
    if not (image.exists() and atlas.exists() and names_txt.exists()):
        return {"skipped": f"{image} / {atlas} / {names_txt} not found"}
    volume = read_volume(image)
    labels = read_volume(atlas).array
    names = aal_names(names_txt)
    out: dict = {}
    for name in structures:
        if name not in names or not (labels == names[name]).any():
            out[name] = {"skipped": "not in the atlas"}
            continue
        label = (labels == names[name]).astype(np.uint8)
        # The jitter depends only on the structure, axis and draw, whatever else this run measures.
        out[name] = {
            _run_name(axis, i): run_structure(
                model, volume, label, axis, ks, cache, seed=_jitter_seed(name, axis, i)
            )
            for axis in axes
            for i in range(draws)
        }
        log.warning(
            "%s: %s",
            name,
            {
                a: {
                    k: v.get("dice") if isinstance(v, dict) else v
                    for k, v in r.items()
                    if k.startswith(("k", "oracle"))
                }
                for a, r in out[name].items()
            },
        )
    return out


def summarise(aal: dict, groups: dict[str, tuple[str, ...]], ks) -> dict:
    """Per group (dev / held-out): median Dice and ratio to the oracle per k, the worst ratio, the largest
    drop when a box is added, and the pooled confidence-vs-Dice Spearman correlation."""
    out = {}
    pairs_all = []
    for gname, names in groups.items():
        runs = [r for n in names if n in aal and "skipped" not in aal[n] for r in aal[n].values()]
        if not runs:
            continue
        g: dict = {
            "runs": len(runs),
            "oracle_median": round(float(np.median([r["oracle"] for r in runs])), 4),
        }
        for k in ks:
            ratios = [r["ratio_to_oracle"][f"k{k}"] for r in runs]
            g[f"k{k}"] = {
                "dice_median": round(float(np.median([r[f"k{k}"]["dice"] for r in runs])), 4),
                "ratio_median": round(float(np.median(ratios)), 3),
                "ratio_min": round(float(np.min(ratios)), 3),
            }
        drops = [
            r[f"k{a}"]["dice"] - r[f"k{b}"]["dice"]
            for r in runs
            for a, b in zip(ks[:-1], ks[1:], strict=True)
        ]
        g["largest_drop_adding_boxes"] = round(float(max(drops, default=0.0)), 4)
        pairs = [p for r in runs for k in ks for p in r[f"k{k}"]["_pairs"]]
        pairs_all += pairs
        g["spearman_conf_dice_pooled"] = spearman([p[0] for p in pairs], [p[1] for p in pairs])
        g["slices_judged"] = len(pairs)
        out[gname] = g
    out["spearman_conf_dice_all"] = spearman([p[0] for p in pairs_all], [p[1] for p in pairs_all])
    return out


def _strip_pairs(aal: dict) -> None:
    for r in aal.values():
        for run in r.values() if isinstance(r, dict) else ():
            if isinstance(run, dict):
                for v in run.values():
                    if isinstance(v, dict):
                        v.pop("_pairs", None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="lung1,brain1,breast1")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timing-case", default="brain1", help="case for the cold 10-slice timing ('' to skip)")
    ap.add_argument("--structures", default=",".join(AAL_DEV + AAL_HELD_OUT), help="AAL names ('' to skip)")
    ap.add_argument("--axes", default=",".join(AAL_AXES))
    ap.add_argument("--ks", default="1,3,5")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder with ch2 / aal_dev")
    ap.add_argument(
        "--embedding-cache",
        default=None,
        help="folder of encoded slices kept between runs (default: in memory only, for this run)",
    )
    ap.add_argument(
        "--draws",
        type=int,
        default=1,
        help="jitter draws of the boxes per structure and axis (each a run of the summary)",
    )
    ap.add_argument(
        "--field-of-view",
        default=PropagationParams().field_of_view,
        choices=FIELDS_OF_VIEW,
        help="what the propagations look at (the oracle always answers on the whole slice)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="iteration subset: development structures, axial, k=1,3, no timing",
    )
    args = ap.parse_args(argv)
    global PARAMS
    PARAMS = PropagationParams(field_of_view=args.field_of_view)
    if args.draws < 1:
        ap.error(f"--draws must be at least 1, got {args.draws}")
    if args.quick:
        args.structures, args.axes, args.ks, args.timing_case = ",".join(AAL_DEV), "axial", "1,3", ""
    logging.basicConfig(level=logging.WARNING)
    t = time.perf_counter()
    model = build_generalist("litemedsam", device="cpu")
    report: dict = {
        "machine": machine_info(),
        "model": "litemedsam",
        "build_s": round(time.perf_counter() - t, 2),
    }
    report["params"] = PARAMS.to_json()
    # One cache for the whole run: every slice is encoded once, whatever the case, structure, axis or k.
    cache = (
        DiskEmbeddingCache(Path(args.embedding_cache))
        if args.embedding_cache
        else EmbeddingCache(max_bytes=4 * 2**30)
    )
    report["cases"] = {
        name: run_case(model, name, args.repeats, cache) for name in args.cases.split(",") if name
    }
    structures = [s for s in args.structures.split(",") if s]
    if structures:
        ks = tuple(int(k) for k in args.ks.split(","))
        aal = run_aal(model, Path(args.data), structures, args.axes.split(","), ks, cache, args.draws)
        groups = {
            "development": tuple(s for s in structures if s in AAL_DEV),
            "held_out": tuple(s for s in structures if s not in AAL_DEV),
        }
        report["aal_summary"] = summarise(aal, groups, ks) if "skipped" not in aal else aal
        _strip_pairs(aal)
        report["aal"] = aal
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
    report["machine"]["load_avg_1min_end"] = load_average()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
