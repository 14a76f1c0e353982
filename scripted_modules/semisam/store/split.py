"""The fixed validation split: each case's split is decided once, when it is added, and never again.

Rule ``every-5th`` (default, ``VALIDATION_EVERY = 5``): when a case is committed as the store's
``n``-th case, and ``v`` cases already are in validation, the new case goes to validation iff
``v < n // 5``; otherwise to training. With cases added one by one this puts exactly the 5th, 10th,
15th... case into validation, so at any time ``n // 5`` of ``n`` cases (about a fifth) are held out.

Why this is stable and needs no re-split:
* the decision is taken under the store lock, written into the case's ``case.json`` in the same atomic
  commit as the case, and afterwards only *read*; nothing (later adds, retrains, imports, mask
  replacements) recomputes it;
* "once there are enough" is built in: below 5 cases ``n // 5 == 0``, so the first four cases train
  (with 1-4 labeled scans every one is needed for training); the held-out set then grows only through
  *new* cases, never by moving an existing one;
* cases with an explicit split (imported datasets, ``--split``) count in ``v`` and ``n``, so the rule
  keeps the overall fraction near a fifth after an import instead of drifting.

A counter over committed cases is used rather than a hash of the case id because a hash gives the
right fraction only on average: with 10 cases a hash rule leaves 0 validation cases 11 % of the time
(0.8**10) and 4 or more 12 % of the time, whereas the counter gives exactly 2.
"""

from __future__ import annotations

from semisam.store.records import SPLITS

VALIDATION_EVERY = 5
RULE = f"every-{VALIDATION_EVERY}th"


def decide_split(n_existing: int, n_validation: int, every: int = VALIDATION_EVERY) -> str:
    """Split of the case about to become the ``n_existing + 1``-th, given ``n_validation`` held out."""
    n = n_existing + 1
    return "validation" if n_validation < n // every else "train"


def check_split(split: str) -> str:
    """Validate an explicit split name."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split
