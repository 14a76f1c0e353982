"""Safe, strict loading of user checkpoint files (never unpickles arbitrary objects).

``.safetensors`` files are read with safetensors; anything else with ``torch.load(weights_only=True)``.
Wrapped state dicts (``{"model": ...}``, ``{"state_dict": ...}``) are unwrapped. Every failure is a
:class:`CheckpointError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import threading
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from semisam.fileio import atomic_path, sha256_file

# One error type for every checkpoint problem, a specialist's model folder or a generalist's weight file:
# both mean "this file cannot be trusted or used" and callers (CLI, Slicer, the store) catch one class.
from semisam.model_folder import CheckpointError

log = logging.getLogger(__name__)

_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "net")

__all__ = ["CheckpointError", "checkpoint_sha256", "load_strict", "read_state_dict", "save_state_dict"]

_digests: dict[tuple[str, int, int], str] = {}
_digests_lock = threading.Lock()


def checkpoint_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a checkpoint file, remembered per (path, size, mtime) for this process.

    A model's identity (the embedding cache's key) includes it; hashing LiteMedSAM's 39 MB takes
    ~0.1 s, a 2.5 GB SAM ViT-H a few seconds, so a process building the same model twice hashes once.
    """
    p = Path(path).resolve()
    st = os.stat(p)
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _digests_lock:
        digest = _digests.get(key)
    if digest is None:
        digest = sha256_file(p)
        with _digests_lock:
            _digests[key] = digest
    return digest


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict on the CPU.

    Raises:
        CheckpointError: the file is missing, corrupt, holds pickled objects other than tensors, or is not
            a mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    kind = sniff_checkpoint(path)
    if kind is None:
        raise CheckpointError(
            f"checkpoint {path}: not a checkpoint (neither a PyTorch .pth/.pt file nor safetensors; "
            "wrong file, or a corrupt or incomplete copy)"
        )
    try:
        if kind == "safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message goes on to suggest weights_only=False, which runs arbitrary code: never quoted.
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found:
            raise CheckpointError(
                f"checkpoint {path}: refused to load - it contains pickled Python objects "
                f"({found.group(1)}), not only tensors; save the state dict alone (or as safetensors)"
            ) from None
        raise CheckpointError(
            f"checkpoint {path}: not a readable PyTorch checkpoint (corrupt or incomplete pickle data)"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path}: not a readable PyTorch/safetensors file ({_first_sentence(exc)})"
        ) from None
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise CheckpointError(
            f"checkpoint {path}: not a readable checkpoint ({type(exc).__name__}: {_first_sentence(exc)})"
        ) from None
    return unwrap_state_dict(obj, path)


def sniff_checkpoint(path: Path) -> str | None:
    """``"torch"`` (zip archive or legacy pickle), ``"safetensors"``, or ``None`` (not a checkpoint),
    from the first bytes only: random bytes never reach an unpickler."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 1 < n < min(path.stat().st_size, 100 << 20) and head[8:9] == b"{":
            return "safetensors"
    return None


def _first_sentence(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    cut = text.find(". ")
    text = text if cut < 0 else text[: cut + 1]
    return text[:200]


def unwrap_state_dict(obj: object, path: str | Path) -> dict[str, torch.Tensor]:
    """Unwrap ``{"model": sd}``-style containers; check it maps strings to tensors."""
    for _ in range(2):
        if isinstance(obj, Mapping):
            for key in _WRAPPER_KEYS:
                if key in obj and isinstance(obj[key], Mapping):
                    obj = obj[key]
                    break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"checkpoint {path}: expected a state dict (names -> tensors), got {type(obj).__name__}"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {path}: entries that are not tensors: {_short(bad)}")
    return dict(obj)


def _short(names: Iterable[str], n: int = 5) -> str:
    names = sorted(str(x) for x in names)
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, what: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with a message naming the file and the mismatch.

    Args:
        what: the architecture the file should hold, for the message (e.g. ``"LiteMedSAM"``).
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_short(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch: {_short(shapes, 3)}")
    if problems:
        raise CheckpointError(f"checkpoint {path}: not a {what} checkpoint — " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def save_state_dict(module: nn.Module | Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write a state dict as ``.safetensors`` (or ``torch.save`` for other suffixes), atomically."""
    path = Path(path)
    state = module.state_dict() if isinstance(module, nn.Module) else dict(module)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp))
        else:
            torch.save(state, tmp)
    return path
