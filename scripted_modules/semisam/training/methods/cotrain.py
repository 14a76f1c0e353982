"""``cotrain``: the specialist's confident predictions teach the generalist's decoder in turn.

The other half of SC-SAM's co-training, on top of ``semisam_plus`` (method ``semisam_plus+cotrain``):
``semisam_plus`` has the generalist, prompted by the specialist, teach the specialist on unlabeled cases;
after each of its pseudo-label refreshes this part fine-tunes the generalist's mask decoder (and IoU head)
for a few steps, with the same decoder training as ``semisam adapt`` (:func:`semisam.adapt.job.fine_tune`,
the same losses, boxes, views, correction clicks, "not here" neighbours, and on the labeled cases the
look-alike boxes, kept off every labeled class), on

* the labeled cases' ground truth (``labeled``: true), which anchors it, and
* the unlabeled slices where both models are sure: the pseudo-label teaches there (the generalist's
  answer passed ``semisam_plus``'s gates) and the specialist's mean probability over its own predicted
  foreground on the slice is at least ``min_confidence``; the target is the specialist's prediction (its
  main 3D components). The slices just beyond the ends of that prediction teach "not here" only where
  the specialist gives the class less than ``1 - min_confidence`` everywhere on the slice.

The next refresh then prompts the updated decoder (its pseudo-labels are cached under the new decoder's
digest, :meth:`PseudoLabeler.rekey`). The decoder only lives in the run: it is saved with the run's
checkpoints (a resumed run continues from it) but never registered as a generalist version; ``semisam
adapt`` (validated against the frozen generalist) is what changes the generalist Propagate uses.

Options (``config.parts["cotrain"]``): ``steps`` (25 decoder steps per refresh), ``batch`` (4),
``lr`` (1e-4), ``max_minutes`` (2.0 per refresh), ``min_confidence`` (0.9), ``labeled`` (true).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from semisam.adapt.decoder import adaptable
from semisam.adapt.job import AdaptConfig, AdaptError, Embeddings, fine_tune
from semisam.adapt.samples import Sample, case_samples

from .base import PartBase, TrainContext, rng_for
from .semi.prompting import main_components_mask
from .semi.pseudo_labels import PseudoLabel, predict_volume

log = logging.getLogger(__name__)


class _Cancel:
    """The run's cancel (a callable) as :func:`semisam.adapt.job.fine_tune` asks it (``is_set()``)."""

    def __init__(self, cancelled) -> None:
        self.is_set = cancelled


class GridCase:
    """A case's ``(Z, Y, X)`` model-grid image in [0, 1], sliced as :class:`semisam.adapt.job.Embeddings`
    reads it (the same slices ``semisam_plus`` encodes, so their embeddings are shared)."""

    def __init__(self, image: torch.Tensor) -> None:
        self.array = image.detach().to("cpu", torch.float32).numpy()

    def image(self, k: int) -> np.ndarray:
        return self.array[k]


def confident_samples(
    case: int,
    prob: np.ndarray,
    pseudo: PseudoLabel,
    cls: int,
    min_confidence: float,
    rng: np.random.Generator,
    main: np.ndarray,
) -> list[Sample]:
    """Samples of class ``cls`` on one unlabeled case where both models are sure (module docstring).

    Args:
        case: the case's index in the :class:`Embeddings` case list.
        prob: ``(Z, Y, X)`` the specialist's probability of ``cls``.
        pseudo: the case's pseudo-label (``weight > 0`` where the generalist's answer teaches).
        main: ``(Z, Y, X)`` bool, the specialist's main 3D components of ``cls`` (the target).
    """
    teaches = (pseudo.weight > 0).reshape(prob.shape[0], -1).any(axis=1)
    out = []
    for s in case_samples(case, main, rng):
        if s.empty:
            if float(prob[s.slice].max()) < 1.0 - min_confidence:
                out.append(s)
        elif teaches[s.slice] and float(prob[s.slice][main[s.slice]].mean()) >= min_confidence:
            out.append(s)
    return out


