"""Semi-supervised retraining on an MSD / nnU-Net dataset: test Dice per method and labeled budget.

For each labeled budget ``k`` (default 1, 2, 4) a store is made holding ``k`` labeled training cases,
the held-out **test** cases as the store's validation split (only evaluated: ``semisam train`` never
trains on validation cases; every run starts from a new model and nothing is promoted, so the test set
selects nothing) and the other cases as **unlabeled scans** (images only: their labels are not in the
store, so no method can read them). Each method then trains through the public API
``semisam.training.train`` with the same iterations, seed and batch settings, in its own child process
(for a per-run peak RSS). The generalist embeddings folder is shared by all stores (the same scans give
the same model-grid slices), so slices are encoded once per benchmark.

Printed JSON: per budget and method, the test Dice (mean and per case, the product's ``segment`` on the
scans' own grid), seconds, steady iterations/s (median of per-iteration times: pseudo-label refreshes
excluded), peak RSS; for ``semisam_plus`` the generalist's own test Dice when prompted by the trained
specialist (the pseudo-labeller run on the test scans, model grid) beside the specialist's; and
iterations/s of ``mamba_unet`` vs ``unet3d`` (``supervised``, same batch size) in the same run.

Usage::

    python Testing/benchmarks/semi_supervised.py DATASET_DIR [--budgets 1 2] [--iterations 300] [--test 8]
        [--methods supervised mean_teacher semisam_plus semisam_plus+distill] [--seed 0] [--work DIR]
        [--adapt]

``--adapt``: before the methods of a budget run, the generalist is adapted on that budget's labeled cases
(``semisam adapt``'s job) and its version made active whatever it scores, so the methods that ask the
generalist ask the adapted one and the test cases select nothing; the adaptation's own scores on the test
cases (box-per-slice Dice, frozen vs adapted) are reported under ``adapt``.

``DATASET_DIR`` is any MSD-layout folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``), e.g.
Task04_Hippocampus or one built by ``Testing/benchmarks/dev_datasets.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = Path(HERE).parents[1]
sys.path.insert(0, str(REPO / "scripted_modules"))
from bench_common import machine_info  # noqa: E402

log = logging.getLogger("ssl_bench")
METHODS = ("supervised", "mean_teacher", "semisam_plus", "semisam_plus+distill")


# ------------------------------------------------------------------------------------------ dataset
def dataset_cases(src: Path) -> tuple[dict[int, str], str | None, list[tuple[str, Path, Path]]]:
    """(labels, modality, [(case id, image, label)]) of an MSD / nnU-Net raw folder."""
    from semisam.store.decathlon import read_dataset

    raw = read_dataset(src)
    labels, modality, pairs = raw.labels, raw.channel, sorted(raw.pairs)
    labels = {k: v for k, v in labels.items() if k != 0}
    mod = (modality or "MR").upper()
    mod = "CT" if mod == "CT" else "MR"
    return labels, mod, pairs


def split_cases(pairs, n_test: int, max_budget: int, seed: int, n_unlabeled: int | None):
    """Shuffle once (seed): test set, then a pool whose first ``k`` are the labeled cases of budget ``k``."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    shuffled = [pairs[i] for i in order]
    if len(shuffled) < n_test + max_budget + 1:
        raise SystemExit(f"{len(pairs)} cases: need at least {n_test + max_budget + 1} for this split")
    test, pool = shuffled[:n_test], shuffled[n_test:]
    return test, pool


def make_store(root: Path, labels, modality, labeled, unlabeled, test, shared_embeddings: Path) -> None:
    from semisam.store import LabeledStore
    from semisam.store.records import Provenance

    store = LabeledStore.create(root, labels, modality=modality, name=root.name)
    prov = Provenance(tool="benchmark:ssl")
    for cid, image, label in labeled:
        store.add_case(image, label, prov, case_id=cid, split="train")
    for cid, image, label in test:
        store.add_case(image, label, prov, case_id=cid, split="validation")
    for cid, image, _label in unlabeled:  # images only: the label file never enters the store
        store.add_unlabeled(image, scan_id=cid)
    cache = root / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    shared_embeddings.mkdir(parents=True, exist_ok=True)
    link = cache / "embeddings"
    if not link.exists():
        link.symlink_to(shared_embeddings, target_is_directory=True)


