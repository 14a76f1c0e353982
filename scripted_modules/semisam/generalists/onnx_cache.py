"""The ONNX runtime side both fast paths share: CPU sessions, the on-disk cache of exports (with its
fallback when the cache folder cannot be used) and the weights hash that names an export."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from semisam.fileio import cache_root

log = logging.getLogger(__name__)


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
