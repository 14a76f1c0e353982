"""A Mamba (selective state space) mixer for 2D feature maps, bidirectional over the row-major token order.

Layout follows Mamba-1 (``mamba_ssm.modules.mamba_simple.Mamba``): ``in_proj`` -> (x, z); x through a
short depthwise convolution and SiLU; ``x_proj`` -> (dt, B, C); ``dt_proj``; selective scan with
``A = -exp(A_log)``, skip ``D``; gate ``silu(z)``; ``out_proj``. The causal 1D convolution of Mamba is a
depthwise 3x3 2D convolution here (as in VMamba), because neighbours in a feature map are spatial, not
just the previous token. The scan runs forwards and backwards over the flattened ``H*W`` tokens (shared
weights, outputs summed) so every token sees the whole slice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .selective_scan import selective_scan


class Mamba2D(nn.Module):
    """Residual Mamba mixer on ``(B, C, H, W)`` -> ``(B, C, H, W)`` (``C = d_model``).

    Args:
        d_model: channels in and out.
        d_state: state size ``N`` per channel of the scan.
        expand: inner width ``d_inner = expand * d_model``.
        dt_rank: rank of the ``dt`` projection (default ``ceil(d_model / 16)``).
        scan_backend: passed to :func:`selective_scan` (``auto`` picks the CUDA kernel on GPU).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 8,
        expand: float = 1.0,
        dt_rank: int | None = None,
        scan_backend: str = "auto",
    ):
        super().__init__()
        self.d_inner = int(round(expand * d_model))
        self.d_state = d_state
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.scan_backend = scan_backend
        self.norm = nn.LayerNorm(d_model)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv = nn.Conv2d(self.d_inner, self.d_inner, 3, padding=1, groups=self.d_inner)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        # Mamba's initialisation: A = -(1..N) per channel, dt in [1e-3, 1e-1] (inverse softplus as bias).
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, L, C), L = H*W row-major
        xz = self.in_proj(self.norm(tokens))
        xi, z = xz.chunk(2, dim=-1)  # (B, L, d_inner) each
        xi = xi.transpose(1, 2).reshape(b, self.d_inner, h, w)
        xi = F.silu(self.conv(xi)).flatten(2)  # (B, d_inner, L)
        # Both directions in one scan call: the backward sequence is the token order reversed.
        seq = torch.cat([xi, xi.flip(-1)], dim=0)  # (2B, d_inner, L)
        dbc = self.x_proj(seq.transpose(1, 2))  # (2B, L, r + 2N)
        dt, B, C = torch.split(dbc, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (2B, d_inner, L); bias added in the scan
        y = selective_scan(
            seq,
            dt,
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2),
            C.transpose(1, 2),
            None,
            None,
            self.dt_proj.bias.float(),
            delta_softplus=True,
            backend=self.scan_backend,
        )
        y = y[:b] + y[b:].flip(-1) + xi * self.D[None, :, None]
        y = y * F.silu(z.transpose(1, 2))
        out = self.out_proj(y.transpose(1, 2))  # (B, L, C)
        return x + out.transpose(1, 2).reshape(b, c, h, w)
