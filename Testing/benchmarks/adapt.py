"""Benchmark: does the adapted generalist answer better than the frozen one on cases it never saw?

For a development task (``dev_datasets.py``, e.g. ``thalamus_whole``), for each budget N (labeled
training cases): a fresh store holding the task's first N cases as training cases and the next ``--val``
as validation cases; ``semisam adapt``'s job (:func:`semisam.adapt.job.adapt`) runs on it; then the frozen
generalist and the registered version (promoted or not) answer the ``--test`` cases after those, which
neither training nor validation saw: box-per-slice Dice through the product's field-of-view rule
(user-like jittered boxes, :mod:`semisam.adapt.evaluate`), false-positive pixels on the empty slices next
to the structure, and the rank correlation of the predicted IoU with each answer's Dice; the one-click
Dice (each box answer corrected by the annotator's click); 1- and 3-box propagation Dice (the product's
engine from user-like boxes on 1 or 3 key slices, :func:`semisam.adapt.evaluate.propagation_dice`).

All stores share one embedding folder (``--cache``), so each slice (and view) is encoded once over the
budgets and across runs. Seconds: the embeddings step (encoding, or reading the cache) and the
fine-tuning step, one thread. Prints one JSON object (machine info, per budget the adapt run's ``done``
event and the test scores).

Usage: ``OMP_NUM_THREADS=1 python Testing/benchmarks/adapt.py TASK_DIR [--budgets 1,2,4] [--val 2]
[--test 2] [--max-minutes 5] [--click-share F] [--no-lookalikes] [--no-tracks] [--cache DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task_dir", type=Path, help="a built development task (dataset.json, imagesTr, labelsTr)")
    p.add_argument("--budgets", default="1,2,4")
    p.add_argument("--val", type=int, default=2)
    p.add_argument("--test", type=int, default=2)
    p.add_argument("--max-minutes", type=float, default=5.0)
    p.add_argument("--steps-per-case", type=int, default=None)
    p.add_argument(
        "--click-share", type=float, default=None, help="AdaptConfig.click_share (default: its own)"
    )
    p.add_argument("--no-lookalikes", action="store_true", help="AdaptConfig.lookalikes off")
    p.add_argument("--no-tracks", action="store_true", help="AdaptConfig.tracks off")
    p.add_argument("--cache", type=Path, default=None, help="shared embedding folder (default: temporary)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    a = p.parse_args(argv)
    a.budgets = [int(b) for b in a.budgets.split(",") if b]
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from bench_common import machine_info

    from semisam.adapt.evaluate import evaluate, propagation_dice
    from semisam.adapt.job import AdaptConfig, Case, Embeddings, adapt, make_samples
    from semisam.adapt.versions import GeneralistRegistry, apply_version
    from semisam.generalists import build_generalist
    from semisam.generalists.cache import EmbeddingCache
    from semisam.propagation.state import resolve_window
    from semisam.scan.volume import read_mask, read_volume
    from semisam.store import LabeledStore
    from semisam.training.methods.semi.embedding_store import EmbeddingStore

    torch.set_num_threads(args.threads)
    meta = json.loads((args.task_dir / "dataset.json").read_text())
    entries = meta["training"]
    need = max(args.budgets) + args.val + args.test
    if len(entries) < need:
        raise SystemExit(f"{args.task_dir} has {len(entries)} cases; these budgets need {need}")
    cache = args.cache or Path(tempfile.mkdtemp(prefix="semisam-adapt-cache-"))
    model = build_generalist("litemedsam", device="cpu")
    frozen = {k: v.clone() for k, v in model.mask_decoder.state_dict().items()}

    def load(e):
        vol = read_volume(args.task_dir / e["image"])
        lab = read_mask(args.task_dir / e["label"], reference=vol).array
        return vol, lab

    test_entries = entries[max(args.budgets) + args.val : need]
    test_cases = []
    for e in test_entries:
        vol, lab = load(e)
        test_cases.append(
            Case(Path(e["image"]).name.split(".")[0], vol, resolve_window(vol, None, "MR"), lab > 0)
        )
    test_samples = make_samples(test_cases, seed=1234)
    test_emb = Embeddings(model, test_cases, EmbeddingStore(cache))
    test_set = {c.case_id: (c.label, test_samples[c.case_id]) for c in test_cases}
    by_id = {c.case_id: c for c in test_cases}
    caches = {c.case_id: EmbeddingCache() for c in test_cases}  # slices shared by every decoder

    def score_test() -> dict:
        """Box per slice (and its companions) plus 1- and 3-box propagation through the product's engine."""
        out = evaluate(model, test_set, test_emb)
        for k in (1, 3):
            prop = propagation_dice(model, by_id, 0, caches, k=k)
            out[f"propagation_{k}box"], out[f"propagation_{k}box_per_case"] = prop["dice"], prop["per_case"]
        return out

    t = time.perf_counter()
    frozen_test = score_test()
    report = {
        "benchmark": "adapt",
        "machine": machine_info(generalist="litemedsam"),
        "task": str(args.task_dir.name),
        "test_cases": list(test_set),
        "frozen_test": frozen_test,
        "frozen_test_s": round(time.perf_counter() - t, 1),
        "budgets": {},
    }
    print(f"frozen test: {frozen_test['dice']}", file=sys.stderr, flush=True)
    for n in args.budgets:
        with tempfile.TemporaryDirectory(prefix="semisam-adapt-store-") as tmp:
            store = LabeledStore.create(Path(tmp) / "store", {1: "structure"}, modality="MR")
            for i, e in enumerate(entries[:n] + entries[max(args.budgets) : max(args.budgets) + args.val]):
                vol, lab = load(e)
                store.add_case(vol, lab, split="train" if i < n else "validation")
            (store.root / "cache").mkdir(exist_ok=True)
            os.symlink(cache, store.root / "cache" / "embeddings")
            events = []
            kwargs = {} if args.steps_per_case is None else {"steps_per_case": args.steps_per_case}
            if args.click_share is not None:
                kwargs["click_share"] = args.click_share
            if args.no_lookalikes:
                kwargs["lookalikes"] = False
            if args.no_tracks:
                kwargs["tracks"] = False
            cfg = AdaptConfig(max_minutes=args.max_minutes, device="cpu", **kwargs)
            done = adapt(store.root, cfg, emit=events.append, model=model)
            apply_version(model, GeneralistRegistry(store).get(done["version"]).path)
            adapted_test = score_test()
            model.mask_decoder.load_state_dict(frozen)
            model.set_fast_decoder(None)
        emb = next((e for e in events if e["event"] == "embeddings"), {})
        report["budgets"][str(n)] = {
            "adapted_test": adapted_test,
            "gain_dice": round(adapted_test["dice"] - frozen_test["dice"], 4),
            "done": done,
            "embeddings_s": emb.get("seconds"),
            "encoded": emb.get("encoded"),
            "fine_tune_s": done["training"]["seconds"],
            "steps": done["training"]["steps"],
        }
        print(
            f"N={n}: adapted test {adapted_test['dice']} (frozen {frozen_test['dice']})",
            file=sys.stderr,
            flush=True,
        )
    report["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
