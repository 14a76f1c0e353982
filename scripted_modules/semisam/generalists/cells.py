"""A slice embedding's cells as feature vectors, with how much of each cell a pixel mask covers.

SAM-family encoders (SAM, MedSAM, LiteMedSAM) return ``(1, D, h, w)`` features (``D`` = 256, 64 x 64)
over the square model frame into whose top-left corner the slice was resized
(:class:`~semisam.generalists.geometry.ResizeLongestSide`); one cell spans ``frame / h`` model pixels
(1.5 slice pixels for a 96-pixel-wide slice in LiteMedSAM's 256 frame). Linear probes on these cells
(:mod:`semisam.training.methods.semi.presence`) tell the structure from its surroundings as the
generalist sees them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import SliceEmbedding
from .geometry import ResizeLongestSide


def embedding_cells(
    emb: SliceEmbedding, image_size: int, masks: np.ndarray | None
) -> tuple[torch.Tensor, ...]:
    """``(N, D)`` normalised embedding cells inside the slice and (if ``masks`` ``(H, W, K)`` is given)
    their ``(N, K)`` coverage by each mask, in [0, 1].

    The embedding ``(1, D, h, w)`` covers the square model frame, the slice resized into its top-left
    corner (:class:`ResizeLongestSide`); a cell is *inside* when the slice covers at least 99 % of it.
    """
    f = emb.features[0].detach().to("cpu", torch.float32)
    d, h, w = f.shape
    f = F.normalize(f, dim=0).reshape(d, -1).T
    tf = ResizeLongestSide(tuple(emb.slice_shape), image_size)

    def pooled(m: np.ndarray) -> torch.Tensor:  # (H, W, K) -> (h * w, K)
        framed = tf.image_to_model(torch.as_tensor(np.moveaxis(m, -1, 0), dtype=torch.float32))
        return F.adaptive_avg_pool2d(framed[None], (h, w))[0].reshape(m.shape[-1], -1).T

    inside = pooled(np.ones((*emb.slice_shape, 1), dtype=np.float32))[:, 0] > 0.99
    if masks is None:
        return (f[inside],)
    return f[inside], pooled(masks.astype(np.float32))[inside]


def fit_linear_probe(
    feats: torch.Tensor,
    cover: torch.Tensor,
    steps: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class logistic probe ``(K, D)`` weights and ``(K,)`` biases of ``(N, D)`` cells on their
    ``(N, K)`` coverage.

    A cell is *in* a class when the class covers more than half of it, *out* when less than 1 %; boundary
    cells do not count. In and out cells weigh half each (a 1 % structure is not drowned by its
    surroundings), so logit 0 is the Bayes boundary with equal priors. Full-batch Adam for ``steps``
    steps (the loss is flat after ~200 on 1-4 labeled cases); weight decay keeps 256 weights from
    memorising ~1000 positive cells. Works inside ``torch.inference_mode()`` too.
    """
    gen = torch.Generator().manual_seed(int(seed))
    k, d = cover.shape[1], feats.shape[1]
    with torch.inference_mode(False), torch.enable_grad():
        # Inference tensors cannot be saved for backward; copy only those (the cells of many labeled
        # slices are the fit's largest allocation).
        feats = feats.clone() if feats.is_inference() else feats
        cover = cover.clone() if cover.is_inference() else cover
        w = (torch.randn(k, d, generator=gen) * 0.01).requires_grad_()
        b = torch.zeros(k, requires_grad=True)
        pos, neg = cover > 0.5, cover < 0.01
        n_pos = pos.sum(0).clamp(min=1).float()
        n_neg = neg.sum(0).clamp(min=1).float()
        sample_w = torch.where(pos, 0.5 / n_pos, torch.where(neg, 0.5 / n_neg, torch.zeros(())))
        opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
        target = pos.float()
        for _ in range(int(steps)):
            opt.zero_grad()
            logits = feats @ w.T + b
            loss = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * sample_w).sum()
            loss.backward()
            opt.step()
    return w.detach(), b.detach()
