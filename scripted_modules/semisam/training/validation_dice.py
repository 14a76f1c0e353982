"""Validation Dice: the model segments each validation case exactly as a user's Auto-segment would.

:func:`semisam.inference.segment` (preprocessing, sliding window, post-processing, back to the scan's
grid) is compared with the store's mask per label value; a case's Dice is the mean over the model's
labels (1.0 for a label absent from both), the split's Dice the mean over cases.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from semisam.inference import segment
from semisam.metrics import dice

log = logging.getLogger(__name__)


def case_dice(pred: np.ndarray, truth: np.ndarray, label_values: list[int]) -> float:
    """Mean over ``label_values`` of the Dice of ``pred == v`` against ``truth == v``."""
    return float(np.mean([dice(pred == v, truth == v) for v in label_values]))


def evaluate(model: torch.nn.Module, manifest, store, case_ids: list[str], device, emit=None) -> dict:
    """``{"dice": mean or None, "per_case": {case_id: dice}, "cases": case_ids}`` on ``case_ids``."""
    values = [int(v) for v in manifest.labels.values()]
    per_case: dict[str, float] = {}
    was_training = model.training
    for n, cid in enumerate(case_ids):
        case = store.read_case(cid)
        res = segment(case.image, model, manifest, device=device)
        per_case[cid] = case_dice(res.labels, case.mask.array, values)
        if emit is not None:
            emit({"event": "phase", "phase": "validating", "done": n + 1, "total": len(case_ids)})
    model.train(was_training)
    mean = float(np.mean(list(per_case.values()))) if per_case else None
    return {"dice": mean, "per_case": per_case, "cases": list(case_ids)}
