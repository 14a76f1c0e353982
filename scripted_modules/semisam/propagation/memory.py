"""SAM 2-family propagation: slices as video frames, SAM 2's memory bank carries the object along.

The generalist's ``propagate_volume(frames (Z, H, W) in [0, 1], {slice: SlicePrompt})`` (see
``semisam/generalists/README.md``) returns per-slice logits and object scores; here they become a
:class:`~semisam.propagation.result.PropagationResult`. Every call re-runs the whole video (SAM 2's
memory depends on every conditioning frame), so there is no per-track reuse for these models.
"""

from __future__ import annotations

import numpy as np

from semisam.generalists.base import SlicePrompt
from semisam.propagation.cleanup import keep_supported
from semisam.propagation.result import PropagationResult
from semisam.slices import put_slice

#: A slice counts as containing the object when SAM 2's object-presence probability exceeds this.
MIN_OBJECT_SCORE = 0.5


def propagate_with_memory(state):
    n = state.n_slices
    frames = np.stack([state.image(s) for s in range(n)])
    prompts: dict[int, SlicePrompt] = {}
    for k, key in state.keys.items():
        boxes = [p.box for p in key.prompts if p.box is not None]
        pts = [p for p in key.prompts if p.point is not None]
        points = np.array([p.point for p in pts], dtype=np.float32).reshape(-1, 2) if pts else None
        labels = np.array([int(p.positive) for p in pts], dtype=np.int64) if pts else None
        box = tuple(float(v) for v in boxes[0]) if boxes else None
        prompts[k] = SlicePrompt(box=box, points=points, point_labels=labels)  # type: ignore[arg-type]
        key.fresh = True
    state.n_predict += len(prompts)
    logits, scores = state.model.propagate_volume(frames, prompts)
    mask = np.zeros(state.volume.shape, dtype=np.uint8)
    confidence = np.full(n, np.nan, dtype=np.float32)
    source = np.full(n, -1, dtype=np.int64)
    keys = sorted(prompts)
    support = np.zeros(state.volume.shape, dtype=bool)
    for s in range(n):
        m = logits[s] > 0
        if s in prompts:
            put_slice(support, state.axis, s, m)
        elif scores[s] < MIN_OBJECT_SCORE:
            continue
        if m.any():
            put_slice(mask, state.axis, s, m.astype(np.uint8))
            confidence[s] = float(scores[s])
            source[s] = min(keys, key=lambda k, s=s: abs(k - s))
    mask = keep_supported(mask, support)
    return PropagationResult(mask, confidence, source, {}, keys)
