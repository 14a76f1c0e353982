"""Replay a finished ``semisam simulate`` run's annotation with today's annotator; JSON out.

Each chosen case is annotated again with the models it met in the run: the specialist version that
proposed it (none for the first block and for blind validation cases) and the store's adapted generalist
version that was active then (from the run's ``adapt`` events), the run's annotator options and time
model, the same seeds; ``--baseline`` replays the prompts-only baseline (no specialist, the frozen
generalist). Nothing is retrained: what changes is only what the annotator does, so a change to the
annotator (or to the engine it drives) is measured on the same proposals. The retrained versions learned
from the masks the run accepted; say so beside any number from here.

Usage::

    python Testing/benchmarks/loop_replay.py WORK --cases 1,2,3,4,13,14,15,16 [--baseline]

``WORK`` is the run's ``--work`` folder (``simulation.json``, ``cases.jsonl``, ``store/``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "scripted_modules"))

from bench_common import machine_info  # noqa: E402


def run_events(work: Path) -> tuple[dict[int, dict], dict[int, str]]:
    """``(case lines by index, generalist version promoted after N cases)`` of the loop run."""
    cases, promoted = {}, {}
    for line in (work / "cases.jsonl").read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        if d.get("event") == "case" and d.get("run", "loop") == "loop":
            cases[int(d["index"])] = d
        elif d.get("event") == "adapt" and d.get("promoted"):
            promoted[int(d["after_cases"])] = d["version"]
    return cases, promoted


def generalist_at(index: int, promoted: dict[int, str]) -> str | None:
    """The adapted generalist version active when case ``index`` (1-based) came, or ``None``."""
    before = [n for n in promoted if n < index]
    return promoted[max(before)] if before else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("work", type=Path)
    p.add_argument("--cases", required=True, help="comma-separated case indices (1-based, the run's order)")
    p.add_argument("--baseline", action="store_true", help="prompts alone, frozen generalist")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import numpy as np

    from semisam.adapt.versions import apply_version
    from semisam.generalists import build_generalist
    from semisam.loop import AnnotatorConfig, SimulatedAnnotator
    from semisam.loop.annotator import new_cache
    from semisam.loop.dataset import Dataset
    from semisam.loop.effort import TimeModel
    from semisam.loop.replay import propose_with
    from semisam.store.active import load_specialist

    sim = json.loads((args.work / "simulation.json").read_text(encoding="utf-8"))
    opts = sim["options"]
    cases, promoted = run_events(args.work)
    store = args.work / "store"
    dataset = Dataset.open(sim["dataset"])
    config, tm = AnnotatorConfig(**opts["annotator"]), TimeModel(**opts["time_model"])
    generalists: dict[str | None, object] = {}
    out = []
    for index in (int(i) for i in args.cases.split(",")):
        line = cases[index]
        image, truth = dataset.read(line["case_id"], int(sim["label"]))
        version = None if args.baseline else generalist_at(index, promoted)
        if version not in generalists:
            g = build_generalist(opts["generalist"], device="cpu")
            generalists[version] = (
                g if version is None else apply_version(g, store / "generalists" / "versions" / version)
            )
        proposal = order = None
        t0 = time.perf_counter()
        if not args.baseline and line["model_version"]:
            model, manifest = load_specialist(
                store / "models" / "versions" / line["model_version"], "cpu", {}
            )
            label_name = dataset.labels[int(sim["label"])]
            proposal, order = propose_with(model, manifest, image, label_name, "cpu")
        propose_s = time.perf_counter() - t0
        res = SimulatedAnnotator(generalists[version], config, modality=dataset.modality).annotate(
            image,
            truth,
            float(opts["target_dice"]),
            np.random.default_rng([int(opts["seed"]), index]),
            proposal=proposal,
            review_order=order,
            cache=new_cache(image),
            compute_s=propose_s,
        )
        e = res.effort
        out.append(
            {
                "index": index,
                "case_id": line["case_id"],
                "specialist": line["model_version"] if proposal is not None else None,
                "generalist": version,
                "proposal_dice": round(res.proposal_dice, 4),
                "prompt_dice": round(res.prompt_dice, 4),
                "final_dice": round(res.final_dice, 4),
                "prompts": e.prompts,
                "hand_slices": e.hand_slices,
                "simulated_s": round(e.interaction_s(tm), 1),
                "compute_s": round(e.compute_s, 1),
                "effort_s": round(e.total_s(tm), 1),
                "run_effort_s": None if args.baseline else line["effort_s"],
                "stop": res.stop,
            }
        )
        print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    total = round(sum(c["effort_s"] for c in out), 1)
    print(
        json.dumps(
            {
                "benchmark": "loop_replay",
                "work": str(args.work),
                "baseline": args.baseline,
                "cases": out,
                "effort_s": total,
                "machine": machine_info(generalist=opts["generalist"]),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
