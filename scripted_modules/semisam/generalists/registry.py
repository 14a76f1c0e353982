"""The registry of generalist build functions (like segment-anything's ``sam_model_registry``).

Each entry is ``build(checkpoint: str | Path | None, device: torch.device) -> PromptableModel``. Imports
of optional packages (segment-anything, sam2) happen inside the build functions, so the registry itself
imports nothing heavy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from ..device import resolve_device
from .base import PromptableModel

log = logging.getLogger(__name__)

BuildFn = Callable[[str | Path | None, torch.device], PromptableModel]


def _litemedsam(checkpoint: str | Path | None, device: torch.device) -> PromptableModel:
    from .litemedsam import build_litemedsam

    return build_litemedsam(checkpoint, device)


def _sam(checkpoint: str | Path | None, device: torch.device) -> PromptableModel:
    from .sam import build_sam

    return build_sam(checkpoint, device, name="sam")


def _medsam(checkpoint: str | Path | None, device: torch.device) -> PromptableModel:
    from .sam import build_sam

    return build_sam(checkpoint, device, name="medsam")


def _sam2(checkpoint: str | Path | None, device: torch.device) -> PromptableModel:
    from .sam2_model import build_sam2

    return build_sam2(checkpoint, device, name="sam2")


def _medsam2(checkpoint: str | Path | None, device: torch.device) -> PromptableModel:
    from .sam2_model import build_sam2

    return build_sam2(checkpoint, device, name="medsam2")


#: name -> build function. ``litemedsam`` is the default and the only one with bundled weights.
generalist_registry: dict[str, BuildFn] = {
    "litemedsam": _litemedsam,
    "sam": _sam,
    "medsam": _medsam,
    "sam2": _sam2,
    "medsam2": _medsam2,
}
GENERALIST_NAMES = tuple(generalist_registry)
DEFAULT_GENERALIST = "litemedsam"


def parse_model_spec(spec: str | None) -> tuple[str, Path | None]:
    """``"NAME[:CHECKPOINT]"`` (the CLI's ``--model``) -> ``(name, checkpoint or None)``."""
    if not spec:
        return DEFAULT_GENERALIST, None
    name, sep, ckpt = spec.partition(":")
    name = name.strip().lower()
    if name not in generalist_registry:
        raise ValueError(
            f"unknown generalist {name!r} in --model {spec!r}; choose one of {', '.join(GENERALIST_NAMES)}"
        )
    return name, (Path(ckpt).expanduser() if sep and ckpt else None)


def build_generalist(
    name: str = DEFAULT_GENERALIST,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    backend: str | None = None,
) -> PromptableModel:
    """Build a generalist by registry name, with weights from ``checkpoint`` (a user file) or its default.

    Args:
        name: one of :data:`GENERALIST_NAMES`.
        checkpoint: ``.pth``/``.pt`` (loaded with ``weights_only=True``) or ``.safetensors``; ``None`` uses
            the bundled weights (LiteMedSAM only; the others need a file).
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a ``torch.device``.
        backend: image-encoder runtime for SAM-style models: ``"auto"`` (default; onnxruntime on CPU,
            exported at first use), ``"onnxruntime"`` or ``"eager"`` (the fp32 PyTorch reference).
            ``$SEMISAM_ENCODER_BACKEND`` sets the default.

    Raises:
        ValueError: unknown name.
        semisam.generalists.CheckpointError: the file is missing, corrupt, pickled objects or the wrong
            architecture; the message names the file.
    """
    key = name.strip().lower()
    if key not in generalist_registry:
        raise ValueError(f"unknown generalist {name!r}; choose one of {', '.join(GENERALIST_NAMES)}")
    dev = resolve_device(device)
    model = generalist_registry[key](checkpoint, dev)
    if hasattr(model, "set_fast_encoder"):
        from .fast_encoder import apply_backend

        apply_backend(model, backend)
    log.info(
        "built generalist %s on %s from %s (encoder: %s)",
        key,
        dev,
        checkpoint or "bundled weights",
        getattr(model, "encoder_backend", "eager"),
    )
    return model
