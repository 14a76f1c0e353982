"""``unet2d``: MONAI's 2D U-Net fed 2.5D (neighbouring slices as channels), the plain CNN next to
``mamba_unet`` at a similar size, for comparing architectures at equal CPU time."""

from __future__ import annotations

import torch
from torch import nn

from .mamba_unet import pad_to_multiple
from .unet3d import monai_unet


class UNet2D(nn.Module):
    """MONAI ``UNet(spatial_dims=2)`` whose input channels are ``in_slices`` neighbouring slices.

    With the defaults (``channels=(16, 32, 64, 128, 128)``, ``strides=(2, 2, 2, 2)``, one residual unit)
    it has about 0.5 M parameters for 3 slices and 2 classes, next to ``mamba_unet``'s 457 k. Forward:
    ``(B, in_slices, H, W)`` float -> ``(B, n_classes, H, W)`` logits of the centre slice; ``H, W``
    multiples of ``pad_multiple`` (the product of the strides used, 16 by default), padded here if not.

    Args:
        in_slices: neighbouring slices stacked as channels (odd; the centre slice is segmented).
        n_classes: output channels (background + one per label).
        channels, strides, num_res_units: passed to MONAI's ``UNet``.
    """

    input_kind = "2.5d"
    pad_multiple = 16

    def __init__(
        self,
        in_slices: int = 3,
        n_classes: int = 2,
        channels: tuple[int, ...] = (16, 32, 64, 128, 128),
        strides: tuple[int, ...] = (2, 2, 2, 2),
        num_res_units: int = 1,
    ):
        super().__init__()
        if in_slices < 1 or in_slices % 2 == 0:
            raise ValueError(f"in_slices must be odd and >= 1, got {in_slices}")
        self.in_slices = in_slices
        self.n_classes = n_classes
        self.net, self.pad_multiple = monai_unet(2, in_slices, n_classes, channels, strides, num_res_units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.net(pad_to_multiple(x, self.pad_multiple))[..., :h, :w]
