"""Benchmark: propagation on whole scans of a multi-subject development task, against the whole-slice oracle.

For each subject of a task built by ``dev_datasets.py TASK OUT --whole`` (axial slices, the whole head as
a user loads it), the product's engine answers jittered boxes around each part of the structure on the
key slices (:func:`semisam.propagation.simulate.structure_boxes`, as a radiologist boxes the left and the
right thalamus apart; each side moved by up to 10 % of its length: the boxes of
:func:`semisam.adapt.evaluate.propagate_from_part_boxes`, the adaptation's own propagation check, the same
draw for every variant):

* ``oracle``: the tight box of each part on EVERY slice of the structure, answered on the whole slice
  (the ceiling the ratios below are taken against);
* ``k1``: one set of boxes on the slice where the structure is largest (the product's rule);
* ``k1_middle``: one set on the middle slice of the structure;
* ``k3``: boxes on 3 key slices (the product's rule, :func:`semisam.propagation.simulate.key_slices`).

Per variant the Dice, the ratio of mean Dice to the mean oracle, and where each end of the result lies
against the structure's (``ends``: slices short (-) or past (+) its first and last slice, with the
engine's reason for each track's stop), so that a stop rule can be judged by what it costs on both sides.
Prints one JSON object; ``--embedding-cache DIR`` keeps encoded slices between runs (the encoder is the
same for an adapted version, so one folder serves both); ``--generalist-version DIR`` answers with a
version made by ``semisam adapt``.

Usage::

    OMP_NUM_THREADS=1 python Testing/benchmarks/propagation_whole.py OUT/thalamus_whole --subjects 8-15
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import load_average, machine_info
from propagation import DiskEmbeddingCache

from semisam.adapt.evaluate import part_box_rng, propagate_from_part_boxes
from semisam.generalists import SlicePrompt, build_generalist
from semisam.generalists.cache import EmbeddingCache
from semisam.metrics import dice
from semisam.propagation import PropagationParams, init_state
from semisam.propagation.simulate import key_slices, lesion_slices, middle_slice, structure_boxes
from semisam.scan.volume import read_mask, read_volume

log = logging.getLogger("propagation-whole-benchmark")

VARIANTS = ("k1", "k1_middle", "k3")


def subject_range(text: str) -> list[int]:
    """``"8-15"`` or ``"8,9,12"`` -> subject indices."""
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def oracle(state, truth: np.ndarray) -> np.ndarray:
    """The tight box of each part on every slice of ``truth`` ``(Z, Y, X)``, answered on the whole slice."""
    out = np.zeros(truth.shape, bool)
    for s in lesion_slices(truth):
        for box in structure_boxes(truth[s]):
            out[s] |= state.predict(state.embedding(s), SlicePrompt(box=box)).mask
    return out


def ends(mask: np.ndarray, truth: np.ndarray) -> dict:
    """Where the result's first / last slice lies against the truth's: negative = short, positive = past."""
    got, want = lesion_slices(mask), lesion_slices(truth)
    if not got:
        return {"low": None, "high": None}
    return {"low": want[0] - got[0], "high": got[-1] - want[-1]}


def run_subject(model, volume, truth: np.ndarray, case_id: str, cache, params, seed: int) -> dict:
    state = init_state(model, volume, "axial", modality="MR", cache=cache, params=params)
    out: dict = {"slices": len(lesion_slices(truth))}
    out["oracle"] = round(dice(oracle(state, truth), truth), 4)
    for variant in VARIANTS:
        keys = [middle_slice(truth)] if variant == "k1_middle" else key_slices(truth, int(variant[1]))
        t = time.perf_counter()
        res = propagate_from_part_boxes(
            model,
            volume,
            truth,
            keys,
            part_box_rng(case_id, seed),  # the same draw for every variant
            modality="MR",
            cache=cache,
            params=params,
        )
        mask = np.asarray(res.mask) > 0
        out[variant] = {
            "keys": keys,
            "dice": round(dice(mask, truth), 4),
            "seconds": round(time.perf_counter() - t, 1),
            "ends": ends(mask, truth),
            "stops": res.stops,
        }
    return out


def summarise(subjects: dict) -> dict:
    """Mean Dice per variant, its ratio to the mean oracle, and how many result ends fell more than 2
    slices short of / past the structure's."""
    runs = list(subjects.values())
    orc = float(np.mean([r["oracle"] for r in runs]))
    out: dict = {"subjects": len(runs), "oracle_mean": round(orc, 4)}
    for v in VARIANTS:
        d = float(np.mean([r[v]["dice"] for r in runs]))
        offs = [
            r[v]["ends"][side] for r in runs for side in ("low", "high") if r[v]["ends"][side] is not None
        ]
        out[v] = {
            "dice_mean": round(d, 4),
            "ratio_to_oracle": round(d / orc, 3) if orc else None,
            "ends_short": sum(o < -2 for o in offs),
            "ends_past": sum(o > 2 for o in offs),
            "ends_within_2": sum(abs(o) <= 2 for o in offs),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("task_dir", type=Path, help="a task built with dev_datasets.py --whole")
    ap.add_argument("--subjects", default="8-15", help="subject indices, e.g. 8-15 or 8,9,12")
    ap.add_argument("--seed", type=int, default=0, help="jitter draw of the boxes")
    ap.add_argument("--embedding-cache", default=None, help="folder of encoded slices kept between runs")
    ap.add_argument(
        "--generalist-version",
        type=Path,
        default=None,
        help="an adapted generalist version folder (semisam adapt) to answer with, oracle included",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    entries = json.loads((args.task_dir / "dataset.json").read_text())["training"]
    model = build_generalist("litemedsam", device="cpu")
    if args.generalist_version is not None:
        from semisam.adapt.versions import apply_version

        apply_version(model, args.generalist_version)
    cache = (
        DiskEmbeddingCache(Path(args.embedding_cache))
        if args.embedding_cache
        else EmbeddingCache(max_bytes=2 * 2**30)
    )
    params = PropagationParams()
    report: dict = {
        "machine": machine_info(),
        "task": str(args.task_dir),
        "generalist_version": None if args.generalist_version is None else str(args.generalist_version),
        "params": params.to_json(),
    }
    subjects: dict = {}
    t = time.perf_counter()
    for i in subject_range(args.subjects):
        e = entries[i]
        volume = read_volume(args.task_dir / e["image"])
        truth = read_mask(args.task_dir / e["label"], reference=volume).array > 0
        case_id = Path(e["image"]).name.split(".")[0]
        subjects[case_id] = run_subject(model, volume, truth, case_id, cache, params, args.seed)
        log.warning(
            "%s: %s",
            case_id,
            {k: v["dice"] if isinstance(v, dict) else v for k, v in subjects[case_id].items()},
        )
    report["seconds"] = round(time.perf_counter() - t, 1)
    report["summary"] = summarise(subjects)
    report["median_variant_seconds"] = statistics.median(
        r[v]["seconds"] for r in subjects.values() for v in VARIANTS
    )
    report["subjects"] = subjects
    report["machine"]["load_avg_1min_end"] = load_average()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
