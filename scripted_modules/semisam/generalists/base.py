"""The one protocol every promptable 2D generalist implements (LiteMedSAM, SAM, MedSAM, SAM 2, MedSAM2).

A slice is encoded once (the expensive part, cached by :mod:`semisam.generalists.cache`); each prompt is
then answered cheaply from the embedding. Coordinates are **slice pixels**: ``x`` = column index, ``y`` =
row index of the 2D slice array ``(H, W)`` passed to :meth:`PromptableModel.encode`. Resizing and padding
to the network's input, and mapping masks back to exactly ``(H, W)``, happen inside the model wrapper.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@dataclass
class SliceEmbedding:
    """What :meth:`PromptableModel.encode` returns for one slice.

    Attributes:
        features: the image encoder's output (model-specific; e.g. ``(1, 256, 64, 64)`` for LiteMedSAM),
            on the model's device.
        slice_shape: ``(H, W)`` of the original slice in pixels.
        extras: model-specific tensors (e.g. SAM 2's high-resolution features), on the model's device.
    """

    features: torch.Tensor
    slice_shape: tuple[int, int]
    extras: dict[str, Any] = field(default_factory=dict)

    def nbytes(self) -> int:
        """Memory held, for the cache's bound."""
        n = self.features.element_size() * self.features.nelement()
        for v in self.extras.values():
            if isinstance(v, torch.Tensor):
                n += v.element_size() * v.nelement()
        return n


@dataclass
class SlicePrompt:
    """Prompts on one slice, in slice pixel coordinates.

    Attributes:
        box: ``(x0, y0, x1, y1)`` inclusive pixel corners, or ``None``.
        points: ``(N, 2)`` array of ``(x, y)``, or ``None``.
        point_labels: ``(N,)`` 1 = foreground (positive), 0 = background (negative).
        mask: ``(H, W)`` previous-mask logits or binary mask to refine, or ``None`` (models that cannot
            use it ignore it).
    """

    box: tuple[float, float, float, float] | None = None
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    mask: np.ndarray | None = None


@dataclass
class SlicePrediction:
    """A model's answer for one slice.

    Attributes:
        logits: ``(H, W)`` float32 mask logits at the slice's pixel grid (``> 0`` is foreground).
        score: the model's own quality estimate in ``[0, 1]`` (predicted IoU for SAM-family models).
    """

    logits: np.ndarray
    score: float

    @property
    def mask(self) -> np.ndarray:
        """``(H, W)`` bool."""
        return self.logits > 0


@runtime_checkable
class PromptableModel(Protocol):
    """A promptable 2D segmentation model. Implementations live beside this file, built by the registry."""

    name: str
    #: what the cache keys embeddings by: everything that changes the encoder's output for a given slice
    #: (name, weights digest, encoder runtime, device). Two models share embeddings only when equal.
    identity: str
    #: the square input size the network works at (256 for LiteMedSAM, 1024 for SAM/MedSAM).
    image_size: int

    @property
    def device(self) -> torch.device: ...

    def encode(self, image: np.ndarray) -> SliceEmbedding:
        """Encode one slice ``(H, W)`` float32, intensities already scaled to ``[0, 1]``."""
        ...

    def predict(self, embedding: SliceEmbedding, prompt: SlicePrompt) -> SlicePrediction:
        """Answer one prompt from a cached embedding."""
        ...


_object_ids = itertools.count()


def model_identity(model: PromptableModel) -> str:
    """``model.identity``, or for an implementation without one a per-object id that never matches another
    model's (nothing is shared wrongly; it only forgoes sharing between equal models). Not ``id(model)``:
    CPython reuses a freed object's address, and a cache can outlive the model."""
    ident = getattr(model, "identity", None)
    if isinstance(ident, str) and ident:
        return ident
    ident = getattr(model, "_semisam_object_identity", None)
    if ident is None:
        ident = f"{model.name}|object:{next(_object_ids)}"
        model._semisam_object_identity = ident  # type: ignore[attr-defined]
    return ident
