"""A faster image encoder for CPU: the eager encoder exported once to ONNX and run by onnxruntime.

Measured on the 2-core AMD EPYC (Zen 3, AVX2, no AVX-512/AMX) development machine, LiteMedSAM's encoder
runs 2-4x faster in onnxruntime (graph optimisations: Conv+BN folding, MatMul+Add fusion, NCHWc
convolutions) than in eager PyTorch, with features equal to ~1e-6 (see Testing/benchmarks/encoder.py).
bf16 autocast is not used: this CPU has no bf16 matrix units, so it only adds conversions.

The export happens at first use into ``$SEMISAM_CACHE_DIR/onnx`` (default ``~/.cache/semisam/onnx``),
named by the sha256 of the encoder's weights, written atomically (temp file + rename); nothing is shipped
or downloaded. ``SEMISAM_ENCODER_BACKEND=eager`` (or ``backend="eager"``) keeps the eager fp32 reference.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from semisam.fileio import atomic_path

from .onnx_cache import cached_session, onnx_cache_dir, onnxruntime_available, weights_sha256

log = logging.getLogger(__name__)

#: bump when the export recipe changes, so stale cached files are not reused
EXPORT_VERSION = "1"
BACKENDS = ("auto", "eager", "onnxruntime")
#: protobuf's 2 GiB limit: larger encoders (SAM ViT-H) stay eager
MAX_ONNX_PARAM_BYTES = 1_800_000_000


def export_encoder(encoder: nn.Module, image_size: int, path: Path) -> Path:
    """Export ``encoder`` (``(B, 3, S, S)`` -> features) to ONNX at ``path``, atomically.

    The batch is fixed at 1 (TinyViT's reshapes trace the batch size as a constant; a dynamic batch axis
    exports but fails at run time). Export runs on a CPU copy in fp32 so the file does not depend on where the
    model lives.
    """
    dummy = torch.rand(1, 3, image_size, image_size)
    # atomic_path: a concurrent process (Slicer + a CLI run) never loads a half-written export
    with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about python ints in TinyViT's shapes
        torch.onnx.export(
            encoder,
            (dummy,),
            str(tmp),
            input_names=["image"],
            output_names=["features"],
            opset_version=17,
            dynamo=False,
        )
    return path


class OrtEncoder:
    """Callable ``(B, 3, S, S)`` float32 tensor -> features tensor, backed by an onnxruntime session.

    Exports (or reuses the cached export) lazily at the first call, so building a model stays fast and a
    process that only answers prompts from cached embeddings never exports.
    """

    def __init__(self, encoder: nn.Module, image_size: int, threads: int | None = None) -> None:
        self.encoder = encoder
        self.image_size = image_size
        self.threads = threads or torch.get_num_threads()
        self._session = None
        self._lock = threading.Lock()
        self.path: Path | None = None

    def _ensure(self):
        with self._lock:
            if self._session is None:
                enc = self.encoder
                if next(enc.parameters()).device.type != "cpu":
                    enc = copy.deepcopy(enc).to("cpu")
                key = weights_sha256(enc)[:32]
                path = onnx_cache_dir() / f"encoder-{key}-s{self.image_size}-b1-v{EXPORT_VERSION}.onnx"
                self._session = cached_session(
                    path, lambda p: export_encoder(enc, self.image_size, p), self.threads, "image encoder"
                )
                self.path = path
            return self._session

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        sess = self._ensure()
        x = batch.detach().to("cpu", torch.float32).numpy()
        outs = [
            sess.run(["features"], {"image": np.ascontiguousarray(x[i : i + 1])})[0] for i in range(len(x))
        ]
        return torch.from_numpy(np.concatenate(outs)).to(batch.device)


def choose_backend(model, backend: str | None = None) -> str:
    """Resolve ``auto`` (or ``$SEMISAM_ENCODER_BACKEND``) to ``eager`` or ``onnxruntime`` for ``model``.

    ``auto`` picks onnxruntime on CPU when it is installed and the encoder fits in one ONNX file; CUDA
    models stay eager (PyTorch on the GPU is already fast).
    """
    choice = (backend or os.environ.get("SEMISAM_ENCODER_BACKEND") or "auto").strip().lower()
    if choice not in BACKENDS:
        raise ValueError(f"unknown encoder backend {choice!r}; choose one of {', '.join(BACKENDS)}")
    if choice == "auto":
        n_bytes = sum(p.numel() * p.element_size() for p in model.image_encoder.parameters())
        ok = model.device.type == "cpu" and onnxruntime_available() and n_bytes < MAX_ONNX_PARAM_BYTES
        choice = "onnxruntime" if ok else "eager"
    if choice == "onnxruntime" and not onnxruntime_available():
        raise RuntimeError("encoder backend 'onnxruntime' needs the onnx and onnxruntime packages")
    return choice


def apply_backend(model, backend: str | None = None) -> str:
    """Install the chosen backend (encoder and prompt decoder) on a :class:`SamLikeModel`."""
    from .fast_decoder import OrtDecoder

    choice = choose_backend(model, backend)
    if choice == "eager":
        model.use_eager_encoder()
    else:
        model.set_fast_encoder(OrtEncoder(model.image_encoder, model.image_size), "onnxruntime")
        model.set_fast_decoder(OrtDecoder(model), "onnxruntime")
    return choice
