"""A disk cache of generalist slice embeddings (fp16, size-bounded, least-recently-used eviction).

The generalist's image encoder is the expensive part of pseudo-labelling and distillation on a CPU
(LiteMedSAM: about 1 s per slice here), so every slice is encoded once and kept under
``STORE/cache/embeddings/``, shared by :mod:`~semisam.training.methods.semi.pseudo_labels` and the
``distill`` part and across training runs.

Keys follow :class:`semisam.generalists.cache.EmbeddingKey`: the generalist's ``identity`` (name, weights
digest, encoder runtime, device), the slice's **content** fingerprint (:func:`~semisam.generalists.cache.
array_fingerprint` of the float32 slice actually encoded: a perturbed slice or another preprocessing is
another key) and the intensity window. One file per embedding, ``<sha256(key)[:40]>.npz`` holding
``features`` (fp16, e.g. ``(1, 256, 64, 64)`` = 2 MiB for LiteMedSAM) and any tensor ``extras``, written
atomically (temporary file + rename), read with ``allow_pickle=False``. The folder may be deleted at any
time (``semisam store check --clean``); a corrupt file is a miss and is replaced.

Bound: ``max_bytes`` (default 2 GiB: ~1000 LiteMedSAM slices). A hit refreshes the file's mtime; when a
put takes the folder over the bound, the oldest files by mtime go first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import torch

from semisam.generalists.base import PromptableModel, SliceEmbedding, model_identity
from semisam.generalists.cache import array_fingerprint
from semisam.scan.intensity import IntensityWindow

log = logging.getLogger(__name__)

#: Model-grid slices are already scaled to [0, 1] by the manifest's preprocessing.
MODEL_GRID_WINDOW = IntensityWindow(0.0, 1.0, "model-grid")
DEFAULT_MAX_BYTES = 2 * 2**30


class EmbeddingStore:
    """Slice embeddings on disk under ``root`` (created on first put).

    Args:
        root: the folder, normally ``STORE/cache/embeddings``.
        max_bytes: size bound of the folder's ``.npz`` files.

    Counters ``hits``, ``misses`` and ``encoded`` (slices run through an encoder by this object).
    """

    def __init__(self, root: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.hits = 0
        self.misses = 0
        self.encoded = 0
        self._lock = threading.Lock()
        self._sizes: dict[Path, int] | None = None  # file -> bytes, scanned lazily

    # ------------------------------------------------------------------ keys
    @staticmethod
    def key(model: PromptableModel, image: np.ndarray, window: IntensityWindow = MODEL_GRID_WINDOW) -> str:
        """The key text of ``image`` ``(H, W)`` float32 encoded by ``model`` under ``window``."""
        fp = array_fingerprint(np.ascontiguousarray(image, dtype=np.float32))
        return f"{model_identity(model)}|{fp}|{window.low!r}:{window.high!r}:{window.name}"

    def path(self, key: str) -> Path:
        return self.root / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.npz"

    # ------------------------------------------------------------------ get / put
    def get(self, key: str, device: torch.device | str = "cpu") -> SliceEmbedding | None:
        """The cached embedding (float32 on ``device``) or ``None``."""
        path = self.path(key)
        try:
            with np.load(path, allow_pickle=False) as z:
                feats = torch.from_numpy(z["features"].astype(np.float32))
                shape = tuple(int(v) for v in z["slice_shape"])
                extras = {
                    k[len("extra_") :]: torch.from_numpy(z[k].astype(np.float32)).to(device)
                    for k in z.files
                    if k.startswith("extra_")
                }
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, KeyError) as exc:  # a torn or foreign file: a miss, replaced on put
            log.warning("embedding cache file %s is unreadable (%s); re-encoding", path, exc)
            self.misses += 1
            return None
        try:
            os.utime(path)  # LRU: a hit is a use
        except OSError:
            pass
        self.hits += 1
        return SliceEmbedding(features=feats.to(device), slice_shape=shape, extras=extras)  # type: ignore[arg-type]

    def put(self, key: str, emb: SliceEmbedding) -> None:
        """Store ``emb`` as fp16 (atomic), then evict the oldest files beyond ``max_bytes``."""
        self.root.mkdir(parents=True, exist_ok=True)
        arrays = {
            "features": emb.features.detach().to("cpu", torch.float16).numpy(),
            "slice_shape": np.asarray(emb.slice_shape, dtype=np.int64),
        }
        for k, v in emb.extras.items():
            if isinstance(v, torch.Tensor):
                arrays[f"extra_{k}"] = v.detach().to("cpu", torch.float16).numpy()
        path = self.path(key)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        with self._lock:
            sizes = self._scan()
            sizes[path] = path.stat().st_size
            self._evict(sizes, keep=path)

    def get_or_encode(
        self, model: PromptableModel, image: np.ndarray, window: IntensityWindow = MODEL_GRID_WINDOW
    ) -> SliceEmbedding:
        """The embedding of ``image`` ``(H, W)`` float32 in [0, 1]: from disk, else encoded now and stored.

        Returned features are the fp16-rounded values as float32 on the model's device, whether just
        encoded or read back (the fp16 round trip changed none of the 65536 pixels of LiteMedSAM's mask for a
        box on brain1's largest lesion slice: ``test_ssl_embedding_store.py``).
        """
        key = self.key(model, image, window)
        emb = self.get(key, model.device)
        if emb is not None:
            return emb
        with torch.inference_mode():
            emb = model.encode(np.ascontiguousarray(image, dtype=np.float32))
        self.encoded += 1
        self.put(key, emb)
        # Hand out the fp16-rounded values that a later hit returns: a result never depends on whether
        # the embedding was cached.
        emb.features = emb.features.to(torch.float16).to(torch.float32)
        emb.extras = {
            k: v.to(torch.float16).to(torch.float32) if isinstance(v, torch.Tensor) else v
            for k, v in emb.extras.items()
        }
        return emb

    # ------------------------------------------------------------------ bound
    def _scan(self) -> dict[Path, int]:
        if self._sizes is None:
            self._sizes = {}
            if self.root.is_dir():
                for p in self.root.glob("*.npz"):
                    try:
                        self._sizes[p] = p.stat().st_size
                    except OSError:
                        pass
        return self._sizes

    def _evict(self, sizes: dict[Path, int], keep: Path) -> None:
        total = sum(sizes.values())
        if total <= self.max_bytes:
            return
        aged = []
        for p in list(sizes):
            try:
                aged.append((p.stat().st_mtime, p))
            except OSError:  # deleted by someone else (store check --clean, another trainer)
                sizes.pop(p, None)
        aged.sort()
        for _, p in aged:
            if total <= self.max_bytes:
                break
            if p == keep:
                continue
            total -= sizes.pop(p, 0)
            try:
                p.unlink()
            except OSError:
                pass
        log.debug("embedding cache %s trimmed to %d bytes at %s", self.root, total, time.strftime("%X"))

    @property
    def nbytes(self) -> int:
        """Bytes of the cache's files (as last scanned plus this object's puts)."""
        with self._lock:
            return sum(self._scan().values())