# ------------------------------------------------------------------------------------------ one run
def child(args: argparse.Namespace) -> int:
    """Run one training in this process; print one JSON line with the outcome."""
    import torch

    torch.set_num_threads(
        int(os.environ.get("SSL_THREADS", "1"))
    )  # 2 threads on a busy 2-core machine spin-wait
    from semisam.training import TrainConfig, train

    cfg = TrainConfig.from_dict(json.loads(args.config))
    times: list[float] = []
    last = [None]
    phases: dict[str, float] = {}

    def on_event(ev: dict) -> None:
        if ev["event"] == "iteration":
            t = float(ev["elapsed_s"])
            if last[0] is not None:
                times.append(t - last[0])
            last[0] = t
        elif ev["event"] == "phase":
            phases.setdefault(ev["phase"], float(ev["elapsed_s"]))

    t0 = time.perf_counter()
    res = train(
        args.store, cfg, events=on_event, promote=False, work_dir=Path(args.store) / "training" / "run"
    )
    out = {
        "status": res.status,
        "message": res.message,
        "version": res.version,
        "model_dir": res.model_dir,
        "dice": res.validation.get("dice"),
        "per_case": res.validation.get("per_case"),
        "seconds": round(time.perf_counter() - t0, 1),
        "iterations": res.iterations,
        "iterations_per_s": round(1.0 / float(np.median(times)), 3) if times else None,
        "final_losses": res.losses[-1] if res.losses else None,
    }
    import resource

    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB
    if args.generalist_dice and res.model_dir:
        out.update(generalist_dice(Path(args.store), Path(res.model_dir), cfg, args.generalist_test))
    print("RESULT " + json.dumps(out))
    return 0


def generalist_dice(store_root: Path, model_dir: Path, cfg, n_cases: int | None) -> dict:
    """The trained specialist's and the specialist-prompted generalist's Dice on the first ``n_cases``
    of the store's validation (= test) cases, on the model grid (pseudo-labeller settings as in
    training)."""
    import torch

    from semisam import model_folder
    from semisam.generalists.base import SlicePrompt
    from semisam.store import LabeledStore
    from semisam.training.data import load_labeled
    from semisam.training.methods.semi.embedding_store import EmbeddingStore
    from semisam.training.methods.semi.prompting import PromptConfig, components
    from semisam.training.methods.semi.pseudo_labels import (
        ConfidenceConfig,
        PseudoLabeler,
        predict_volume,
        weights_sha,
    )

    opts = cfg.parts.get("semisam_plus", {})
    # The training part's own prompt and confidence settings (its defaults where not given).
    from semisam.training.methods.semisam_plus import SemiSAMPlus

    part = SemiSAMPlus(opts)
    model, manifest = model_folder.load_model(model_dir)
    store = LabeledStore(store_root)
    cases = load_labeled(store, store.validation_ids()[:n_cases], manifest)
    g = _active_generalist(store_root)  # the adapted version when the store has one (--adapt)
    labeler = PseudoLabeler(
        [g],
        EmbeddingStore(store_root / "cache" / "embeddings"),
        None,
        part.prompt,
        ConfidenceConfig(**part.confidence.to_json()),
    )
    sha = weights_sha(model)
    gen, spec, oracle, gated, coh = {}, {}, {}, {}, {}

    def dice(pred: np.ndarray, truth: np.ndarray) -> float:
        s = int(pred.sum()) + int(truth.sum())
        return round(1.0 if s == 0 else 2.0 * float((pred & truth).sum()) / s, 4)

    for c in cases:
        image = c.image.numpy()
        prob = predict_volume(model, c.image, torch.device("cpu"))
        pl = labeler.label_case(c.case_id, c.sha256, image, prob, sha)
        truth = c.mask.numpy() > 0
        gen[c.case_id] = dice(pl.label > 0, truth)
        spec[c.case_id] = dice(prob.argmax(0) > 0, truth)
        gated[c.case_id] = bool(pl.stats.get("gated")) or not bool((pl.weight > 0).any())
        coh[c.case_id] = pl.stats.get("coherence")
        # The ceiling of pseudo-labels: the same generalist prompted with the TRUE box of every
        # component on every slice (a box alone, as round 0 of training prompts).
        box_pred = np.zeros_like(truth)
        for z in np.nonzero(truth.reshape(len(truth), -1).any(1))[0]:
            emb = labeler.embeddings.get_or_encode(g, image[z])
            for comp in components(truth[z].astype(np.float32), PromptConfig(min_area=1)):
                ys, xs = np.nonzero(comp)
                box = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
                box_pred[z] |= np.asarray(g.predict(emb, SlicePrompt(box=box)).logits) > 0
        oracle[c.case_id] = dice(box_pred, truth)
    return {
        "generalist_prompted_dice": round(float(np.mean(list(gen.values()))), 4),
        "specialist_model_grid_dice": round(float(np.mean(list(spec.values()))), 4),
        "generalist_true_box_dice": round(float(np.mean(list(oracle.values()))), 4),
        "generalist_per_case": gen,
        "true_box_per_case": oracle,
        "gated_test_cases": sum(gated.values()),
        "coherence_per_case": coh,
    }


