"""Slice embeddings: a memory-bounded LRU cache, a per-volume slice encoder and a background precompute.

Keys are :class:`EmbeddingKey` ``(model, scan, axis, index, window, view)``: the same slice under another
intensity window, another model or another field of view is another embedding. Everything here is thread-safe: the GUI thread
asks :meth:`SliceEncoder.embedding` while a :class:`Precompute` worker fills the cache.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..scan.intensity import IntensityWindow, apply_window

# One slicing rule for the whole package (axis name -> numpy axis of a (Z, Y, X) array; axial = array[k]).
from ..slices import AXES, take_slice
from .base import PromptableModel, SliceEmbedding, model_identity
from .view import View, encode_view

log = logging.getLogger(__name__)

__all__ = [
    "AXES",
    "EmbeddingCache",
    "EmbeddingKey",
    "Precompute",
    "SliceEncoder",
    "array_fingerprint",
    "take_slice",
]


@dataclass(frozen=True)
class EmbeddingKey:
    """Identity of one cached embedding.

    Attributes:
        model: the generalist's :attr:`~semisam.generalists.base.PromptableModel.identity`: name, weights
            digest, encoder runtime and device (never the bare name: two ``"sam"`` checkpoints differ).
        scan: a caller-chosen id of the volume (a path, a node id, a content hash).
        axis: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        index: slice index along ``axis`` (voxels).
        window: the intensity window the slice was scaled with.
        view: ``(y0, x0, side)`` of the square part of the slice that was encoded
            (:class:`~semisam.generalists.view.View`), ``None`` for the whole slice.
    """

    model: str
    scan: str
    axis: str
    index: int
    window: IntensityWindow
    view: tuple[int, int, int] | None = None


class EmbeddingCache:
    """Thread-safe LRU of :class:`SliceEmbedding` bounded by bytes (``SliceEmbedding.nbytes``).

    Args:
        max_bytes: the bound. A LiteMedSAM embedding is 256x64x64 float32 = 4 MiB, so the default 512 MiB
            holds 128 slices.
    """

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[EmbeddingKey, SliceEmbedding] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: EmbeddingKey) -> SliceEmbedding | None:
        with self._lock:
            emb = self._items.get(key)
            if emb is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return emb

    def __contains__(self, key: EmbeddingKey) -> bool:
        with self._lock:
            return key in self._items

    def put(self, key: EmbeddingKey, emb: SliceEmbedding) -> None:
        """Insert (or refresh) ``key``; evicts least-recently-used entries to stay within ``max_bytes``.

        An embedding larger than the whole bound is not stored.
        """
        size = emb.nbytes()
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes()
            if size > self.max_bytes:
                log.warning(
                    "embedding of %d bytes exceeds the cache bound %d; not cached", size, self.max_bytes
                )
                return
            self._items[key] = emb
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def array_fingerprint(array: np.ndarray) -> str:
    """``"array:<shape>:<dtype>:<sha256 of the bytes>"``: equal only for equal voxels.

    Hashes every byte rather than a strided sample, so that an edited voxel or a crop is another scan;
    SHA-256 runs at ~1.5 GB/s here (26 MB in 17 ms measured on the development machine), once per encoder.
    """
    a = np.ascontiguousarray(array)
    digest = hashlib.sha256(memoryview(a).cast("B")).hexdigest()
    return f"array:{'x'.join(map(str, a.shape))}:{a.dtype.str}:{digest[:32]}"


class SliceEncoder:
    """Embeddings of one volume's slices along one axis, through a shared :class:`EmbeddingCache`.

    Args:
        model: the generalist.
        volume_array: raw ``(Z, Y, X)`` voxels (not yet scaled; ``window`` scales each slice).
        axis: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        window: the volume's intensity window (:func:`semisam.scan.intensity.window_for`).
        cache: shared cache; a private 512 MiB one when omitted.
        scan_id: identifies the volume in cache keys; defaults to :func:`array_fingerprint` (the voxels'
            content: never ``id()``, which CPython reuses once an array is freed while the cache lives on).
    """

    def __init__(
        self,
        model: PromptableModel,
        volume_array: np.ndarray,
        axis: str,
        window: IntensityWindow,
        cache: EmbeddingCache | None = None,
        scan_id: str | None = None,
    ) -> None:
        if volume_array.ndim != 3:
            raise ValueError(f"volume_array must be (Z, Y, X), got shape {volume_array.shape}")
        if axis not in AXES:
            raise ValueError(f"unknown axis {axis!r}; choose one of {', '.join(AXES)}")
        self.model = model
        self.volume_array = volume_array
        self.axis = axis
        self.window = window
        self.cache = cache if cache is not None else EmbeddingCache()
        self.scan_id = scan_id or array_fingerprint(volume_array)
        # One encode at a time per encoder: the worker and the GUI asking for the same slice then share
        # the work instead of doing it twice (the second caller finds it cached).
        self._encode_lock = threading.Lock()

    @property
    def num_slices(self) -> int:
        return int(self.volume_array.shape[AXES[self.axis]])

    def key(self, index: int, view: View | None = None) -> EmbeddingKey:
        return EmbeddingKey(
            model_identity(self.model),
            self.scan_id,
            self.axis,
            int(index),
            self.window,
            None if view is None else view.key(),
        )

    def image(self, index: int) -> np.ndarray:
        """Slice ``index`` scaled to float32 ``[0, 1]``, shape as :func:`take_slice`."""
        return apply_window(take_slice(self.volume_array, self.axis, index), self.window)

    def cached(self, index: int, view: View | None = None) -> bool:
        return self.key(index, view) in self.cache

    def embedding_if_cached(self, index: int, view: View | None = None) -> SliceEmbedding | None:
        """The cached embedding, or ``None`` (never encodes) — one atomic look-up, so a caller can count
        misses without a ``cached()`` + ``embedding()`` pair racing the background precompute."""
        return self.cache.get(self.key(index, view))

    def embedding(self, index: int, view: View | None = None) -> SliceEmbedding:
        """The embedding of the slice (or of ``view`` of it, :mod:`semisam.generalists.view`): from the
        cache, or encoded now (under ``torch.inference_mode``) and cached."""
        key = self.key(index, view)
        emb = self.cache.get(key)
        if emb is not None:
            return emb
        with self._encode_lock:
            emb = self.cache.get(key)
            if emb is None:
                with torch.inference_mode():
                    emb = encode_view(self.model, self.image(index), view)
                self.cache.put(key, emb)
        return emb

    def precompute(
        self, indices: Iterable[int], start: bool = True, views: dict[int, View] | None = None
    ) -> Precompute:
        """A background worker that encodes ``indices`` into the cache (see :class:`Precompute`), then the
        views of ``views`` (slice index -> the view of it a propagation will look through)."""
        job = Precompute(self, indices, views)
        if start:
            job.start()
        return job


class Precompute:
    """Encode a range of slices (and views of them) into the cache on a daemon thread; cancellable between
    slices.

    ``done`` counts embeddings that are now cached (including ones that already were: whole slices, then
    views); ``error`` holds the exception that stopped the worker, if any.
    """

    def __init__(
        self, encoder: SliceEncoder, indices: Iterable[int], views: dict[int, View] | None = None
    ) -> None:
        self.encoder = encoder
        self.indices = [int(i) for i in indices]
        self.views = dict(views or {})
        self.done = 0
        self.error: BaseException | None = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="semisam-precompute", daemon=True)

    def start(self) -> Precompute:
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop after the slice being encoded now (an encoder call cannot be interrupted midway)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Join the worker; True when it has finished."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        work: list = []
        try:
            # Whole slices first (every key slice needs one), then the views in the caller's order.
            work = [(i, None) for i in self.indices] + list(self.views.items())
            for index, view in work:
                if self._cancel.is_set():
                    log.info("precompute cancelled after %d/%d encodings", self.done, len(work))
                    return
                self.encoder.embedding(index, view)
                self.done += 1
        except BaseException as exc:  # reported to the owner through .error; a worker must not die silently
            failed = work[self.done] if self.done < len(work) else (None, None)
            log.exception("precompute failed at slice %s (view %s)", *failed)
            self.error = exc
