"""The promotion rule (docs/training.md): when does a newly trained version become the active one.

* No active version: promote (nothing to beat).
* The validation split has cases: promote when the new version's Dice beats the active version's on
  the same cases (:meth:`ModelRegistry.promote` with ``require_better``). The active version is
  evaluated first when its recorded Dice is missing or was computed on other cases.
* The split is empty (a store's first four cases all train): promote when the new version's training
  cases strictly include the active version's (more labels from the same annotator); else not.

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
from collections.abc import Callable

from semisam.store.errors import RegistryError

log = logging.getLogger(__name__)


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
    if cases:
        if sorted(active.evaluated_on) != sorted(cases) or "dice" not in active.metrics:
            ev = evaluate_active(active)
            reg.record_metrics(active.version, {"dice": ev["dice"]}, cases)
        try:
            reg.promote(version, require_better=True)
        except RegistryError as exc:
            return False, f"not promoted: {exc}"
        old = reg.get(active.version).metrics.get("dice")
        return True, (
            f"promoted: validation Dice {validation['dice']:.4f} beats the active {active.version}'s "
            f"{old:.4f} on the same {len(cases)} case(s)"
        )
    before = trained_case_ids(active.path)
    if before is None:
        before = []
    if set(before) < set(train_ids):
        reg.promote(version, require_better=False)
        return True, (
            f"promoted: the validation split is empty and its {len(train_ids)} training case(s) strictly "
            f"include the active {active.version}'s {len(before)}"
        )
    return False, (
        f"not promoted: the validation split is empty and its training cases do not strictly include "
        f"the active {active.version}'s ({len(before)} case(s))"
    )
