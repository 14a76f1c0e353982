"""Slice pixels <-> model frame: resize the longest side to the model's input, pad bottom/right.

This is how SAM, MedSAM and LiteMedSAM prepare an image: a slice ``(H, W)`` is scaled by
``s = S / max(H, W)`` to ``(round(H s), round(W s))`` and zero-padded to ``(S, S)``. Prompt coordinates
are scaled by the same ``s``; mask logits are cropped to the unpadded part and resized back to exactly
``(H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ResizeLongestSide:
    """The transform for one slice shape.

    Attributes:
        slice_shape: ``(H, W)`` of the original slice, pixels.
        target: the model's square input side ``S``, pixels.
    """

    slice_shape: tuple[int, int]
    target: int

    @property
    def scale(self) -> float:
        return self.target / max(self.slice_shape)

    @property
    def resized_shape(self) -> tuple[int, int]:
        """``(h, w)`` of the slice inside the model frame, before padding."""
        h, w = self.slice_shape
        s = self.scale
        return max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))

    def image_to_model(self, image: torch.Tensor) -> torch.Tensor:
        """``(H, W)`` or ``(C, H, W)`` float tensor -> ``(C, S, S)`` resized and zero-padded.

        Downscaling anti-aliases (like OpenCV's INTER_AREA that LiteMedSAM's own inference uses);
        upscaling is plain bilinear.
        """
        x = image if image.ndim == 3 else image[None]
        h, w = self.resized_shape
        if (h, w) != tuple(x.shape[-2:]):
            down = h < x.shape[-2] or w < x.shape[-1]
            x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False, antialias=down)[0]
        return F.pad(x, (0, self.target - w, 0, self.target - h))

    def coords_to_model(self, xy: np.ndarray) -> np.ndarray:
        """``(..., 2)`` pixel ``(x, y)`` (or ``(..., 4)`` boxes ``x0, y0, x1, y1``) -> model-frame coordinates.

        The scale is applied per axis from the rounded resized shape, so a box touching the last pixel
        column lands on the last resized column.
        """
        xy = np.asarray(xy, dtype=np.float64)
        h, w = self.slice_shape
        rh, rw = self.resized_shape
        sx, sy = rw / w, rh / h
        factors = np.array([sx, sy] * (xy.shape[-1] // 2))
        return (xy * factors).astype(np.float32)

    def mask_to_model(self, mask: np.ndarray, size: int) -> torch.Tensor:
        """``(H, W)`` mask/logits -> ``(1, 1, size, size)`` in the padded frame scaled to ``size``.

        ``size`` is the decoder's mask-input side (4x the embedding side: 256 for SAM and LiteMedSAM).
        """
        m = torch.as_tensor(np.asarray(mask, dtype=np.float32))
        framed = self.image_to_model(m)  # (1, S, S)
        if size != self.target:
            framed = F.interpolate(framed[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        return framed[None]

    def logits_to_slice(self, low_res: torch.Tensor) -> torch.Tensor:
        """Decoder logits ``(B, C, m, m)`` covering the padded frame -> ``(B, C, H, W)`` slice logits.

        Upscales to the frame ``(S, S)``, crops the padding, resizes to the slice — SAM's
        ``postprocess_masks`` — so the result has exactly the slice's shape.
        """
        x = low_res
        if x.shape[-1] != self.target:
            x = F.interpolate(x, size=(self.target, self.target), mode="bilinear", align_corners=False)
        h, w = self.resized_shape
        x = x[..., :h, :w]
        if (h, w) != self.slice_shape:
            x = F.interpolate(x, size=self.slice_shape, mode="bilinear", align_corners=False)
        return x
