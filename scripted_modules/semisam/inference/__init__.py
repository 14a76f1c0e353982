"""Inference with a specialist: :func:`segment` a :class:`~semisam.scan.volume.Volume` into a
:class:`SegmentationResult` on the input grid (labels, per-voxel uncertainty, per-slice review order)."""

from .preprocess import GridMap, model_grid, orientation_axes, to_input_grid, to_model_grid
from .segment import DEFAULT_INFERENCE, ProgressFn, SegmentationResult, prepare_model, segment

__all__ = [
    "DEFAULT_INFERENCE",
    "GridMap",
    "ProgressFn",
    "SegmentationResult",
    "model_grid",
    "orientation_axes",
    "prepare_model",
    "segment",
    "to_input_grid",
    "to_model_grid",
]