class CoTrain(PartBase):
    """The ``cotrain`` part (see the module docstring for options)."""

    name = "cotrain"
    needs_unlabeled = True

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        o = self.options
        self.steps = int(o.get("steps", 25))
        self.batch = int(o.get("batch", 4))
        self.lr = float(o.get("lr", 1e-4))
        self.max_minutes = float(o.get("max_minutes", 2.0))
        self.min_confidence = float(o.get("min_confidence", 0.9))
        self.use_labeled = bool(o.get("labeled", True))
        self.plus = None
        self.model = None
        self.trained_at = -1
        self.rounds = 0
        self.history: list[dict[str, Any]] = []

    def setup(self, ctx: TrainContext) -> None:
        plus = ctx.extra.get("semisam_plus")
        if plus is None or plus.labeler is None:
            raise ValueError(
                "cotrain teaches the generalist that semisam_plus prompts: use --method semisam_plus+cotrain"
            )
        model = plus.labeler.generalists[0]
        if not adaptable(model):
            raise ValueError(f"cotrain trains a SAM-family mask decoder; generalist {model.name!r} has none")
        if getattr(model, "_fast_decoder", None) is not None:
            # An exported decoder graph (onnxruntime, LiteMedSAM's default on CPU) holds the frozen weights:
            # through it the trained decoder would never answer. The eager decoder answers for the run.
            model.set_fast_decoder(None)
        plus.keep_prob = True  # the refresh's predictions, not a second pass over every unlabeled case
        self.plus, self.model = plus, model
        ctx.extra["cotrain"] = self

    def refresh(self, ctx: TrainContext, iteration: int) -> None:
        """After ``semisam_plus`` made its pseudo-labels at ``iteration``: a round of decoder training."""
        plus = self.plus
        if (
            plus is None
            or plus.pseudo is None
            or plus.refreshed_at != iteration
            or self.trained_at == iteration
        ):
            return
        if plus.teach_start is None:  # no case passed semisam_plus's gates yet: nothing is sure
            return
        self.trained_at = iteration
        ctx.emit({"event": "phase", "phase": "cotrain", "done": 0, "total": self.steps})
        cases, samples, n_unlabeled = self._samples(ctx, plus.pseudo, iteration)
        entry: dict[str, Any] = {
            "iteration": iteration,
            "unlabeled_samples": n_unlabeled,
            "samples": len(samples),
        }
        if n_unlabeled == 0:
            entry["skipped"] = "no unlabeled slice where both models are sure"
        else:
            cfg = AdaptConfig(
                batch=self.batch,
                lr=self.lr,
                max_minutes=self.max_minutes,
                seed=int(getattr(ctx.config, "seed", 0)) + self.rounds,
                device=str(ctx.device),
            )
            embeddings = Embeddings(self.model, cases, plus.labeler.embeddings)
            before = {k: v.detach().clone() for k, v in self.model.mask_decoder.state_dict().items()}
            try:
                # the run's cancel ends the round between two steps (up to max_minutes otherwise)
                summary = fine_tune(
                    self.model, samples, embeddings, cfg, self.steps, lambda e: None, _Cancel(ctx.cancel)
                )
            except AdaptError as exc:
                if exc.code != "cancelled":
                    raise
                # a half-trained decoder is not kept: the checkpoint the cancel writes holds the last
                # whole round, and a resumed run makes this round again
                self.model.mask_decoder.load_state_dict(before)
                self.trained_at = -1
                entry["cancelled"] = True
                self.history.append(entry)
                ctx.emit({"event": "phase", "phase": "cotrain", "done": 0, "total": self.steps, **entry})
                log.info("cotrain at iteration %d: cancelled; the decoder is as before the round", iteration)
                return
            plus.labeler.rekey()
            self.rounds += 1
            entry.update(steps=summary["steps"], seconds=summary["seconds"], last=summary["last"])
        self.history.append(entry)
        ctx.emit({"event": "phase", "phase": "cotrain", "done": self.steps, "total": self.steps, **entry})
        log.info("cotrain at iteration %d: %s", iteration, entry)

    def _samples(
        self, ctx: TrainContext, pseudo: list[PseudoLabel], iteration: int
    ) -> tuple[list[GridCase], list[Sample], int]:
        """``(cases, samples, number of unlabeled samples)`` of one round."""
        cases: list[GridCase] = []
        samples: list[Sample] = []
        classes = range(1, ctx.n_classes)
        if self.use_labeled:
            for c in ctx.labeled:
                if c.mask is None:
                    continue
                mask, grid = c.mask.numpy(), GridCase(c.image)
                for cls in classes:
                    rng = rng_for(int(ctx.config.seed), iteration, len(cases), cls)
                    samples += case_samples(len(cases), mask == cls, rng, image=grid.image, avoid=mask > 0)
                cases.append(grid)
        n_labeled = len(samples)
        prompt = self.plus.prompt
        for c, pl in zip(ctx.unlabeled, pseudo, strict=True):
            if pl.stats.get("gated") or not pl.stats.get("teaching_slices", 0):
                continue  # semisam_plus's case gates held it back: the specialist is not sure there
            prob = self.plus.prob.get(c.case_id)
            if prob is None:  # its pseudo-label came from the cache: predict it now
                prob = predict_volume(ctx.student, c.image, ctx.device)
            for cls in classes:
                main = main_components_mask(prob[cls], prompt)
                rng = rng_for(int(ctx.config.seed), iteration, len(cases), cls)
                samples += confident_samples(len(cases), prob[cls], pl, cls, self.min_confidence, rng, main)
            cases.append(GridCase(c.image))
        self.plus.prob = {}  # held only until this round has read them
        return cases, samples, len(samples) - n_labeled

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"trained_at": int(self.trained_at), "rounds": int(self.rounds)}
        if self.model is not None and self.rounds:
            state["decoder"] = {k: v.detach().cpu() for k, v in self.model.mask_decoder.state_dict().items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trained_at = int(state.get("trained_at", -1))
        self.rounds = int(state.get("rounds", 0))
        if "decoder" in state and self.model is not None:
            self.model.mask_decoder.load_state_dict(state["decoder"])
            if self.plus is not None and self.plus.labeler is not None:
                self.plus.labeler.rekey()


def build(config: dict[str, Any], ctx: TrainContext) -> CoTrain:
    return CoTrain(config)