def pseudo_label_dice(store_root: Path, model_dir: str | None, unlabeled) -> dict:
    """How good the last pseudo-labels of a run were: Dice of each unlabeled scan's most recent cached
    pseudo-label against its true label (read here, after training, from the dataset; the store never
    held it), on the model grid; and the share of teaching slices (weight > 0) without any structure
    (a box-prompted generalist always answers, so a prompt on a wrong slice teaches a wrong mask)."""
    import torch

    from semisam import model_folder
    from semisam.inference.preprocess import to_model_grid
    from semisam.scan.volume import read_volume
    from semisam.training.data import label_lut, mask_to_model_grid

    files = sorted((store_root / "cache" / "pseudo_labels").glob("*/*.npz"), key=lambda f: f.stat().st_mtime)
    if not files or not model_dir:
        return {}
    _, manifest = model_folder.load_model(Path(model_dir))
    lut = label_lut(manifest.class_values())
    latest = {}
    for f in files:  # the last refresh's file per scan
        latest[f.name.split("-")[0]] = f
    dice, teach, empty = {}, 0, 0
    for cid, image_path, label_path in unlabeled:
        if cid not in latest:
            continue
        _, grid = to_model_grid(read_volume(image_path), manifest.preprocessing, torch.device("cpu"))
        truth = mask_to_model_grid(read_volume(label_path).array, grid, lut).numpy() > 0
        with np.load(latest[cid], allow_pickle=False) as z:
            lab, w = z["label"] > 0, z["weight"].astype(np.float32)
        if lab.shape != truth.shape:
            continue
        s = int(lab.sum()) + int(truth.sum())
        dice[cid] = round(1.0 if s == 0 else 2.0 * float((lab & truth).sum()) / s, 4)
        teaching = w.reshape(len(w), -1).max(1) > 0
        teach += int(teaching.sum())
        empty += int((teaching & ~truth.reshape(len(truth), -1).any(1)).sum())
    return {
        "pseudo_label_dice": round(float(np.mean(list(dice.values()))), 4) if dice else None,
        "pseudo_label_dice_per_case": dice,
        "teaching_slices": teach,
        "teaching_slices_without_structure": empty,
    }


def _active_generalist(store_root: Path):
    """LiteMedSAM answering with the store's active adapted version, if any (as the training parts do)."""
    from semisam.generalists import build_generalist
    from semisam.store import LabeledStore
    from semisam.training.methods.base import _with_active_version

    return _with_active_version(build_generalist("litemedsam", device="cpu"), LabeledStore(store_root))


