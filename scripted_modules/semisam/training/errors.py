"""The training job's errors: each carries the ``kind`` its ``error`` event reports."""

from __future__ import annotations

#: Kinds an ``error`` event may carry (docs/training.md).
ERROR_KINDS = (
    "no_training_cases",
    "corrupt_case",
    "cuda_oom",
    "nan_loss",
    "locked",
    "bad_config",
    "no_checkpoint",
    "damaged_checkpoint",
    "disk_full",
    "internal",
)


class TrainError(ValueError):
    """A training run cannot go on; ``kind`` is one of :data:`ERROR_KINDS`, the message one line."""

    def __init__(self, kind: str, message: str):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown training error kind {kind!r}")
        self.kind = kind
        super().__init__(message)


class Cancelled(Exception):
    """The run was cancelled (SIGTERM or the caller's cancel flag); a checkpoint was written first.

    Attributes:
        iteration: iterations completed.
        checkpoint: folder of the checkpoint to resume from (``None`` if none could be written).
    """

    def __init__(self, iteration: int, checkpoint: str | None):
        self.iteration = iteration
        self.checkpoint = checkpoint
        super().__init__(f"cancelled after iteration {iteration}")
