"""``mean_teacher``: an EMA teacher whose predictions on noisy input the student must agree with.

Tarvainen & Valpola (2017), as the 3D semi-supervised baselines use it (Yu et al., UA-MT, 2019):

* teacher = exponential moving average of the student's weights (``ema_decay``, with the usual
  ``min(1 - 1/(t+1), decay)`` warm-up so the early teacher follows the student); BatchNorm buffers
  are copied. The teacher runs in eval mode, without gradients.
* the teacher sees the same (augmented) batch plus Gaussian noise ``clamp(N(0, noise), +-2 noise)``;
* consistency = MSE between the student's and teacher's softmax over the labeled and unlabeled rows
  of the batch, weighted by ``consistency * sigmoid_rampup(iteration, rampup)`` (ramp-up length
  ``rampup`` iterations; default 40 % of the run).

``uncertainty: true`` is UA-MT: the teacher makes ``passes`` stochastic forward passes with fresh
input noise each (our students have no dropout, so the input noise is the only stochasticity; the
paper uses T = 8 with dropout), their mean softmax's entropy marks pixels where the teacher is
uncertain, and only pixels below the threshold ``(0.75 + 0.25 * ramp) * ln(C)`` enter the
consistency.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from semisam.training.losses import consistency_mse, entropy, sigmoid_rampup

from .base import Batch, PartBase, StudentOutput, TrainContext


class MeanTeacher(PartBase):
    """Options: ``ema_decay`` (0.99), ``consistency`` (0.1), ``rampup`` (iterations; default 0.4 x run),
    ``noise`` (0.1), ``uncertainty`` (false), ``passes`` (4), ``labeled`` (true: consistency on the
    labeled rows too)."""

    name = "mean_teacher"
    needs_unlabeled = True

    def __init__(self, config: dict[str, Any] | None = None, iterations: int = 100):
        super().__init__(config)
        o = self.options
        known = {"ema_decay", "consistency", "rampup", "noise", "uncertainty", "passes", "labeled"}
        unknown = sorted(set(o) - known)
        if unknown:
            raise ValueError(f"mean_teacher: unknown option(s) {unknown}; known: {sorted(known)}")
        self.ema_decay = float(o.get("ema_decay", 0.99))
        self.weight = float(o.get("consistency", 0.1))
        self.rampup = float(o.get("rampup", 0.4 * iterations))
        self.noise = float(o.get("noise", 0.1))
        self.uncertainty = bool(o.get("uncertainty", False))
        self.passes = max(1, int(o.get("passes", 4)))
        self.on_labeled = bool(o.get("labeled", True))
        self.teacher: torch.nn.Module | None = None
        self.last_certain_fraction: float | None = None

    def setup(self, ctx: TrainContext) -> None:
        self.teacher = copy.deepcopy(ctx.student).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def _noisy(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype) * self.noise
        return x + n.clamp_(-2 * self.noise, 2 * self.noise)

    def losses(
        self, ctx: TrainContext, batch: Batch, out: StudentOutput, iteration: int
    ) -> dict[str, torch.Tensor]:
        assert self.teacher is not None, "setup() was not called"
        rows, logits = [], []
        if self.on_labeled or batch.xu is None:
            rows.append(batch.x)
            logits.append(out.logits)
        if batch.xu is not None and out.logits_u is not None:
            rows.append(batch.xu)
            logits.append(out.logits_u)
        x = torch.cat(rows)
        s_logits = torch.cat(logits)
        g = ctx.generator(iteration, salt=7)
        ramp = sigmoid_rampup(iteration, self.rampup)
        with torch.no_grad():
            if not self.uncertainty:
                t_logits = self.teacher(self._noisy(x, g)).float()
                mask = None
            else:
                probs = torch.stack(
                    [torch.softmax(self.teacher(self._noisy(x, g)).float(), 1) for _ in range(self.passes)]
                ).mean(0)
                t_logits = torch.log(probs.clamp_min(1e-8))
                threshold = (0.75 + 0.25 * ramp) * math.log(ctx.n_classes)
                mask = (entropy(probs) < threshold).float()
                self.last_certain_fraction = float(mask.mean())
        loss = consistency_mse(s_logits, t_logits, mask)
        return {"consistency": (self.weight * ramp) * loss}

    @torch.no_grad()
    def after_step(self, ctx: TrainContext, iteration: int) -> None:
        assert self.teacher is not None
        alpha = min(1.0 - 1.0 / (iteration + 2), self.ema_decay)
        for t, s in zip(self.teacher.parameters(), ctx.student.parameters(), strict=True):
            t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
        for t, s in zip(self.teacher.buffers(), ctx.student.buffers(), strict=True):
            t.copy_(s)

    def state_dict(self) -> dict[str, Any]:
        assert self.teacher is not None
        return {"teacher": {k: v.detach().cpu() for k, v in self.teacher.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.teacher is not None
        self.teacher.load_state_dict(state["teacher"])


def build(config: dict[str, Any], ctx: TrainContext) -> MeanTeacher:
    return MeanTeacher(config, iterations=int(ctx.config.iterations))
