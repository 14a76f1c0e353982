"""``supervised``: Dice + cross-entropy on the labeled cases (always on: labeled cases always teach)."""

from __future__ import annotations

from typing import Any

import torch

from semisam.training.losses import ce_loss, dice_loss

from .base import Batch, PartBase, StudentOutput, TrainContext


class Supervised(PartBase):
    """Options: ``dice_weight`` (1.0), ``ce_weight`` (1.0)."""

    name = "supervised"

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        self.dice_weight = float(self.options.get("dice_weight", 1.0))
        self.ce_weight = float(self.options.get("ce_weight", 1.0))

    def losses(
        self, ctx: TrainContext, batch: Batch, out: StudentOutput, iteration: int
    ) -> dict[str, torch.Tensor]:
        return {
            "dice": self.dice_weight * dice_loss(out.logits, batch.y),
            "ce": self.ce_weight * ce_loss(out.logits, batch.y),
        }


def build(config: dict[str, Any], ctx: TrainContext) -> Supervised:
    return Supervised(config)
