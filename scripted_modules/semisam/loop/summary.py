"""The summary line of a simulation: effort at the start and the end of the run, against the baseline.

``window`` cases (the retraining period, 4 when the run never retrains) are compared: the first
``window`` cases (no specialist yet, so they cost what prompts alone cost) and the last ``window``; the
baseline's numbers are over the same case ids. ``proposal_dice_blocks`` is the mean proposal Dice per
block of ``window`` cases (the first block has no specialist: 0); ``proposal_dice_blocks_proposed`` the
same over the cases a specialist proposed for (``None`` where none did), leaving out the validation cases
drawn blind, whose empty proposal says nothing about the model. All means are plain means over cases.
With cases held out (``held_out``), each retrain lists the new and the previous version's mean Dice there,
and ``promotions_never_worse_held_out`` says whether no promotion made the specialist worse on them.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def _slope(ys: list[float]) -> float | None:
    """Least-squares slope of ``ys`` against 0, 1, 2, ... (per case)."""
    n = len(ys)
    if n < 2:
        return None
    mx, my = (n - 1) / 2, sum(ys) / n
    sxx = sum((i - mx) ** 2 for i in range(n))
    return round(sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sxx, 5)


def run_stats(records: list[dict], window: int) -> dict[str, Any]:
    """Totals and means of one run's case records (sorted by arrival)."""
    recs = sorted(records, key=lambda r: r["index"])
    effort = [float(r["effort_s"]) for r in recs]
    proposal = [float(r["proposal_dice"]) for r in recs]
    blocks = [_mean(proposal[i : i + window]) for i in range(0, len(proposal), window)]
    proposed = [
        [float(r["proposal_dice"]) for r in recs[i : i + window] if r.get("model_version")]
        for i in range(0, len(recs), window)
    ]
    return {
        "cases": len(recs),
        "mean_effort_s": _mean(effort),
        "first_mean_effort_s": _mean(effort[:window]),
        "last_mean_effort_s": _mean(effort[-window:]) if len(effort) >= window else None,
        "mean_final_dice": _mean([float(r["final_dice"]) for r in recs]),
        "boxes": sum(int(r["boxes"]) for r in recs),
        "points": sum(int(r["points"]) for r in recs),
        "hand_slices": sum(int(r["hand_slices"]) for r in recs),
        "effort_s_total": round(sum(effort), 3),
        "compute_s_total": round(sum(float(r["compute_s"]) for r in recs), 3),
        "proposal_dice_blocks": blocks,
        "proposal_dice_blocks_proposed": [_mean(b) for b in proposed],
        "proposing_versions": sorted({r["model_version"] for r in recs if r.get("model_version")}),
        "proposal_dice_slope": _slope(proposal),
    }


def _held_out(retrain: dict) -> dict[str, Any]:
    """The held-out scores of one retrain record (``{}`` when it has none)."""
    h = retrain.get("held_out")
    if not h:
        return {}
    return {"held_out_new": h.get("new"), "held_out_previous": h.get("previous")}


def summarize(loop: list[dict], baseline: list[dict], retrains: list[dict], config) -> dict[str, Any]:
    """The ``summary`` record (see the module docstring) from the case and retrain records."""
    window = config.retrain_every if config.retrain_every > 0 else 4
    loop = sorted(loop, key=lambda r: r["index"])
    stats = run_stats(loop, window)
    out: dict[str, Any] = {
        "event": "summary",
        "dataset": str(config.dataset),
        "cases": len(loop),
        "window": window,
        "retrain_every": config.retrain_every,
        "method": config.method,
        "iterations": config.iterations,
        "seed": config.seed,
        "generalist": config.generalist,
        "target_dice": config.target_dice,
        "time_model": config.time_model.to_json(),
        "annotator": dataclasses.asdict(config.annotator),
        "loop": stats,
        "baseline": None,
        "last_over_first": _ratio(stats["last_mean_effort_s"], stats["first_mean_effort_s"]),
        "last_over_baseline": None,
        "retrains": [
            {
                k: r.get(k)
                for k in (
                    "after_cases",
                    "status",
                    "version",
                    "promoted",
                    "validation_dice",
                    "train_cases",
                    "iterations",
                    "seconds",
                )
            }
            | _held_out(r)
            for r in retrains
        ],
    }
    scored = [
        r["held_out"]
        for r in retrains
        if r.get("promoted") and (r.get("held_out") or {}).get("previous") is not None
    ]
    # Held out: every promoted version at least as good as the one it replaced on the cases kept aside
    # (None when no promotion replaced a version there).
    out["promotions_never_worse_held_out"] = (
        all(h["new"] >= h["previous"] for h in scored) if scored else None
    )
    blocks = [b for b in stats["proposal_dice_blocks_proposed"] if b is not None]
    # Rises: the last block's proposals beat those of the first block that had a specialist; read it with
    # ``proposing_versions``: one version proposing throughout moves only with the cases.
    out["proposal_dice_rises"] = bool(len(blocks) >= 2 and blocks[-1] > blocks[0])
    if baseline:
        by_id = {r["case_id"]: r for r in baseline}
        same = [by_id[r["case_id"]] for r in loop if r["case_id"] in by_id]
        base_stats = run_stats(same, window)
        last_ids = [r["case_id"] for r in loop[-window:]]
        base_last = [float(by_id[c]["effort_s"]) for c in last_ids if c in by_id]
        base_stats["same_last_mean_effort_s"] = _mean(base_last) if len(base_last) == len(last_ids) else None
        out["baseline"] = base_stats
        out["last_over_baseline"] = _ratio(stats["last_mean_effort_s"], base_stats["same_last_mean_effort_s"])
    return out
