"""The simulation's picture: effort per case and proposal Dice against the number of accepted cases.

Top: effort (simulated seconds, the time model's) of each case, the loop beside the prompts-only
baseline on the same cases; dashed lines where a retrain happened (and whether it was promoted).
Bottom: the proposal's Dice against the truth (the specialist's first mask), the accepted mask's Dice and
the target. Validation cases drawn blind (no proposal shown) are crosses on top and left out of the
proposal line, where their empty proposal would read as a model that forgot everything. Drawn with
matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import os
from pathlib import Path


def plot_run(work: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Draw the run in ``work`` (its ``cases.jsonl`` / ``baseline.jsonl``) into the PNG ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from semisam.loop.files import BASELINE_FILE, CASES_FILE, read_jsonl

    work = Path(work)
    lines = read_jsonl(work / CASES_FILE)
    loop = sorted((r for r in lines if r.get("event") == "case"), key=lambda r: r["index"])
    retrains = [r for r in lines if r.get("event") == "retrain"]
    ids = {r["case_id"] for r in loop}
    base = sorted(
        (r for r in read_jsonl(work / BASELINE_FILE) if r.get("event") == "case" and r["case_id"] in ids),
        key=lambda r: r["index"],
    )
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    x = [r["accepted_before"] for r in loop]
    ax1.plot(x, [r["effort_s"] for r in loop], "o-", color="tab:blue", label="loop (specialist proposes)")
    if base:
        ax1.plot(
            [r["accepted_before"] for r in base],
            [r["effort_s"] for r in base],
            "s--",
            color="tab:gray",
            label="baseline (prompts only)",
        )
    blind = [r for r in loop if r.get("blind")]
    if blind:  # validation cases drawn without a proposal (promotion compares versions on them)
        ax1.plot(
            [r["accepted_before"] for r in blind],
            [r["effort_s"] for r in blind],
            "x",
            color="black",
            markersize=9,
            label="validation case, drawn blind",
        )
    for r in retrains:
        style = "-" if r.get("promoted") else ":"
        for ax in (ax1, ax2):
            ax.axvline(r["after_cases"] - 0.5, color="tab:green", linestyle=style, alpha=0.5)
    ax1.set_ylabel("effort per case (s)")
    ax1.set_ylim(bottom=0)
    ax1.legend(loc="upper right")
    ax1.set_title("SemiSAM loop: effort per case (green: retrain; solid = promoted)")
    proposed = [r for r in loop if not r.get("blind")]
    ax2.plot(
        [r["accepted_before"] for r in proposed],
        [r["proposal_dice"] for r in proposed],
        "o-",
        color="tab:orange",
        label="proposal Dice (blind validation cases left out)" if blind else "proposal Dice",
    )
    ax2.plot(x, [r["final_dice"] for r in loop], ".", color="tab:blue", label="accepted Dice")
    ax2.plot(x, [r["target_dice"] for r in loop], "_", color="black", markersize=12, label="target")
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("accepted cases before this one")
    ax2.set_ylabel("Dice vs truth")
    ax2.legend(loc="lower right")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
