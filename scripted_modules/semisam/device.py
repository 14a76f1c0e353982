"""The one place where a compute device is chosen. Everything else follows the model's device."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily: the CLI builds its parsers (which list DEVICE_CHOICES) without torch
    import torch

log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn a user's choice (``auto``, ``cpu``, ``cuda``, ``cuda:1``) into a ``torch.device``.

    ``auto`` picks CUDA when it is available, else CPU. Asking for CUDA on a machine without it is an
    error that says so, rather than a silent fall-back.
    """
    import torch

    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} was requested but CUDA is not available on this machine; use 'cpu'"
        )
    return dev
