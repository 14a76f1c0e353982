"""What a growing labeled set buys the specialist: test Dice against the number of labeled cases, per
training recipe, on an MSD / nnU-Net dataset (whole scans or crops).

For each labeled count ``N`` a store holds ``N`` ground-truth training cases and the fixed held-out
**test** cases as its validation split (only evaluated: nothing trains on them, nothing is promoted);
every recipe trains a new model from the same seed in its own child process
(``semi_supervised.py --child``: the public ``semisam.training.train``, a per-run peak RSS), and the
product's ``segment`` scores it on the test scans' own grid.

Recipes (``--recipes``):
    ``default``    the product's defaults: iterations follow the labeled set (500 per case, 1,000 to
                   20,000) inside the 10-minute time budget;
    ``fixed200``   200 iterations (what Retrain ran before the data-following budget);
    ``fixed1500``  1,500 iterations (the loop's retrain before it);
    ``long``       ``--long-iterations`` (default 8,000) with no time budget: the reference of what the
                   labels allow on this machine.

Printed JSON: machine info, the split, and per recipe and N: test Dice (mean, per case), iterations
trained, seconds, iterations/s, peak RSS; with ``--plot FILE`` a PNG of the curves.

Usage::

    python Testing/benchmarks/learning_curve.py DATASET_DIR [--counts 1 2 4 8 12] [--test 4]
        [--recipes default fixed200 long] [--seed 0] [--split-seed S] [--work DIR] [--plot curve.png]
        [--arch mamba_unet|unet2d|unet3d] [--batch 8] [--crop 128 128] [--patch 32 96 96]

Architectures compare at equal CPU time with the ``default`` recipe: each trains inside the same 10-minute
budget, at its own speed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_common import machine_info  # noqa: E402
from semi_supervised import REPO, dataset_cases, make_store, run_child, split_cases  # noqa: E402, F401

log = logging.getLogger("learning_curve")

RECIPES: dict[str, dict] = {
    "default": {},
    "fixed200": {"iterations": 200, "max_minutes": None},
    "fixed1500": {"iterations": 1500, "max_minutes": None},
    "long": {"max_minutes": None},  # iterations from --long-iterations
}


def recipe_config(name: str, seed: int, long_iterations: int, base: dict) -> dict:
    """The TrainConfig fields of recipe ``name``."""
    cfg = {**base, "seed": seed, "device": "cpu", **RECIPES[name]}
    if name == "long":
        cfg["iterations"] = long_iterations
    cfg.setdefault("checkpoint_every", 10_000_000)  # a benchmark run needs no resume points
    return cfg


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in report["results"].items():
        xs = [r["labeled"] for r in rows if r.get("dice") is not None]
        ys = [r["dice"] for r in rows if r.get("dice") is not None]
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel("labeled training cases")
    ax.set_ylabel(f"test Dice ({len(report['test_cases'])} held-out cases)")
    ax.set_title(Path(report["dataset"]).name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", type=Path)
    p.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8, 12])
    p.add_argument("--recipes", nargs="+", default=["default", "fixed200", "long"], choices=sorted(RECIPES))
    p.add_argument("--test", type=int, default=4, help="held-out test cases")
    p.add_argument("--seed", type=int, default=0, help="training seed (and the split's, unless --split-seed)")
    p.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="seed of the test / labeled split (default --seed): the same split with several --seed values "
        "measures how much training alone moves each case's Dice",
    )
    p.add_argument("--long-iterations", type=int, default=8000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, nargs=2, default=[128, 128])
    p.add_argument(
        "--arch",
        default="mamba_unet",
        help="specialist architecture (mamba_unet, unet2d: 2.5D crops of --crop; unet3d: patches of --patch)",
    )
    p.add_argument("--patch", type=int, nargs=3, default=[32, 96, 96], help="unet3d's training patch (D H W)")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--nice", type=int, default=10)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    labels, modality, pairs = dataset_cases(args.dataset)
    split_seed = args.seed if args.split_seed is None else args.split_seed
    test, pool = split_cases(pairs, args.test, max(args.counts), split_seed, None)
    work = args.work or Path(tempfile.mkdtemp(prefix="learning_curve_"))
    base = {"batch_size": args.batch, "crop_size": list(args.crop), "log_every": 1, "arch": args.arch}
    if args.arch == "unet3d":
        base["patch_size"] = list(args.patch)
    report: dict = {
        "benchmark": "learning_curve",
        "dataset": str(args.dataset),
        "machine": machine_info(),
        "seed": args.seed,
        "split_seed": split_seed,
        "test_cases": [c for c, _, _ in test],
        "counts": args.counts,
        "base_config": base,
        "results": {name: [] for name in args.recipes},
    }
    t_all = time.perf_counter()
    for n in args.counts:
        labeled = pool[:n]
        for name in args.recipes:
            store = work / f"n{n}-{name}"
            if not (store / "semisam_store.json").is_file():
                make_store(store, labels, modality, labeled, [], test, work / "embeddings")
            cfg = recipe_config(name, args.seed, args.long_iterations, base)
            log.info("N=%d %s: %s", n, name, json.dumps(cfg))
            out = run_child(store, cfg, None, args.nice)
            row = {
                "labeled": n,
                "labeled_cases": [c for c, _, _ in labeled],
                "status": out.get("status"),
                "dice": out.get("dice"),
                "per_case": out.get("per_case"),
                "iterations": out.get("iterations"),
                "seconds": out.get("seconds"),
                "iterations_per_s": out.get("iterations_per_s"),
                "peak_rss_mib": out.get("peak_rss_mib"),
            }
            if out.get("status") != "done":
                row["error"] = out.get("message") or out.get("stderr_tail")
            report["results"][name].append(row)
            log.info(
                "N=%d %s: Dice %s in %s s (%s iterations)",
                n,
                name,
                row["dice"],
                row["seconds"],
                row["iterations"],
            )
            print(json.dumps({"partial": True, "recipe": name, **row}), flush=True)
    report["seconds"] = round(time.perf_counter() - t_all, 1)
    if args.plot:
        plot(report, args.plot)
        report["plot"] = str(args.plot)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
