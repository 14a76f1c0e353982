"""Is the structure on this slice at all? A linear probe on the frozen generalist's slice embedding.

A promptable generalist answers every box: asked on a slice where the structure is absent (a specialist
that puts it a few slices too high), it outlines whatever tissue sits in the box, with the same predicted
IoU as a right answer, and that answer agrees with the specialist because it was made from the
specialist's own box. Neither score can refuse it. What can is the *labeled* cases: on their slices the
generalist's embedding cells inside the true mask and outside it are known, so a per-class logistic
probe ``p_c = sigmoid(w_c . f + b_c)`` on the L2-normalised embedding vector ``f`` (``D`` = 256 for
SAM-family encoders) learns what the structure looks like *to the generalist*, from labels only.

A slice's **presence** for class ``c`` is the largest probe logit over the slice's cells. It is compared
with a threshold calibrated on the labeled cases themselves, cross-fitted so the probe never scores a
slice it was fitted on: fitted on every other labeled slice (alternating through the labeled cases in
order) it scores the rest and vice versa. Neighbouring slices look alike, so this holds out less than a
new scan would: the threshold is, if anything, optimistic. It is the midpoint (logit) between the median presence of slices that hold the class and the median of
slices that do not but lie within one structure length of it (the confusers: the neighbouring tissue a
z-shifted box lands on; slices far away are easy and would pull the threshold down). Measured on the
pallidum development task (one labeled case; every slice of six unlabeled scans, model grid): the probe
keeps 99 % of the slices holding pallidum and refuses 74 % of those that do not (for answers to boxes
moved up to 6 slices off the structure, LiteMedSAM's predicted IoU separates empty from holding slices
with ROC AUC 0.61, the probe's presence with 0.92).

A class gets no threshold, so it is never refused, unless both halves of the cross-fit saw it and
slices near it without it, and its held-out presence is higher on the slices that hold it than on those
that do not (a backwards threshold would refuse the structure itself).

Used by ``semisam_plus`` when its option ``presence`` is true (off by default: on the pallidum task,
removing the empty teaching slices lowered the one-label test Dice, ``docs/training.md``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from semisam.generalists.base import PromptableModel, SliceEmbedding
from semisam.generalists.cells import embedding_cells, fit_linear_probe
from semisam.generalists.sam_family import SamLikeModel

from ..base import CaseData
from .embedding_store import EmbeddingStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PresenceConfig:
    """Probe fitting settings.

    Attributes:
        steps: full-batch Adam steps of the logistic fit (the loss is flat after ~200 on 1-4 cases).
        lr: Adam learning rate.
        weight_decay: Adam's weight decay on the probe's weights and bias (keeps 256 weights from
            memorising ~1000 positive cells).
        seed: the probe's initial weights.
    """

    steps: int = 300
    lr: float = 1e-2
    weight_decay: float = 1e-4
    seed: int = 0


class PresenceProbe:
    """Per-class slice presence from a linear probe on one generalist's embeddings (module docstring).

    Args:
        generalist: the frozen generalist whose embeddings are probed (the first of several).
        embeddings: the shared slice-embedding store (labeled slices are encoded once, then cached).
        config: fitting settings.

    Raises:
        ValueError: ``generalist`` is not a SAM-style model (SAM, MedSAM, LiteMedSAM): SAM 2 stretches a
            slice over its whole input square instead of padding it, so its cells are other pixels.
    """

    def __init__(
        self, generalist: PromptableModel, embeddings: EmbeddingStore, config: PresenceConfig | None = None
    ) -> None:
        if not isinstance(generalist, SamLikeModel):
            raise ValueError(
                f"the presence probe reads SAM-style slice embeddings (sam, medsam, litemedsam); "
                f"{getattr(generalist, 'name', type(generalist).__name__)!r} is not one: list one of "
                "those first with --generalist, or turn the semisam_plus option 'presence' off"
            )
        self.generalist = generalist
        self.embeddings = embeddings
        self.config = config or PresenceConfig()
        self.weight: torch.Tensor | None = None  # (C-1, D)
        self.bias: torch.Tensor | None = None  # (C-1,)
        self.threshold: np.ndarray | None = None  # (C-1,) logit; -inf = never refused
        self.digest = ""

    def _slice_cells(self, image2d: np.ndarray, masks: np.ndarray) -> tuple[torch.Tensor, ...]:
        emb = self.embeddings.get_or_encode(self.generalist, image2d)
        return embedding_cells(emb, int(self.generalist.image_size), masks)

    def _fit(self, feats: torch.Tensor, cover: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        return fit_linear_probe(feats, cover, cfg.steps, cfg.lr, cfg.weight_decay, cfg.seed)

    @staticmethod
    def _presence(w: torch.Tensor, b: torch.Tensor, feats: torch.Tensor) -> np.ndarray:
        if feats.shape[0] == 0:
            return np.full(w.shape[0], -np.inf, dtype=np.float32)
        return (feats @ w.T + b).max(0).values.numpy().astype(np.float32)

    @torch.no_grad()
    def _calibrate(
        self, slices: list[tuple[torch.Tensor, torch.Tensor]], present: np.ndarray, near: np.ndarray
    ) -> np.ndarray:
        """Cross-fitted thresholds ``(K,)`` (module docstring).

        Args:
            slices: per labeled slice, its ``(N, D)`` cells and ``(N, K)`` class coverage.
            present: ``(S, K)`` the class is on the slice.
            near: ``(S, K)`` the slice lies within one structure length of the class in its own case.
        """
        thr = np.full(present.shape[1], -np.inf, dtype=np.float32)
        if len(slices) < 2:
            log.info(
                "presence probe: %d labeled slice(s), nothing to cross-fit: no slice is refused", len(slices)
            )
            return thr
        held = np.zeros(present.shape, dtype=np.float32)
        parity = np.arange(len(slices)) % 2
        for p in (0, 1):
            fit = [s for s, q in zip(slices, parity, strict=True) if q == p]
            w, b = self._fit(torch.cat([f for f, _ in fit]), torch.cat([c for _, c in fit]))
            for i in np.nonzero(parity != p)[0]:
                held[i] = self._presence(w, b, slices[i][0])
        for c in range(present.shape[1]):
            pos, confusers = present[:, c], ~present[:, c] & near[:, c]
            # Both halves must have seen the class (else one half-probe scores it arbitrarily).
            if not (pos[parity == 0].any() and pos[parity == 1].any() and confusers.any()):
                continue
            hi, lo = float(np.median(held[pos, c])), float(np.median(held[confusers, c]))
            if hi > lo:
                thr[c] = 0.5 * (hi + lo)
            else:
                log.warning(
                    "presence probe: class %d looks no more present where it is (%.2f) than near it "
                    "(%.2f): it is never refused",
                    c + 1,
                    hi,
                    lo,
                )
        return thr

    @staticmethod
    def _near(present: np.ndarray) -> np.ndarray:
        """``(Z,)`` bool: slices of one case within one structure length (its slice extent) of ``present``."""
        zs = np.nonzero(present)[0]
        near = np.zeros_like(present)
        if zs.size:
            ext = int(zs.max() - zs.min() + 1)
            near[max(0, zs.min() - ext) : zs.max() + ext + 1] = True
        return near

    def fit(self, cases: Sequence[CaseData], n_classes: int) -> None:
        """Fit on labeled cases (``mask`` set, model grid).

        Raises:
            ValueError: no case.
        """
        if not cases:
            raise ValueError("the presence probe is fitted on labeled cases; none was given")
        slices: list[tuple[torch.Tensor, torch.Tensor]] = []
        present_rows, near_rows = [], []
        for case in cases:
            image = case.image.detach().to("cpu", torch.float32).numpy()
            mask = case.mask.detach().to("cpu").numpy()
            for z in range(image.shape[0]):
                onehot = np.stack([mask[z] == c for c in range(1, n_classes)], -1)
                feats, cover = self._slice_cells(image[z], onehot)
                slices.append((feats, cover))
            case_present = np.stack(
                [(mask == c).reshape(mask.shape[0], -1).any(1) for c in range(1, n_classes)], 1
            )
            present_rows.append(case_present)
            near_rows.append(np.stack([self._near(col) for col in case_present.T], 1))
        present, near = np.concatenate(present_rows), np.concatenate(near_rows)
        w, b = self._fit(torch.cat([f for f, _ in slices]), torch.cat([c for _, c in slices]))
        self.weight, self.bias = w, b
        self.threshold = self._calibrate(slices, present, near)
        h = hashlib.sha256()
        for t in (w, b, torch.from_numpy(self.threshold)):
            h.update(t.contiguous().numpy().tobytes())
        self.digest = h.hexdigest()
        log.info(
            "presence probe fitted on %d labeled slices (%d cases); thresholds (logit) %s",
            len(slices),
            len(cases),
            [round(float(t), 3) for t in self.threshold],
        )

    @torch.no_grad()
    def slice_presence(self, emb: SliceEmbedding) -> np.ndarray:
        """``(C-1,)`` presence logits of one slice (the largest probe logit over its cells)."""
        assert self.weight is not None and self.bias is not None, "fit() was not called"
        (feats,) = embedding_cells(emb, int(self.generalist.image_size), None)
        return self._presence(self.weight, self.bias, feats)

    def absent(self, emb: SliceEmbedding) -> np.ndarray:
        """``(C-1,)`` bool: the probe says the class is not on this slice."""
        assert self.threshold is not None, "fit() was not called"
        return self.slice_presence(emb) < self.threshold
