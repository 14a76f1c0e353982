"""The promotion rule (docs/training.md): when does a newly trained version become the active one.

* No active version: promote (nothing to beat).
* The validation split has cases: both versions segment the same cases and are compared **case by
  case** (:func:`compare`), not by their means alone: a mean that differs by 0.002 on one or two cases
  is noise, and deciding on it replaced good versions and kept stale ones.

  - With at least :data:`MIN_PAIRED_CASES` cases (a *paired* decision): promote when the mean per-case
    gain is at least :data:`MIN_GAIN` and at least one standard error of the per-case gains (the paired
    gains' mean over their spread: a one-sided check that the gain is not one case's luck).
  - With fewer (a *weak* decision, said so in the reason): promote on a gain of at least
    :data:`MIN_GAIN` on every case; or when the new version's training cases strictly include the active
    version's (more labels from the same annotator, the usual retrain) and its mean gain is not below
    ``-``:func:`more_labels_tolerance`: one to three cases cannot show a version worse by less than what
    the seed alone moves a case's Dice, while the extra labels are known.
* The split is empty (a store's first four cases all train): promote when the new version's training
  cases strictly include the active version's (more labels from the same annotator); else not.

:data:`MIN_GAIN` 0.01 is about one voxel layer on the surface of a structure 40 voxels across: set from
what a Dice difference can mean, not fitted to a dataset. The tolerance for more labels comes from how far
two trainings move one case's Dice when nothing but the seed differs (:data:`CASE_SPREAD`): the mean gain
of ``n`` cases is refused only below ``-1.645 * spread / sqrt(n)`` (a one-sided 5 % test): 0.048 on one
case, 0.034 on two, 0.028 on three. The fixed 0.02 it replaces sat inside that noise: in a whole-head
thalamus loop it refused retrains with more labels at -0.049 on one validation case and -0.024 on two,
which four held-out subjects scored higher (0.801 and 0.820 against 0.779).

Which validation cases compare versions (:func:`comparison_case_ids`): those whose masks were drawn
without a specialist's proposal (``provenance.model_version`` empty), when there are any. A mask corrected
from a version's proposal keeps that version's answer wherever the annotator accepted it, so it scores
that version (and its warm-started descendants) too high. Measured in a simulated loop (thalamus
development task, 12 accepted cases, annotator masks from v0001's proposals): against the accepted masks
v0001 scored 0.701 and its successors 0.634 / 0.665, so neither was promoted; against the true labels of
the same validation cases the successors were better (0.556 vs 0.575 / 0.591). The store announces a
validation case before it is annotated (:meth:`~semisam.store.LabeledStore.next_split`) so that it can be
drawn blind. When every validation case came from a proposal, all of them are used (and the log says why).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Mean per-case Dice gain a new version needs to replace the active one (see the module docstring).
MIN_GAIN = 0.01
#: Standard deviation of one case's Dice difference between two trainings of the same labels that differ only
#: in their seed, about the pair's mean difference (``Testing/benchmarks/seed_spread.py`` over
#: ``learning_curve.py --split-seed 0 --seed 0 / 1 / 2``: whole-head caudate and thalamus, 4 and 8 training
#: cases, 8 test subjects; 12 pairs): 0.008-0.040 per pair, pooled (root mean square) 0.0285. The pairs'
#: mean differences (up to 0.051) are real differences between two trained models, which the comparison is
#: there to see, so they do not widen the tolerance.
CASE_SPREAD = 0.029
#: One-sided 95 % point of the normal distribution: how many standard errors below zero a gain must be
#: before a version with more labels is refused.
Z_ONE_SIDED = 1.645
#: Validation cases from which the comparison is paired (mean gain against its standard error).
MIN_PAIRED_CASES = 4


def more_labels_tolerance(n: int) -> float:
    """How far below the active version's the mean per-case Dice of ``n`` validation cases may be, on a
    weak decision, for a version trained on strictly more cases: :data:`Z_ONE_SIDED` standard errors of a
    mean of ``n`` cases whose gains spread by :data:`CASE_SPREAD` (the gains' own spread is not used: two or
    three cases do not measure it)."""
    if n < 1:
        raise ValueError(f"need at least one validation case, got {n}")
    return Z_ONE_SIDED * CASE_SPREAD / math.sqrt(n)


@dataclass(frozen=True)
class Comparison:
    """A new version against the active one on the same validation cases.

    Attributes:
        better: whether the new version should replace the active one.
        strength: ``"paired"`` (enough cases for a paired decision) or ``"weak"`` (fewer).
        gain: mean per-case Dice gain (new minus active).
        stderr: standard error of the per-case gains (``inf`` with one case).
        cases: how many cases were compared.
        reason: one line saying why.
    """

    better: bool
    strength: str
    gain: float
    stderr: float
    cases: int
    reason: str


def compare(new: dict[str, float], old: dict[str, float], more_labels: bool) -> Comparison:
    """Compare per-case Dice ``new`` and ``old`` (case id -> Dice, the same cases) by the rule of the
    module docstring; ``more_labels``: the new version's training cases strictly include the active's."""
    cases = sorted(set(new) & set(old))
    if not cases:
        raise ValueError("no validation case scored by both versions")
    gains = [float(new[c]) - float(old[c]) for c in cases]
    n = len(gains)
    gain = sum(gains) / n
    stderr = math.sqrt(sum((g - gain) ** 2 for g in gains) / (n - 1) / n) if n > 1 else math.inf
    said = f"mean per-case Dice gain {gain:+.4f}"
    if n >= MIN_PAIRED_CASES:
        better = gain >= MIN_GAIN and gain >= stderr
        why = f"{said} (standard error {stderr:.4f}) on {n} validation cases: " + (
            "at least the margin and one standard error"
            if better
            else f"short of the margin {MIN_GAIN} or one standard error"
        )
        return Comparison(better, "paired", gain, stderr, n, why)
    weak = f"weak decision, {n} validation case(s)"
    if min(gains) >= MIN_GAIN:
        return Comparison(True, "weak", gain, stderr, n, f"{said}, better on every case ({weak})")
    if more_labels and gain >= -(tol := more_labels_tolerance(n)):
        why = f"{said}, with more training cases and not below -{tol:.3f}, the spread the seed alone makes ({weak})"
        return Comparison(True, "weak", gain, stderr, n, why)
    return Comparison(False, "weak", gain, stderr, n, f"{said} ({weak})")


def trained_case_ids(version_path) -> list[str] | None:
    """Training case ids recorded in a version's manifest (``training.case_ids.train``), or ``None``."""
    try:
        man = json.loads((version_path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ids = ((man.get("training") or {}).get("case_ids") or {}).get("train")
    return list(ids) if isinstance(ids, list) else None


def comparison_case_ids(store) -> list[str]:
    """Validation case ids that compare model versions: the blind ones (drawn without a proposal), else all.

    See the module docstring for why masks corrected from a proposal are left out when blind ones exist.
    """
    records = store.cases("validation")  # one read of the records, in add order
    blind = [r.case_id for r in records if not r.provenance.model_version]
    if blind:
        if len(blind) < len(records):
            log.info(
                "versions are compared on the %d of %d validation case(s) drawn without a proposal",
                len(blind),
                len(records),
            )
        return blind
    if records:
        log.warning(
            "every validation case (%d) was corrected from a specialist's proposal: comparing on them "
            "favours the version that proposed; draw the next validation case without the proposal",
            len(records),
        )
    return [r.case_id for r in records]


def decide_and_promote(
    store,
    version: str,
    validation: dict,
    train_ids: list[str],
    evaluate_active: Callable[[object], dict],
    allow: bool = True,
) -> tuple[bool, str]:
    """Apply the rule to the registered ``version``; returns ``(promoted, why)``.

    ``validation``: the new version's ``{"dice", "cases"}``. ``evaluate_active(version_record)``
    returns the active version's validation dict on the same cases (called only when needed).
    """
    reg = store.models
    active = reg.active()
    if not allow:
        return False, "not promoted: --no-promote was given"
    if active is None:
        reg.promote(version, require_better=False)
        return True, "promoted: the store had no active version"
    cases = list(validation.get("cases") or [])
    before = trained_case_ids(active.path)
    more_labels = before is not None and set(before) < set(train_ids)
    if cases:
        ev = evaluate_active(active)  # per case, on the same cases (a recorded mean cannot be paired)
        reg.record_metrics(active.version, {"dice": ev["dice"]}, cases)
        result = compare(dict(validation.get("per_case") or {}), dict(ev.get("per_case") or {}), more_labels)
        if not result.better:
            return False, f"not promoted: against the active {active.version}, {result.reason}"
        reg.promote(version, require_better=False)
        return True, f"promoted over {active.version}: {result.reason}"
    if before is None:
        before = []
    if more_labels:
        reg.promote(version, require_better=False)
        return True, (
            f"promoted: the validation split is empty and its {len(train_ids)} training case(s) strictly "
            f"include the active {active.version}'s {len(before)}"
        )
    return False, (
        f"not promoted: the validation split is empty and its training cases do not strictly include "
        f"the active {active.version}'s ({len(before)} case(s))"
    )
