"""Promptable 2D generalists (SAM family) behind one protocol and a registry of build functions.

>>> model = build_generalist("litemedsam", device="cpu")   # the bundled real weights
>>> emb = model.encode(slice01)                            # (H, W) float32 in [0, 1]
>>> pred = model.predict(emb, SlicePrompt(box=(x0, y0, x1, y1)))

See README.md beside this file for the cache, the background precompute and SAM 2's volume propagation.
"""

from __future__ import annotations

from .base import PromptableModel, SliceEmbedding, SlicePrediction, SlicePrompt
from .registry import GENERALIST_NAMES, build_generalist, generalist_registry, parse_model_spec
from .user_checkpoint import CheckpointError

__all__ = [
    "CheckpointError",
    "GENERALIST_NAMES",
    "PromptableModel",
    "SliceEmbedding",
    "SlicePrediction",
    "SlicePrompt",
    "build_generalist",
    "generalist_registry",
    "parse_model_spec",
]
