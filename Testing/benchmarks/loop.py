"""The loop, measured: ``semisam simulate`` on a development dataset and on the sample cases; JSON out.

* **dev**: a multi-subject development task from ``dev_datasets.py`` (default: thalamus, 16 cases, seed
  0) replayed with retraining every 4 accepted cases and the prompts-only baseline beside it; the
  summary says whether the last cases cost <= 0.5 x the first ones and <= 0.6 x the baseline.
* **samples**: each real sample lesion (lung1 CT, brain1 and breast1 MRI), cropped around its lesion,
  as a one-case dataset: what prompts alone cost there (no retraining on a single case).

The work folders are kept (``--work``, default ``out/loop`` under the repository): running again with
the same options resumes, and a finished run only prints its summary again.

Usage::

    python Testing/benchmarks/loop.py [--task thalamus] [--cases 16] [--retrain-every 4] [--iterations N]
        [--whole] [--held-out 4] [--adapt] [--small-retrain] [--train-config FILE.json] [--work DIR]
        [--target-dice 0.85] [--no-dev] [--no-samples]

The dev dataset holds ``--cases`` + ``--held-out`` subjects; the last ``--held-out`` of the seeded order
are never replayed and score every retrained version (``semisam simulate --held-out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "scripted_modules"))

from bench_common import machine_info  # noqa: E402

from semisam.cli.simulate import DEFAULT_TARGET_DICE  # noqa: E402

SAMPLES = ("lung1", "brain1", "breast1")
#: Training settings of the dev run: batch 4 of 96 x 96 crops keeps a retrain to minutes on 2 cores.
DEV_TRAIN = {"batch_size": 4, "crop_size": [96, 96]}  # with --small-retrain (the table's older runs)


def dev_run(args) -> dict:
    import dev_datasets

    from semisam.loop import Simulation, SimulationConfig

    name = f"{args.task}_whole" if args.whole else args.task
    data = args.work / "data" / name
    if not (data / "dataset.json").is_file():
        dev_datasets.build(
            args.task,
            args.work / "data",
            n_cases=args.cases + args.held_out,
            seed=args.data_seed,
            whole=args.whole,
        )
    train = dict(DEV_TRAIN) if args.small_retrain else {}
    if args.train_config:
        train.update(json.loads(Path(args.train_config).read_text(encoding="utf-8")))
    cfg = SimulationConfig(
        dataset=data,
        work=args.work / f"sim_{name}",
        retrain_every=args.retrain_every,
        method=args.method,
        iterations=args.iterations,
        seed=args.seed,
        baseline=True,
        train_options=train,
        held_out=args.held_out,
        adapt=args.adapt,
        # the product's absolute target (``semisam simulate``'s default); 0: the older runs' fraction of
        # the generalist's own oracle
        target_dice=args.target_dice or None,
    )
    t0 = time.perf_counter()
    summary = Simulation(cfg).run()
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    return summary


def sample_dataset(name: str, dest: Path) -> Path | None:
    """A one-case MSD-layout dataset of sample ``name`` cropped around its lesion (``None``: not found)."""
    from semisam import samples
    from semisam.propagation.simulate import crop_around
    from semisam.scan.volume import read_mask, read_volume, write_mask, write_volume

    if (dest / "dataset.json").is_file():
        return dest
    case = samples.find_case(name, extra=[REPO.parent / "shared" / "data"])
    if case is None:
        return None
    vol = read_volume(case.image)
    label = (read_mask(case.label, reference=vol).array > 0).astype("uint8")
    vol, label = crop_around(vol, label)
    (dest / "imagesTr").mkdir(parents=True, exist_ok=True)
    (dest / "labelsTr").mkdir(parents=True, exist_ok=True)
    write_volume(vol, dest / "imagesTr" / f"{name}.nii.gz")
    write_mask(label, vol, dest / "labelsTr" / f"{name}.nii.gz")
    meta = {
        "name": f"sample_{name}",
        "modality": {"0": case.modality},
        "labels": {"0": "background", "1": "lesion"},
        "training": [{"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}],
    }
    (dest / "dataset.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return dest


def sample_runs(args) -> dict:
    from semisam.loop import Simulation, SimulationConfig
    from semisam.loop.replay import CASES_FILE, read_jsonl

    out = {}
    for name in SAMPLES:
        data = sample_dataset(name, args.work / "samples" / name)
        if data is None:
            out[name] = {"skipped": "sample case not found locally"}
            continue
        work = args.work / "samples" / f"sim_{name}"
        Simulation(SimulationConfig(dataset=data, work=work, retrain_every=0, seed=args.seed)).run()
        (case,) = [r for r in read_jsonl(work / CASES_FILE) if r.get("event") == "case"]
        out[name] = {k: v for k, v in case.items() if k != "actions"}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="thalamus", help="dev_datasets task (%(default)s)")
    p.add_argument("--cases", type=int, default=16)
    p.add_argument("--data-seed", type=int, default=0, help="seed of the development dataset")
    p.add_argument("--seed", type=int, default=0, help="simulation seed (order, jitter, training)")
    p.add_argument("--retrain-every", type=int, default=4)
    p.add_argument("--iterations", type=int, default=None, help="per retrain (default: the product's budget)")
    p.add_argument("--small-retrain", action="store_true", help="batch 4 of 96x96 crops (older runs)")
    p.add_argument("--whole", action="store_true", help="the task's whole-scan variant (as users load scans)")
    p.add_argument("--held-out", type=int, default=4, help="cases kept aside to score every retrain")
    p.add_argument("--adapt", action="store_true", help="every retrain also adapts the generalist")
    p.add_argument("--method", default="supervised")
    p.add_argument(
        "--target-dice",
        type=float,
        default=DEFAULT_TARGET_DICE,
        help="dev run: done at this Dice against the truth (%(default)s, as semisam simulate; 0: 0.9 x the oracle)",
    )
    p.add_argument("--train-config", default=None, help="JSON file of further TrainConfig fields")
    p.add_argument("--work", type=Path, default=REPO / "out" / "loop")
    p.add_argument("--no-dev", action="store_true")
    p.add_argument("--no-samples", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result: dict = {"benchmark": "loop"}
    if not args.no_dev:
        result["dev"] = {args.task: dev_run(args)}
    if not args.no_samples:
        result["samples"] = sample_runs(args)
    result["machine"] = machine_info()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
