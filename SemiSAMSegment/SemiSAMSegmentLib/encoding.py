"""Background slice encoding whose set-up runs off the main thread too.

SemiSAMSegment encodes the slices a propagation will visit ahead of time: around the viewed slice when a
scan is shown (including when the module opens), and around the proposal after *Auto-segment*. Setting
that up costs seconds: the first ``import torch``, building the generalist (loading its weights), copying
the voxels into the case and choosing the intensity window. :class:`BackgroundEncoding` runs the set-up
and then the encoding on one daemon thread, so the main thread only does the cheap MRML reads before it
(``SemiSAMSegmentLib.session.VolumeSnapshot``). It answers like the core's ``Precompute`` job (``done``,
``indices``, ``error``, ``running()``, ``wait()``, ``cancel()``), so the Widget and
``CaseLogic.precomputeProblem`` treat both alike; an error of the set-up (torch missing, an unreadable
checkpoint) is its ``error``. No qt, no MRML.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

#: ``setup(cancelled)`` -> the slice encoder to fill (``semisam.generalists.cache.SliceEncoder``), or
#: ``None`` when there is nothing to encode (a generalist without a slice cache, or cancelled).
Setup = Callable[[Callable[[], bool]], Any]


def encoding_settings(parameterNode, volumeNode=None) -> dict | None:
    """The arguments of ``CaseLogic.precomputeEmbeddings`` but ``slices``, read from the module's
    parameter node now (so that work finishing after the module was left, or after the user changed a
    setting, encodes for what it was started with); ``volumeNode`` overrides the node's input volume.
    ``None`` without a parameter node."""
    if parameterNode is None:
        return None
    return dict(
        volumeNode=volumeNode if volumeNode is not None else parameterNode.inputVolume,
        generalist=parameterNode.generalist,
        checkpoint=parameterNode.generalistCheckpoint,
        intensityPreset=parameterNode.intensityPreset,
        device=parameterNode.device,
    )


class BackgroundEncoding:
    """Run ``setup`` and then encode ``indices`` (those inside the volume) on a daemon thread.

    Args:
        setup: see :data:`Setup`; it runs on the thread and gets ``cancelled()`` to stop early.
        indices: slices to encode, nearest first.
        views: closer views to encode after them (slice index -> ``semisam.generalists.view.View``).
    """

    def __init__(self, setup: Setup, indices: Iterable[int], views: dict | None = None) -> None:
        self._setup = setup
        self.indices = [int(i) for i in indices]
        self.views = dict(views or {})
        self._error: BaseException | None = None
        self._job = None  # the core's Precompute once the encoder exists
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="semisam-encoding", daemon=True)

    def start(self) -> BackgroundEncoding:
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop at the end of the set-up step or slice under way (an encoder call cannot be interrupted)."""
        self._cancel.set()
        job = self._job
        if job is not None:
            job.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> int:
        """Slices now cached (0 during the set-up)."""
        job = self._job
        return job.done if job is not None else 0

    @property
    def error(self) -> BaseException | None:
        """What stopped the set-up or the encoding, or ``None``."""
        job = self._job
        return self._error or (job.error if job is not None else None)

    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Join the thread; True when it has finished."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            encoder = self._setup(self._cancel.is_set)
            if encoder is None or self._cancel.is_set():
                return
            n = encoder.num_slices
            self.indices = [i for i in self.indices if 0 <= i < n]
            views = {k: v for k, v in self.views.items() if 0 <= k < n}
            job = self._job = encoder.precompute(self.indices, start=False, views=views)
            if self._cancel.is_set():  # cancel() may have run before the job existed
                job.cancel()
            job.start()
            job.wait()
        except BaseException as exc:  # handed to the Widget through .error; a worker must not die silently
            log.warning("background slice encoding failed while setting up: %s", exc, exc_info=True)
            self._error = exc
