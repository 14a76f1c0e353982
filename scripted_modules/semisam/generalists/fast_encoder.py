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
import hashlib
import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from semisam.fileio import atomic_path, cache_root

log = logging.getLogger(__name__)

#: bump when the export recipe changes, so stale cached files are not reused
EXPORT_VERSION = "1"
BACKENDS = ("auto", "eager", "onnxruntime")
#: protobuf's 2 GiB limit: larger encoders (SAM ViT-H) stay eager
MAX_ONNX_PARAM_BYTES = 1_800_000_000


def cpu_session(path: Path, threads: int, profile_prefix: str | None = None):
    """An onnxruntime CPU session for an exported model, with the options both exports use.

    ``profile_prefix``: write onnxruntime's per-node profile there (benchmarks only).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    # No busy-waiting between kernels: on a shared machine (or beside Slicer's GUI thread) spinning
    # threads steal the cores; measured 4.1 s vs 4.5 s wall and 2.0 vs 2.4 CPU-s per encode under load,
    # interleaved.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


#: Cache folders already found unusable in this process (warned about once each).
_UNUSABLE_CACHE: set[Path] = set()


def _cache_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot hold cached exports (created if missing), or ``None`` when it can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        for parent in (folder, *folder.parents):
            if parent.exists() and not parent.is_dir():
                return f"{parent} is a file, not a folder"
        return exc.strerror or type(exc).__name__
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    return None


def cache_usable(folder: Path) -> bool:
    """Whether exports can be cached in ``folder``; warns once (naming ``$SEMISAM_CACHE_DIR`` when set)
    when they cannot: the caller then exports for this run only."""
    if folder in _UNUSABLE_CACHE:
        return False
    problem = _cache_problem(folder)
    if problem is None:
        return True
    _UNUSABLE_CACHE.add(folder)
    setting = os.environ.get("SEMISAM_CACHE_DIR")
    where = f"SEMISAM_CACHE_DIR={setting}" if setting else f"the cache folder {folder.parent}"
    log.warning(
        "%s cannot hold the ONNX cache (%s); running uncached: the export is made again for each run "
        "(set SEMISAM_CACHE_DIR to a writable folder)",
        where,
        problem,
    )
    return False


def cached_session(path: Path, build, threads: int, what: str):
    """A session for the cached export at ``path``, exporting it with ``build(path)`` when missing.

    A cached file that fails to load (truncated by a full disk or a killed copy, or written by another
    onnxruntime) is removed and rebuilt once, instead of failing every later run. When ``path``'s folder
    cannot be a cache (``$SEMISAM_CACHE_DIR`` names a file, or a read-only folder), the export goes to a
    temporary folder that is removed once the session has loaded it (onnxruntime keeps the graph in
    memory), with one warning.
    """
    if not cache_usable(path.parent):
        with tempfile.TemporaryDirectory(prefix="semisam-onnx-") as tmp:
            scratch = Path(tmp) / path.name
            log.info("exporting the %s to ONNX (uncached): %s", what, scratch)
            build(scratch)
            return cpu_session(scratch, threads)
    if not path.is_file():
        log.info("exporting the %s to ONNX (first use): %s", what, path)
        build(path)
        return cpu_session(path, threads)
    try:
        return cpu_session(path, threads)
    except Exception as exc:  # onnxruntime raises its own (pybind) exception types
        log.warning("cached ONNX %s %s cannot be loaded (%s); rebuilding it", what, path, str(exc)[:200])
        path.unlink(missing_ok=True)
        build(path)
        return cpu_session(path, threads)


def onnx_cache_dir() -> Path:
    return cache_root() / "onnx"


def weights_sha256(module: nn.Module) -> str:
    """sha256 over the module's state dict (names, shapes, dtypes and bytes, sorted by name)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def onnxruntime_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


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
