"""``semisam_plus``: the specialist prompts a frozen generalist on unlabeled cases; the answer teaches back.

After the SemiSAM+ paper (specialist-generalist collaboration for semi-supervised medical segmentation),
without the public code's defects:

* prompts come from the specialist's **own current prediction** on the unlabeled slice (box + points,
  :mod:`semisam.training.methods.semi.prompting`), never from the unlabeled cases' ground truth (there
  is none to read: ``CaseData.mask`` is ``None`` for them);
* no mask prompt is passed at all, so nothing of one batch sample leaks into another's pseudo-label;
* the loss is :func:`semisam.training.losses.confidence_weighted_loss` (Dice + CE weighted per pixel by
  the pseudo-label's confidence) times a ramp-up; it is never divided by its own value.

Schedule (iterations): the first pseudo-labels are made at ``start`` (default 20 % of the run rounded
up to a multiple of ``refresh_every``: a specialist trained from scratch predicts noise before that, and
noise would prompt nonsense), then
renewed every ``refresh_every`` (default ``config.refresh_every``, else 100) as the specialist improves;
the loss weight ramps up over ``rampup`` iterations (sigmoid ramp-up) to ``weight``, from the first
refresh at which some pseudo-label teaches (``teach_start``; not from ``start``: while the case-level
gates of :mod:`semisam.training.methods.semi.pseudo_labels` still hold every case back, a ramp that had
already run out would let the first, least reliable pseudo-labels in at full weight).

Options (``config.parts["semisam_plus"]``): ``weight`` (1.0), ``start`` (int or fraction of the run, 0.2),
``rampup`` (int or fraction, 0.2), ``refresh_every``, ``min_score`` (0.5), ``min_agreement`` (0.5),
``min_coherence`` (0.6) and ``min_case_agreement`` (0.5) (the case-level gates of
:mod:`semisam.training.methods.semi.pseudo_labels`: a case teaches only once the specialist localises the
structure in it and the generalist's answer agrees with where it was pointed), ``min_rel_volume_3d`` (0.25)
and ``min_slices_3d`` (2) (which 3D components of the prediction prompt), ``rounds`` (3), ``n_pos`` (2),
``n_neg`` (1), ``views`` (true: boxes also answered through a closer view, as Propagate does),
``max_fg_fraction`` (0.3: a slice where the specialist calls more than this share foreground is
not prompted), ``embedding_cache_bytes`` (every slice of the run twice, at least 2 GiB:
:func:`run_cache_bytes`), ``presence`` (false; true: a slice where the specialist
predicts the structure but a probe of the generalist's embedding fitted on the labeled cases says it is absent
is not prompted, :mod:`semisam.training.methods.semi.presence`; off by default because on the pallidum
development task it removed the empty teaching slices, 36 of 88 -> 3 of 53, and yet lowered the one-label test
Dice from 0.280 to 0.157), ``absent_weight`` (0.0: the weight of the background such a refused slice teaches)
and ``consensus`` (false; true: only pixels where the generalist's label equals the specialist's teach;
measured on the same task over seeds 0 and 1 with 1 and 2 labels, mean test Dice 0.297 against 0.314 without
it, so off).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from semisam.training.losses import confidence_weighted_loss, sigmoid_rampup
from semisam.training.methods.semi.embedding_store import DEFAULT_MAX_BYTES, EmbeddingStore
from semisam.training.methods.semi.presence import PresenceProbe
from semisam.training.methods.semi.prompting import PromptConfig
from semisam.training.methods.semi.pseudo_labels import (
    ConfidenceConfig,
    PseudoLabel,
    PseudoLabeler,
    label_cases,
)

from .base import Batch, PartBase, StudentOutput, TrainContext

log = logging.getLogger(__name__)


def _iters(value: Any, total: int, default: float) -> int:
    """An option given as iterations (int) or as a fraction of the run (float < 1)."""
    v = default if value is None else value
    if isinstance(v, float) and 0.0 <= v < 1.0:
        return int(round(v * total))
    return int(v)


#: bytes of one cached SAM-family slice embedding (256 x 64 x 64 fp16, plus the file's overhead)
EMBEDDING_FILE_BYTES = 2 * 2**20 + 4096


def run_cache_bytes(ctx: TrainContext) -> int:
    """The embedding cache bound a run needs: every slice of its cases twice (the whole slice and the view
    a box is also answered through), never below :data:`DEFAULT_MAX_BYTES`. At the fixed 2 GiB, a run on
    6 whole-head unlabeled scans (6 x 181 slices) evicted and re-encoded 116-452 slices at every refresh."""
    slices = sum(int(c.image.shape[0]) for c in [*ctx.labeled, *ctx.unlabeled])
    return max(DEFAULT_MAX_BYTES, 2 * slices * EMBEDDING_FILE_BYTES)


def embedding_store(ctx: TrainContext, max_bytes: int | None = None) -> EmbeddingStore:
    """The run's shared :class:`EmbeddingStore` (``STORE/cache/embeddings``), made once per context;
    bounded by ``max_bytes``, else by :func:`run_cache_bytes`."""
    store = ctx.extra.get("embedding_store")
    if store is None:
        bound = run_cache_bytes(ctx) if max_bytes is None else int(max_bytes)
        store = ctx.extra["embedding_store"] = EmbeddingStore(ctx.cache / "embeddings", bound)
    return store


def generalists(ctx: TrainContext) -> list:
    """All generalists of ``--generalist`` (default: LiteMedSAM with its bundled weights), built once."""
    if not ctx.generalists:
        ctx.generalists = [("litemedsam", None)]
    return [ctx.generalist(i) for i in range(len(ctx.generalists))]


def crop_targets(
    pls: list[PseudoLabel], u_index: list[tuple[int, tuple[int, int, int]]], spatial: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-label and weight crops for the batch rows ``u_index``: ``(B, *spatial)`` int64 / float32.

    ``spatial``: ``(H, W)`` (2.5D: the centre slice ``z`` at ``(y0, x0)``) or ``(D, H, W)`` (3D patch at
    ``(z0, y0, x0)``). Parts of a crop outside the volume get weight 0.
    """
    targets = np.zeros((len(u_index), *spatial), dtype=np.int64)
    weights = np.zeros((len(u_index), *spatial), dtype=np.float32)
    for b, (ci, (z, y0, x0)) in enumerate(u_index):
        pl = pls[ci]
        if len(spatial) == 2:
            h, w = spatial
            lab = pl.label[z, y0 : y0 + h, x0 : x0 + w]
            wt = pl.weight[z, y0 : y0 + h, x0 : x0 + w]
            targets[b, : lab.shape[0], : lab.shape[1]] = lab
            weights[b, : wt.shape[0], : wt.shape[1]] = wt
        else:
            d, h, w = spatial
            lab = pl.label[z : z + d, y0 : y0 + h, x0 : x0 + w]
            wt = pl.weight[z : z + d, y0 : y0 + h, x0 : x0 + w]
            targets[b, : lab.shape[0], : lab.shape[1], : lab.shape[2]] = lab
            weights[b, : wt.shape[0], : wt.shape[1], : wt.shape[2]] = wt
    return torch.from_numpy(targets), torch.from_numpy(weights)


