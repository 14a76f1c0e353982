"""How far training alone moves one case's Dice: the spread behind the promotion rule's tolerance.

Reads the outputs of ``learning_curve.py`` runs made on the same split with different training seeds
(``--split-seed S --seed 0``, ``--split-seed S --seed 1``, ...), pairs every two seeds of the same dataset,
recipe and labeled count, and prints one JSON object: per pair the per-case Dice differences, their mean
(a real difference between two trained models) and their standard deviation around that mean (what the
seed does to one case); over all pairs the pooled (root-mean-square) standard deviation, the value of
``semisam.training.promote.CASE_SPREAD``, and the tolerance it gives a weak decision on 1, 2 and 3 cases.

Usage::

    python Testing/benchmarks/learning_curve.py DATASET --counts 4 8 --test 8 --recipes default \\
        --split-seed 0 --seed 0 > s0.json      # and --seed 1 > s1.json
    python Testing/benchmarks/seed_spread.py s0.json s1.json [more runs, of other datasets too]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from pathlib import Path

from semisam.training.promote import Z_ONE_SIDED


def read_runs(path: Path) -> list[dict]:
    """The per-count rows of one finished ``learning_curve.py`` output (its last JSON object, the report),
    each with the run's dataset, split seed and seed; raises ``ValueError`` when the file holds no report."""
    text, decoder, pos, report = path.read_text(encoding="utf-8"), json.JSONDecoder(), 0, None
    while (pos := text.find("{", pos)) >= 0:  # the partial lines, then the indented report
        obj, pos = decoder.raw_decode(text, pos)
        if obj.get("benchmark") == "learning_curve":
            report = obj
    if report is None:
        raise ValueError(f"{path}: not a finished learning_curve.py output")
    return [
        {
            "dataset": Path(report["dataset"]).name,
            "split_seed": report.get("split_seed", report["seed"]),
            "seed": report["seed"],
            "recipe": recipe,
            "labeled": r["labeled"],
            "per_case": r["per_case"],
        }
        for recipe, rows in report["results"].items()
        for r in rows
        if r.get("per_case")
    ]


def pair_stats(a: dict[str, float], b: dict[str, float]) -> dict:
    """Per-case differences ``a - b`` on their common cases: mean, standard deviation around it, extremes."""
    cases = sorted(set(a) & set(b))
    if len(cases) < 2:
        raise ValueError("a pair needs at least two common cases")
    d = [float(a[c]) - float(b[c]) for c in cases]
    return {
        "cases": len(cases),
        "mean": round(statistics.fmean(d), 4),
        "sd": round(statistics.stdev(d), 4),
        "min": round(min(d), 4),
        "max": round(max(d), 4),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="learning_curve.py outputs")
    args = p.parse_args(argv)
    groups: dict[tuple, dict[int, dict]] = {}
    for path in args.runs:
        for r in read_runs(path):
            key = (r["dataset"], r["split_seed"], r["recipe"], r["labeled"])
            groups.setdefault(key, {})[r["seed"]] = r["per_case"]
    pairs = []
    for (dataset, split_seed, recipe, labeled), by_seed in sorted(groups.items()):
        for s, t in itertools.combinations(sorted(by_seed), 2):
            stats = pair_stats(by_seed[s], by_seed[t])
            pairs.append(
                {"dataset": dataset, "split_seed": split_seed, "recipe": recipe, "labeled": labeled}
                | {"seeds": [s, t]}
                | stats
            )
    if not pairs:
        print("no two seeds of the same dataset, split, recipe and count", file=sys.stderr)
        return 1
    pooled = math.sqrt(statistics.fmean(q["sd"] ** 2 for q in pairs))
    report = {
        "benchmark": "seed_spread",
        "pairs": pairs,
        "pooled_sd": round(pooled, 4),
        "rms_pair_mean": round(math.sqrt(statistics.fmean(q["mean"] ** 2 for q in pairs)), 4),
        "weak_tolerance": {str(n): round(Z_ONE_SIDED * pooled / math.sqrt(n), 4) for n in (1, 2, 3)},
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
