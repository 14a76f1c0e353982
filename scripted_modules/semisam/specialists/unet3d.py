"""``unet3d``: the reference specialist, MONAI's 3D U-Net as the semi-supervised baselines use it."""

from __future__ import annotations

import math

import torch
from monai.networks.nets import UNet
from torch import nn


def monai_unet(spatial_dims: int, in_channels: int, n_classes: int, channels, strides, num_res_units: int):
    """``(MONAI UNet, pad multiple)``: the network, and what every input side must be a multiple of.

    Raises:
        ValueError: fewer than 2 classes (background + labels).
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2 (background + labels), got {n_classes}")
    # MONAI's UNet downsamples once per level after the first (len(channels) - 1 strides are used):
    # window sides must be multiples of the product of those strides.
    used = list(strides)[: max(0, len(channels) - 1)]
    multiple = math.prod(max(s) if isinstance(s, list | tuple) else int(s) for s in used)
    net = UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=n_classes,
        channels=tuple(channels),
        strides=tuple(strides),
        num_res_units=num_res_units,
    )
    return net, multiple


class UNet3D(nn.Module):
    """MONAI ``UNet(spatial_dims=3, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)``.

    4.8 M parameters with 1 input channel and 2 classes. Forward: ``(B, 1, D, H, W)`` float ->
    ``(B, n_classes, D, H, W)`` logits; ``D, H, W`` multiples of ``pad_multiple`` (the product of
    ``strides``, 16 by default; :func:`semisam.inference.segment` sizes its windows so).

    Args:
        n_classes: output channels (background + one per label).
        in_channels: input channels (1: the preprocessed scan).
        channels, strides, num_res_units: passed to MONAI's ``UNet``.
    """

    input_kind = "3d"
    pad_multiple = 16

    def __init__(
        self,
        n_classes: int = 2,
        in_channels: int = 1,
        channels: tuple[int, ...] = (16, 32, 64, 128, 256),
        strides: tuple[int, ...] = (2, 2, 2, 2),
        num_res_units: int = 2,
    ):
        super().__init__()
        self.n_classes = n_classes
        self.in_slices = 1
        self.net, self.pad_multiple = monai_unet(3, in_channels, n_classes, channels, strides, num_res_units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
