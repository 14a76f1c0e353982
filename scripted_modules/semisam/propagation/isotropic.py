"""Show the model square pixels: coronal / sagittal slices of thick-slice scans are strongly anisotropic.

A coronal slice of a 5 mm CT has 5 mm x 0.57 mm pixels; the model, trained on square pixels, would see
every structure squashed ~9x (lung1's nodule: key-slice Dice 0.26 squashed). :class:`SquarePixels` wraps
a generalist so that each slice is resampled to square pixels (the finer of the two spacings) before
encoding, prompts are mapped into that grid and logits are mapped back to exactly the slice's pixels.
Everything outside the wrapper keeps working in the slice's own pixel coordinates.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from semisam.generalists.base import (
    PromptableModel,
    SliceEmbedding,
    SlicePrediction,
    SlicePrompt,
    model_identity,
)

#: Pixels whose sides differ by less than this factor are treated as square (no resampling).
MAX_ASPECT = 1.1


def _resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


class SquarePixels:
    """A :class:`~semisam.generalists.base.PromptableModel` seen through square-pixel resampling.

    Args:
        model: the generalist.
        pixel_mm: ``(row_mm, column_mm)`` of the slices it will be given.
    """

    def __init__(self, model: PromptableModel, pixel_mm: tuple[float, float]):
        self.model = model
        self.pixel_mm = (float(pixel_mm[0]), float(pixel_mm[1]))
        fine = min(self.pixel_mm)
        self.scale = (self.pixel_mm[0] / fine, self.pixel_mm[1] / fine)  # (rows, columns) zoom
        # The cache key holds the identity (which adds the scale): resampled embeddings must not mix with
        # plain ones.
        self.name = f"{model.name}@square{self.scale[0]:.3g}x{self.scale[1]:.3g}"
        self.image_size = model.image_size

    @property
    def identity(self) -> str:
        """The wrapped model's identity plus the resampling (see :attr:`name`)."""
        return f"{model_identity(self.model)}@square{self.scale[0]:.3g}x{self.scale[1]:.3g}"

    @staticmethod
    def needed(pixel_mm: tuple[float, float]) -> bool:
        a, b = pixel_mm
        return max(a, b) / min(a, b) > MAX_ASPECT

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        return (max(1, round(shape[0] * self.scale[0])), max(1, round(shape[1] * self.scale[1])))

    def encode(self, image: np.ndarray) -> SliceEmbedding:
        """Encode ``(H, W)``; the embedding remembers ``(H, W)`` in ``extras["original_shape"]``."""
        h, w = image.shape
        emb = self.model.encode(_resize(image, self._shape((h, w))))
        emb.extras["original_shape"] = (h, w)
        return emb

    def _map_prompt(self, prompt: SlicePrompt, big: tuple[int, int]) -> SlicePrompt:
        sy, sx = self.scale
        box = None
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            # Inclusive pixel corners: the box covers [x0 - 0.5, x1 + 0.5] in pixel-centre units.
            box = (x0 * sx, y0 * sy, (x1 + 1) * sx - 1, (y1 + 1) * sy - 1)
        points = None
        if prompt.points is not None:
            p = np.asarray(prompt.points, dtype=np.float32).reshape(-1, 2)
            points = np.stack([(p[:, 0] + 0.5) * sx - 0.5, (p[:, 1] + 0.5) * sy - 0.5], axis=1)
        mask = None if prompt.mask is None else _resize(np.asarray(prompt.mask, np.float32), big)
        return SlicePrompt(box=box, points=points, point_labels=prompt.point_labels, mask=mask)

    def predict(self, embedding: SliceEmbedding, prompt: SlicePrompt) -> SlicePrediction:
        """Answer in the slice's own pixels: logits ``(H, W)`` of the original slice."""
        h, w = embedding.extras["original_shape"]
        pred = self.model.predict(embedding, self._map_prompt(prompt, embedding.slice_shape))
        return SlicePrediction(_resize(pred.logits, (h, w)), pred.score)
