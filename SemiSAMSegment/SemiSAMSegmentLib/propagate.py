"""Propagate for SemiSAMSegment's Logic: markups -> the core's editing session -> one segment, in range only.

The case's :class:`~SemiSAMSegmentLib.session.SegmentSession` holds the core's
:class:`~semisam.propagation.session.EditingSession` (the same code the simulated annotator of
``semisam simulate`` runs). A second *Propagate* with one more point or box adds only that prompt (the
core then recomputes only the range it affects, and no slice is encoded twice); a prompt that was moved
or deleted rebuilds the state, and another generalist / window / axis starts a new editing session
(slice embeddings stay in the Logic's shared cache, so that costs decoder calls, not encoder runs).

The result is written into the chosen segment **only inside the propagated range** along the slice axis:
from the first to the last slice that the new mask, a key slice, or this session's previous propagation
into that segment touched. Every other slice keeps what it had (the specialist's proposal, Segment Editor
edits). Inside the range the merge rule decides, by the module's *keep agreeing slices* option: on
(default), the new answer replaces the segment from each prompted slice outward up to the first slice
where it agrees with what is already there, and the rest is kept (a box on one bad slice of a good
proposal fixes that slice, not the whole structure); off, every slice of the range is replaced. A segment
empty in the range gets the whole propagation either way. With *Propagate across slices* off, only the
prompted slices are answered (no tracks) and only they are written (rule ``key_slices``): the way to fix
a good proposal slice by slice. No qt, no ``slicer.app``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import mrml_io
from .markup_prompts import MarkupPrompts
from .session import SegmentSession
from .texts import _

log = logging.getLogger(__name__)

#: Bytes of slice embeddings the Logic keeps (LiteMedSAM: 1 MiB per slice, so ~384 slices).
EMBEDDING_CACHE_BYTES = 384 * 2**20


@dataclass
class PropagateOutcome:
    """What :meth:`SemiSAMSegmentLogic.propagate` returns.

    Attributes:
        segment_id: the segment that was written.
        axis: slice axis of the prompts.
        slice_range: inclusive ``(first, last)`` slice range along ``axis`` the propagation covered.
        replaced: slices of that range whose voxels were replaced (the rest kept the segment's).
        key_slices: prompted slices.
        slices: slices where the new mask is non-empty.
        confidence: ``(n_slices,)`` per-slice confidence along ``axis`` (``NaN``: nothing segmented).
        stops: why each track stopped (``{"<key>:<+1|-1>": reason}``).
        added_prompts: prompts added to the session by this call.
        rebuilt: ``True`` when the session's propagation state was started afresh.
        slices_encoded: slices encoded by this session so far (cache misses).
        seconds: wall-clock seconds of this call's propagation.
        across_slices: ``False`` when only the prompted slices were answered and written.
    """

    segment_id: str
    axis: str
    slice_range: tuple[int, int]
    replaced: list[int]
    key_slices: list[int]
    slices: list[int]
    confidence: np.ndarray
    stops: dict[str, str]
    added_prompts: int
    rebuilt: bool
    slices_encoded: int
    seconds: float
    across_slices: bool = True

    def describe(self, segment_name: str) -> str:
        """One line for the module's status label."""
        if self.across_slices:
            text = _(
                "Propagated from {axis} key slice(s) {keys}: segment '{name}' replaced in {r} of slices "
                "{lo}..{hi} ({n} with a mask); {enc} slice(s) encoded so far; {seconds:.1f} s."
            )
        else:
            text = _(
                "Answered the prompted {axis} slice(s) {keys} only: segment '{name}' replaced on {r} "
                "slice(s); {enc} slice(s) encoded so far; {seconds:.1f} s."
            )
        return text.format(
            axis=self.axis,
            keys=", ".join(str(k) for k in self.key_slices),
            name=segment_name,
            r=len(self.replaced),
            lo=self.slice_range[0],
            hi=self.slice_range[1],
            n=len(self.slices),
            enc=self.slices_encoded,
            seconds=self.seconds,
        )


def window_argument(preset: str) -> str | None:
    """Parameter-node intensity preset -> the core's ``window`` argument (``auto`` -> ``None``)."""
    return None if preset in ("", "auto") else preset


def make_editing(session: SegmentSession, model, axis: str, window: str | None, cache):
    """A fresh editing session on the case's volume (no prompts; nothing encoded yet; the ranges written
    on ``axis`` so far carried over), not kept in the case."""
    from semisam.propagation.session import EditingSession

    editing = EditingSession(
        model,
        session.volume,
        axis,
        window=window,
        cache=cache,
        modality=session.modality,
        scan_id=f"slicer:{session.key[0]}@{session.key[1]}",
        written=session.written.setdefault(axis, {}),
    )
    editing.ensure_state()
    return editing


def make_state(session: SegmentSession, model, axis: str, window: str | None, cache):
    """A fresh propagation state on the case's volume (:func:`make_editing`'s), not kept in the case."""
    return make_editing(session, model, axis, window, cache).state


def new_state(session: SegmentSession, model, state_key: tuple, axis: str, window: str | None, cache):
    """Start a fresh editing session for the case (no prompts; nothing encoded yet); returns its state."""
    session.editing = make_editing(session, model, axis, window, cache)
    session.state_key = state_key
    return session.editing.state


def encoder_for(session: SegmentSession, model, state_key: tuple, axis: str, window: str | None, cache):
    """The slice encoder a propagation with ``state_key``'s settings uses on this case: the session's own
    when its state was built for them (a background encoding then shares the encoder's lock with the
    propagation), else that of a new state kept outside the session (any thread may call this; the
    propagation builds its own state and finds the slices in the shared ``cache``)."""
    state = session.state
    if session.state_key == state_key and state is not None:
        return state.encoder
    return make_state(session, model, axis, window, cache).encoder


def propagate_session(
    session: SegmentSession,
    markups: MarkupPrompts,
    model,
    state_key: tuple,
    window: str | None,
    cache,
    progress: Callable[[float, str], None] | None = None,
    across_slices: bool = True,
    current: np.ndarray | None = None,
):
    """Bring the case's editing session up to ``markups`` and propagate; returns the core's result
    (``across_slices=False``: the prompted slices only, point-only slices anchored on ``current``, the
    segment's mask; :meth:`semisam.propagation.session.EditingSession.propagate`).

    Returns:
        ``(PropagationResult, number of prompts added, rebuilt)``.
    """
    wanted = list(markups.prompts.prompts)
    rebuilt = session.state_key != state_key or session.editing is None
    if rebuilt:
        new_state(session, model, state_key, markups.prompts.axis, window, cache)
    added, again = session.editing.sync(wanted)
    rebuilt = rebuilt or again
    n = max(1, session.editing.state.n_slices)
    done = [0]

    def step(slice_index: int, outcome: object) -> None:
        done[0] += 1
        if progress is not None:
            progress(min(0.99, done[0] / n), f"propagating: slice {slice_index}")

    result = session.editing.propagate(progress=step, across_slices=across_slices, current=current)
    session.count_prompts(wanted)  # provenance counts the prompts of propagations that finished
    return result, added, rebuilt


def write_segment(
    session: SegmentSession,
    result,
    axis: str,
    volume_node,
    segmentation_node,
    segment_name: str,
    keep_agreeing: bool = True,
    across_slices: bool = True,
) -> tuple[str, tuple[int, int], list[int]]:
    """Write ``result.mask`` into ``segment_name`` through the case's editing session (inside the
    propagated range, by the merge rule: ``keep_agreeing``: :data:`semisam.merge.MergeRule.KEEP_AGREEING`,
    else ``REPLACE``; a propagation not ``across_slices``: ``KEY_SLICES``); returns ``(segment id, range,
    replaced slices)``."""
    from semisam.merge import MergeRule

    current = segment_mask(session, volume_node, segmentation_node, segment_name)
    rule = MergeRule.KEEP_AGREEING if keep_agreeing else MergeRule.REPLACE
    editing = session.editing
    if editing is None or editing.axis != axis:
        raise ValueError(f"no {axis} propagation of this case to write (propagate first)")
    written = editing.write(current, result, rule, across_slices=across_slices, target=segment_name)
    (segment_id,) = mrml_io.import_mask(written.mask, volume_node, segmentation_node, {1: segment_name})
    return segment_id, written.range, written.replaced


def segment_mask(session: SegmentSession, volume_node, segmentation_node, segment_name: str) -> np.ndarray:
    """The segment ``segment_name`` as a ``(Z, Y, X)`` uint8 mask on the scan's grid (zeros when the
    segmentation has no such segment). Main thread (MRML)."""
    existing = segmentation_node.GetSegmentation().GetSegmentIdBySegmentName(segment_name)
    if existing:
        return mrml_io.export_mask(segmentation_node, volume_node, [existing])
    return np.zeros(session.volume.shape, np.uint8)


@dataclass
class PropagateRequest:
    """Everything one propagation needs, gathered from the scene on the main thread by
    :meth:`CaseLogic.preparePropagate`; :func:`compute` then runs anywhere (a worker thread) and
    :func:`apply` writes on the main thread.

    Attributes:
        session: the case in progress (its propagation state is advanced by :func:`compute`).
        markups: the prompts read from the markups.
        model, state_key, window, cache: the generalist, its state key, intensity window and embedding cache.
        volume_node, segmentation_node, segment_name: where :func:`apply` writes.
        keep_agreeing: the merge rule (:func:`write_segment`).
        across_slices: ``False``: answer and write the prompted slices only.
        current: with ``across_slices`` off, the segment's mask when the request was made (anchors
            slices prompted with points only); ``None`` otherwise.
        generalist_version: the store's adapted generalist version that answers (``None``: the frozen one).
        result: the core's ``PropagationResult`` once :func:`compute` finished (``None`` before).
        added, rebuilt: prompts added to the kept state and whether it was started afresh.
        seconds: wall-clock seconds of :func:`compute`.
    """

    session: SegmentSession
    markups: MarkupPrompts
    model: object
    state_key: tuple
    window: str | None
    cache: object
    volume_node: object
    segmentation_node: object
    segment_name: str
    keep_agreeing: bool = True
    across_slices: bool = True
    current: np.ndarray | None = None
    generalist_version: str | None = None
    result: object = None
    added: int = 0
    rebuilt: bool = False
    seconds: float = 0.0


def compute(
    request: PropagateRequest, progress: Callable[[float, str], None] | None = None
) -> PropagateRequest:
    """The propagation itself (no MRML: safe on a worker thread); fills ``request.result``.

    ``progress(fraction, stage)`` is called once per propagated slice and a last time with stage
    ``"writing the segment"``; when it raises (Cancel) nothing is written.
    """
    t0 = time.perf_counter()
    r = request
    r.result, r.added, r.rebuilt = propagate_session(
        r.session, r.markups, r.model, r.state_key, r.window, r.cache, progress, r.across_slices, r.current
    )
    r.seconds = time.perf_counter() - t0
    if progress is not None:  # the last report (a Cancel is honoured here at the latest): nothing after
        progress(1.0, "writing the segment")
    return r


def apply(request: PropagateRequest) -> PropagateOutcome:
    """Write a computed propagation into the segment (main thread: MRML); returns the outcome."""
    r, t0 = request, time.perf_counter()
    if r.result is None:
        raise ValueError("the propagation has not been computed (call compute first)")
    result, axis = r.result, r.markups.prompts.axis
    segment_id, rng, replaced = write_segment(
        r.session,
        result,
        axis,
        r.volume_node,
        r.segmentation_node,
        r.segment_name,
        r.keep_agreeing,
        r.across_slices,
    )
    seconds = r.seconds + (time.perf_counter() - t0)
    log.info(
        "propagated %d prompt(s) (%d new) on %s slices %s -> %d voxels, %d slice(s) of %d..%d replaced (%.1f s)",
        len(r.markups.prompts.prompts),
        r.added,
        axis,
        result.key_slices,
        int(result.mask.sum()),
        len(replaced),
        *rng,
        seconds,
    )
    return PropagateOutcome(
        segment_id=segment_id,
        axis=axis,
        slice_range=rng,
        replaced=replaced,
        key_slices=list(result.key_slices),
        slices=result.slices,
        confidence=result.confidence,
        stops=dict(result.stops),
        added_prompts=r.added,
        rebuilt=r.rebuilt,
        slices_encoded=int(r.session.state.n_encode),
        seconds=round(seconds, 3),
        across_slices=r.across_slices,
    )
