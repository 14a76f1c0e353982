"""The retraining engine: ``semisam train STORE`` and its Python API (contract: docs/training.md).

    from semisam.training import TrainConfig, train
    result = train(store_root, TrainConfig(method="mean_teacher", iterations=200, seed=0, device="cpu"))

Parts: :mod:`.config` (TrainConfig), :mod:`.events` (the JSON-lines event stream), :mod:`.data`
(cases on the model grid, slab/patch sampling, augmentation), :mod:`.trainer` (the loop),
:mod:`.job` (lock, signals, checkpoints, registry), :mod:`.validation_dice`, :mod:`.promote`, :mod:`.ddp`,
:mod:`.losses`, :mod:`.methods` (the method parts and, in :mod:`.methods.semi`, what the semi-supervised
parts teach from the generalist). Importing this package does not import torch.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "TrainConfig": "semisam.training.config",
    "TrainResult": "semisam.training.job",
    "TrainError": "semisam.training.errors",
    "train": "semisam.training.job",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'semisam.training' has no attribute {name!r}")


__all__ = sorted(_LAZY)
