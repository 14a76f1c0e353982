"""Registry of specialist networks: small trainable segmenters built from an explicit name + kwargs.

``build_specialist(arch, **kwargs)`` is the only way code (inference, training, checkpoints) makes one,
so a model directory's manifest (``arch`` + ``kwargs``) always rebuilds the same network.

Every specialist is an ``nn.Module`` whose ``forward`` maps a float tensor to logits (class 0 =
background) and which carries two class attributes the inference code reads:

* ``input_kind = "2.5d"``: ``(B, in_slices, H, W) -> (B, n_classes, H, W)``, the centre slice's logits
  (``mamba_unet``, ``unet2d``);
* ``input_kind = "3d"``: ``(B, 1, D, H, W) -> (B, n_classes, D, H, W)`` (``unet3d``);

plus ``n_classes`` and ``in_slices`` attributes on the instance.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .mamba_unet import MambaUNet
from .unet2d import UNet2D
from .unet3d import UNet3D

#: Architecture name -> build function taking the constructor's keyword arguments.
SPECIALIST_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mamba_unet": MambaUNet,
    "unet3d": UNet3D,
    "unet2d": UNet2D,
}

DEFAULT_ARCH = "mamba_unet"


def build_specialist(arch: str, **kwargs) -> nn.Module:
    """Build the registered architecture ``arch`` with ``kwargs`` (e.g. ``n_classes=2``).

    Raises:
        ValueError: unknown ``arch`` or bad keyword arguments (the message names them).
    """
    try:
        factory = SPECIALIST_REGISTRY[arch]
    except KeyError:
        raise ValueError(
            f"unknown specialist architecture {arch!r}; choose one of {sorted(SPECIALIST_REGISTRY)}"
        ) from None
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for specialist {arch!r}: {exc}") from exc


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "DEFAULT_ARCH",
    "SPECIALIST_REGISTRY",
    "build_specialist",
    "count_parameters",
    "MambaUNet",
    "UNet2D",
    "UNet3D",
]