def adapt_store(root: Path, seed: int) -> dict:
    """Adapt the generalist on the store's labeled cases and make the version active (no selection on
    the test cases, which are the store's validation split); returns the adaptation's ``done`` event."""
    from semisam.adapt.job import AdaptConfig, adapt
    from semisam.adapt.versions import GeneralistRegistry
    from semisam.store import LabeledStore

    t0 = time.perf_counter()
    done = adapt(root, AdaptConfig(seed=seed, device="cpu"))
    GeneralistRegistry(LabeledStore(root)).promote(done["version"], require_better=False)
    return {
        **{k: done[k] for k in ("version", "validation", "training")},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def run_child(store: Path, cfg: dict, generalist: int | None, nice: int) -> dict:
    """One training run in a child process; ``generalist``: also measure the prompted generalist's
    Dice on that many test cases (``None``: not)."""
    cmd = [sys.executable, __file__, "--child", "--store", str(store), "--config", json.dumps(cfg)]
    if generalist is not None:
        cmd += ["--generalist-dice", "--generalist-test", str(generalist)]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", env.get("SSL_THREADS", "1"))
    env["PYTHONPATH"] = str(REPO / "scripted_modules") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        ["nice", "-n", str(nice), *cmd] if nice else cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    stdout, stderr = proc.communicate()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return {"status": "crashed", "stderr_tail": stderr[-2000:]}
    out = json.loads(lines[-1][len("RESULT ") :])
    if out.get("status") != "done":
        out["stderr_tail"] = stderr[-1500:]
    return out


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", type=Path, nargs="?")
    p.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test", type=int, default=8, help="held-out test cases")
    p.add_argument(
        "--unlabeled", type=int, default=None, help="cap on unlabeled scans (default: all the rest)"
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, nargs=2, default=[128, 128])
    p.add_argument("--refresh-every", type=int, default=100)
    p.add_argument(
        "--parts", type=str, default="{}", help="JSON per-part options, e.g. '{\"semisam_plus\": {...}}'"
    )
    p.add_argument(
        "--speed-iterations", type=int, default=8, help="iterations of the mamba_unet/unet3d speed runs"
    )
    p.add_argument("--work", type=Path, default=None)
    p.add_argument(
        "--adapt", action="store_true", help="adapt the generalist on each budget's labeled cases first"
    )
    p.add_argument("--nice", type=int, default=10)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store", type=str, help=argparse.SUPPRESS)
    p.add_argument("--config", type=str, help=argparse.SUPPRESS)
    p.add_argument("--generalist-dice", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--generalist-test",
        type=int,
        default=None,
        help="test cases for the prompted generalist's Dice (all)",
    )
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    if args.dataset is None:
        p.error("DATASET_DIR is required")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    labels, modality, pairs = dataset_cases(args.dataset)
    test, pool = split_cases(pairs, args.test, max(args.budgets), args.seed, args.unlabeled)
    work = args.work or Path(tempfile.mkdtemp(prefix="ssl_bench_"))
    shared = work / "embeddings"
    parts = json.loads(args.parts)
    base = {
        "iterations": args.iterations,
        "max_minutes": None,  # the same iterations for every method, however busy the machine
        "seed": args.seed,
        "device": "cpu",
        "batch_size": args.batch,
        "crop_size": list(args.crop),
        "refresh_every": args.refresh_every,
        "checkpoint_every": max(args.iterations, 1),
        "log_every": 1,
        "parts": parts,
    }
    report: dict = {
        "benchmark": "ssl",
        "dataset": str(args.dataset),
        "cases": len(pairs),
        "test_cases": [c for c, _, _ in test],
        "iterations": args.iterations,
        "seed": args.seed,
        "batch_size": args.batch,
        "crop_size": list(args.crop),
        "parts": parts,
        "results": {},
    }
    t_all = time.perf_counter()
    for k in args.budgets:
        labeled = pool[:k]
        unlabeled = pool[k:] if args.unlabeled is None else pool[k : k + args.unlabeled]
        root = work / f"budget{k}"
        if root.exists():
            shutil.rmtree(root)
        make_store(root, labels, modality, labeled, unlabeled, test, shared)
        entry = {"labeled": [c for c, _, _ in labeled], "unlabeled": len(unlabeled), "methods": {}}
        report["results"][str(k)] = entry
        if args.adapt:
            import torch

            torch.set_num_threads(int(os.environ.get("SSL_THREADS", "1")))
            entry["adapt"] = adapt_store(root, args.seed)
            log.info("budget %d: adapted %s", k, json.dumps(entry["adapt"]["validation"]))
            print(json.dumps({"budget": k, "adapt": entry["adapt"]}), file=sys.stderr, flush=True)
        for m in args.methods:
            log.info("budget %d: %s ...", k, m)
            gen = (args.generalist_test or args.test) if m == "semisam_plus" else None
            res = run_child(root, {**base, "method": m}, generalist=gen, nice=args.nice)
            if "semisam_plus" in m.split("+") and res.get("status") == "done":
                res.update(pseudo_label_dice(root, res.get("model_dir"), unlabeled))
            entry["methods"][m] = res
            log.info("budget %d: %s -> dice %s in %s s", k, m, res.get("dice"), res.get("seconds"))
            print(json.dumps({"budget": k, "method": m, **res}), file=sys.stderr, flush=True)
    # Speed: the two specialists, supervised, same batch size, same store.
    if args.speed_iterations:
        root = work / f"budget{args.budgets[0]}"
        speed = {}
        for arch in ("mamba_unet", "unet3d"):
            cfg = {**base, "method": "supervised", "arch": arch, "iterations": args.speed_iterations}
            r = run_child(root, cfg, generalist=None, nice=args.nice)
            speed[arch] = {k: r.get(k) for k in ("iterations_per_s", "seconds", "peak_rss_mib", "status")}
        speed["crop_2.5d"] = list(args.crop)
        speed["patch_3d"] = [32, 96, 96]
        ips = [speed[a]["iterations_per_s"] for a in ("mamba_unet", "unet3d")]
        speed["mamba_over_unet3d"] = round(ips[0] / ips[1], 2) if all(ips) else None
        report["speed"] = speed
    report["seconds_total"] = round(time.perf_counter() - t_all, 1)
    report["machine"] = machine_info()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