class SemiSAMPlus(PartBase):
    """The SemiSAM+ part (see the module docstring for options)."""

    name = "semisam_plus"
    needs_unlabeled = True
    #: pseudo-labels are looked up by ``u_index`` on the un-augmented grid: ``xu`` must stay aligned
    augment_unlabeled = False

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        o = self.options
        self.weight = float(o.get("weight", 1.0))
        self.prompt = PromptConfig(
            rounds=int(o.get("rounds", 3)),
            n_pos=int(o.get("n_pos", 2)),
            n_neg=int(o.get("n_neg", 1)),
            max_fg_fraction=float(o.get("max_fg_fraction", 0.3)),
            min_rel_volume_3d=float(o.get("min_rel_volume_3d", 0.25)),
            min_slices_3d=int(o.get("min_slices_3d", 2)),
            views=bool(o.get("views", True)),
        )
        self.confidence = ConfidenceConfig(
            min_score=float(o.get("min_score", 0.5)),
            min_agreement=float(o.get("min_agreement", 0.5)),
            min_coherence=float(o.get("min_coherence", 0.6)),
            min_case_agreement=float(o.get("min_case_agreement", 0.5)),
            absent_weight=float(o.get("absent_weight", 0.0)),
            consensus=bool(o.get("consensus", False)),
        )
        self.use_presence = bool(o.get("presence", False))
        self.labeler: PseudoLabeler | None = None
        self.pseudo: list[PseudoLabel] | None = None
        self.refreshed_at = -1
        self.teach_start: int | None = None
        self.start = 0
        self.rampup = 0
        self.refresh_every = 100
        self.history: list[dict[str, Any]] = []
        #: set by a part that reads the specialist's probabilities right after a refresh (``cotrain``):
        #: :attr:`prob` then holds ``case_id -> (C, Z, Y, X)`` of the refresh, predicted once for both
        self.keep_prob = False
        self.prob: dict[str, np.ndarray] = {}

    def setup(self, ctx: TrainContext) -> None:
        total = int(getattr(ctx.config, "iterations", 100))
        every = self.options.get("refresh_every") or getattr(ctx.config, "refresh_every", None) or 100
        self.refresh_every = max(1, int(every))
        start = _iters(self.options.get("start"), total, 0.2)
        if "start" not in self.options:  # the default start falls on one of the trainer's refresh points
            start = -(-start // self.refresh_every) * self.refresh_every
        self.start = start
        self.rampup = _iters(self.options.get("rampup"), total, 0.2)
        bound = self.options.get("embedding_cache_bytes")
        store = embedding_store(ctx, None if bound is None else int(bound))
        self.labeler = PseudoLabeler(
            generalists(ctx),
            store,
            ctx.cache / "pseudo_labels",
            self.prompt,
            self.confidence,
            seed=int(getattr(ctx.config, "seed", 0)),
        )
        ctx.extra["semisam_plus"] = self

    # ------------------------------------------------------------------ pseudo-labels
    def _due(self, iteration: int) -> bool:
        if iteration < self.start or not self.needs_unlabeled:
            return False
        return self.pseudo is None or iteration - self.refreshed_at >= self.refresh_every

    def refresh(self, ctx: TrainContext, iteration: int) -> None:
        """Make the pseudo-labels with the current specialist when due (idempotent within an iteration)."""
        if not ctx.unlabeled or not self._due(iteration) or ctx.cancel():
            return
        assert self.labeler is not None, "setup() was not called"
        ctx.emit({"event": "phase", "phase": "pseudo_labels", "done": 0, "total": len(ctx.unlabeled)})
        enc0, hit0 = self.labeler.embeddings.encoded, self.labeler.embeddings.hits
        if self.use_presence and self.labeler.presence is None and not ctx.labeled:
            log.warning("semisam_plus: option presence is on but there is no labeled case to fit it on")
        if self.use_presence and self.labeler.presence is None and ctx.labeled:
            # The labeled set is fixed for the run: one fit, at the first refresh (labeled slices are
            # encoded once and cached with the unlabeled ones).
            probe = PresenceProbe(self.labeler.generalists[0], self.labeler.embeddings)
            probe.fit(ctx.labeled, ctx.n_classes)
            self.labeler.set_presence(probe)

        prob: dict = {}
        pseudo = label_cases(
            self.labeler,
            ctx.student,
            ctx.unlabeled,
            ctx.device,
            progress=lambda d, n: ctx.emit(
                {"event": "phase", "phase": "pseudo_labels", "done": d, "total": n}
            ),
            keep=prob if self.keep_prob else None,
            cancel=ctx.cancel,
        )
        if pseudo is None:
            log.info(
                "semisam_plus: pseudo-labels at iteration %d cancelled; the previous ones stay", iteration
            )
            return
        self.pseudo, self.prob = pseudo, prob
        self.refreshed_at = iteration
        # Unlabeled samples then centre (foreground_fraction of the time) on where pseudo-labels teach
        # foreground: uniform samples of a 10-slice structure in a 32-slice scan mostly see weight 0.
        ctx.unlabeled_focus = [
            np.argwhere((p.label > 0) & (p.weight > 0)).astype(np.int32) for p in self.pseudo
        ]
        teach = [p.stats.get("teaching_slices", 0) for p in self.pseudo]
        if self.teach_start is None and sum(teach) > 0:
            self.teach_start = iteration
        entry = {
            "iteration": iteration,
            "cached": sum(p.from_cache for p in self.pseudo),
            "teaching_slices": int(sum(teach)),
            "gated_cases": int(sum(bool(p.stats.get("gated")) for p in self.pseudo)),
            "refused_slices": int(sum(p.stats.get("refused_slices", 0) for p in self.pseudo)),
            "coherence": [p.stats.get("coherence") for p in self.pseudo],
            "case_agreement": [p.stats.get("case_agreement") for p in self.pseudo],
            "encoded": self.labeler.embeddings.encoded - enc0,
            "embedding_hits": self.labeler.embeddings.hits - hit0,
        }
        self.history.append(entry)
        ctx.emit(
            {
                "event": "phase",
                "phase": "pseudo_labels",
                "done": len(self.pseudo),
                "total": len(self.pseudo),
                **entry,
            }
        )
        log.info("semisam_plus pseudo-labels at iteration %d: %s", iteration, entry)

    # ------------------------------------------------------------------ loss
    def losses(
        self, ctx: TrainContext, batch: Batch, out: StudentOutput, iteration: int
    ) -> dict[str, torch.Tensor]:
        if out.logits_u is None or not batch.u_index:
            return {}
        self.refresh(ctx, iteration)
        if self.pseudo is None:
            return {"pseudo": out.logits_u.sum() * 0.0}
        target, weight = crop_targets(self.pseudo, batch.u_index, tuple(out.logits_u.shape[2:]))
        target, weight = target.to(out.logits_u.device), weight.to(out.logits_u.device)
        if self.teach_start is None:
            return {"pseudo": out.logits_u.sum() * 0.0}
        lam = self.weight * sigmoid_rampup(iteration - self.teach_start, self.rampup)
        if float(weight.sum()) <= 0.0:
            return {"pseudo": out.logits_u.sum() * 0.0}
        return {"pseudo": lam * confidence_weighted_loss(out.logits_u, target, weight)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "refreshed_at": int(self.refreshed_at),
            "teach_start": -1 if self.teach_start is None else int(self.teach_start),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Pseudo-labels are remade from the resumed weights at the next iteration (a cache file read
        # when the weights match the ones that made them).
        self.refreshed_at = int(state.get("refreshed_at", -1))
        ts = int(state.get("teach_start", -1))
        self.teach_start = None if ts < 0 else ts
        self.pseudo = None


def build(config: dict[str, Any], ctx: TrainContext) -> SemiSAMPlus:
    return SemiSAMPlus(config)
