"""Explicit inference state of a propagation session, in the spirit of SAM 2's video predictor.

::

    state = init_state(model, volume, axis="axial")          # nothing is encoded yet
    add_prompt(state, 33, box=(206, 347, 229, 368))           # key slice 33
    result = propagate(state)                                  # 3D mask + per-slice confidence
    add_prompt(state, 30, point=(215, 355), positive=False)    # a correction
    result = propagate(state)                                  # re-runs only what slice 30 affects

The state owns everything that survives between calls: the prompts per key slice, each key slice's
answer and lesion model, and one *track* per key slice and direction (the masks propagated from that key
slice until the structure ended or the next key slice). Embeddings live in the encoder's cache, so no
slice is ever encoded twice. :func:`add_prompt` invalidates only the tracks whose range the new prompt
touches: the new key slice's own tracks, and the neighbouring key slices' tracks towards it (truncated,
not recomputed).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np

from semisam.generalists.base import PromptableModel
from semisam.generalists.cache import EmbeddingCache, SliceEncoder, array_fingerprint
from semisam.generalists.view import View, view_around
from semisam.generalists.view import predict as predict_in_view
from semisam.prompts import Prompt, PromptError
from semisam.propagation.isotropic import SquarePixels
from semisam.propagation.lesion import LesionModel
from semisam.propagation.params import PropagationParams
from semisam.propagation.step import SliceResult
from semisam.scan.intensity import CT_PRESETS, IntensityWindow, window_for
from semisam.scan.volume import Volume
from semisam.slices import axis_index, n_slices, slice_shape

log = logging.getLogger(__name__)

AXIS_NAMES = ("axial", "coronal", "sagittal")


@dataclass
class KeySlice:
    """A slice the user prompted.

    Attributes:
        prompts: the user's prompts on it, in order.
        result: the model's answer (``None`` until computed, or when the prompts mark no structure).
        lesion: intensity model fitted on ``result`` (``None`` when empty).
        fresh: ``False`` when the prompts changed since ``result`` was computed.
        closer: whether a view around the box answered better than the whole slice
            (:func:`semisam.generalists.view.choose`); its tracks answer on whole slices either way.
        parts: the boxes' own answers (non-empty ones, in prompt order; those whose boxes lie within the
            step's margin of each other merged into one; one entry without boxes): the parts its tracks
            follow one by one (:class:`Lane`). ``result`` is their union.
        part_lesions: one intensity model per part, each lane's (:func:`~.lesion.part_models`); ``lesion``
            alone for one part.
        unsized: clicks without a box were answered alone, with nothing to anchor or size a box on (no
            mask on the slice or near it), and the model found nothing: the slice is answered again once
            there is (a user who clicks before boxing a neighbour).
    """

    prompts: list[Prompt] = field(default_factory=list)
    result: SliceResult | None = None
    parts: list[SliceResult] = field(default_factory=list)
    lesion: LesionModel | None = None
    part_lesions: list[LesionModel | None] = field(default_factory=list)
    fresh: bool = False
    closer: bool = False
    unsized: bool = False


@dataclass
class Lane:
    """One part of a key slice's answer (:attr:`KeySlice.parts`) followed on its own along a track.

    A radiologist boxes the left and the right thalamus apart; one box around both parts' previous masks
    would hand the model the tissue between them too (on two whole-head thalamus subjects, one track for
    both parts grew from the key slice's 563 px to 1,237 px on the next slice against 886 px of truth).

    Attributes:
        results: one :class:`SliceResult` per slice, in propagation order.
        stop: why it ended (``None``: still running, or it reached the track's limit).
        stop_at: the slice where it ended (``None`` while ``stop`` is ``None``).
    """

    results: list[SliceResult] = field(default_factory=list)
    stop: str | None = None
    stop_at: int | None = None


@dataclass
class Track:
    """Masks propagated from key slice ``key`` in ``direction`` (+1 / -1), never past ``limit``.

    Attributes:
        key: the key slice it starts from (not included in ``results``).
        direction: +1 towards higher slice indices, -1 towards lower.
        limit: exclusive end: the next key slice in that direction, or -1 / ``n_slices``.
        results: one :class:`SliceResult` per slice, in propagation order: the union of the lanes that
            reached the slice.
        stop: why it ended before ``limit`` (``None``: it reached ``limit``): the reason of the lane
            that ended furthest from the key slice.
        lanes: one :class:`Lane` per part of the key slice's answer.
    """

    key: int
    direction: int
    limit: int
    results: list[SliceResult] = field(default_factory=list)
    stop: str | None = None
    lanes: list[Lane] = field(default_factory=list)


@dataclass
class PropagationState:
    """Everything a propagation session keeps between :func:`add_prompt` / :func:`propagate` calls.

    Attributes:
        model: the generalist (:class:`~semisam.generalists.base.PromptableModel`), wrapped in
            :class:`~semisam.propagation.isotropic.SquarePixels` when the slices' pixels are not square.
        volume: the scan (raw voxels ``(Z, Y, X)`` and geometry).
        axis: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        encoder: slice images and cached embeddings along ``axis`` (A1's :class:`SliceEncoder`).
        params: thresholds (:class:`PropagationParams`).
        pixel_mm: ``(row, column)`` pixel size of a slice in mm.
        slice_mm: distance between neighbouring slices in mm.
        keys: key slice index -> :class:`KeySlice`.
        tracks: ``(key, direction)`` -> :class:`Track`.
        n_predict: decoder calls made so far (prompt answers), for tests and benchmarks.
        n_encode: slices encoded so far by this session (cache misses).
    """

    model: PromptableModel
    volume: Volume
    axis: str
    encoder: SliceEncoder
    params: PropagationParams
    pixel_mm: tuple[float, float]
    slice_mm: float
    keys: dict[int, KeySlice] = field(default_factory=dict)
    tracks: dict[tuple[int, int], Track] = field(default_factory=dict)
    n_predict: int = 0
    n_encode: int = 0

    @property
    def n_slices(self) -> int:
        return n_slices(self.volume.shape, self.axis)

    @property
    def slice_shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of one slice."""
        return slice_shape(self.volume.shape, self.axis)

    def embedding(self, index: int, view: View | None = None):
        """The embedding of the slice (or of ``view`` of it), encoded at most once per cache lifetime."""
        if not self.encoder.cached(index, view):
            self.n_encode += 1
        return self.encoder.embedding(index, view)

    def view(self, box) -> View | None:
        """The closer view around ``box`` (slice pixels) that :attr:`params` allow, or ``None``."""
        if self.params.field_of_view == "whole" or box is None:
            return None
        return view_around(box, self.slice_shape)

    def image(self, index: int) -> np.ndarray:
        """``(rows, columns)`` windowed slice in [0, 1]."""
        return self.encoder.image(index)

    def predict(self, embedding, prompt):
        """The model's answer to ``prompt`` (slice pixels) on a whole-slice or view embedding; logits are
        ``(rows, columns)`` of the slice either way."""
        self.n_predict += 1
        return predict_in_view(self.model, embedding, prompt)


def slice_geometry(volume: Volume, axis: str) -> tuple[tuple[float, float], float]:
    """``((row_mm, column_mm), slice_mm)`` of slices across ``axis`` (see :mod:`semisam.slices`)."""
    si, sj, sk = volume.spacing
    a = axis_index(axis)
    if a == 0:  # axial: rows j, columns i
        return (sj, si), sk
    if a == 1:  # coronal: rows k, columns i
        return (sk, si), sj
    return (sk, sj), si  # sagittal: rows k, columns j


def scan_fingerprint(volume: Volume) -> str:
    """The default cache id of a scan: its voxels' content (:func:`array_fingerprint`) and its geometry.

    Never ``volume.source``: crops and ``Volume.with_array`` keep the file name with other voxels, so two
    different arrays would share embeddings.
    """
    geometry = np.concatenate(
        [np.ravel(volume.spacing), np.ravel(volume.origin), np.ravel(volume.direction)]
    ).astype(np.float64)
    geo = hashlib.sha256(geometry.tobytes()).hexdigest()[:16]
    return f"{array_fingerprint(volume.array)}:geometry:{geo}"


def guess_modality(volume: Volume) -> str:
    """``"CT"`` when the scan holds air in Hounsfield units (1st percentile <= -500), else ``"MR"``.

    Used only when the caller names neither a window nor a modality.
    """
    a = volume.array
    sample = a.reshape(-1)[:: max(1, a.size // 1_000_000)]
    return "CT" if float(np.percentile(sample, 1)) <= -500 else "MR"


def resolve_window(
    volume: Volume, window: IntensityWindow | str | None, modality: str | None
) -> IntensityWindow:
    """An :class:`IntensityWindow` from a window, a preset name (``lung``, ..., ``percentile``) or ``None``."""
    if isinstance(window, IntensityWindow):
        return window
    mod = modality or guess_modality(volume)
    if isinstance(window, str) and window in CT_PRESETS:
        mod = "CT"
    return window_for(volume, mod, window)


def _check_square_pixel_size(volume: Volume, axis: str, pixel_mm: tuple[float, float]) -> None:
    """Input check: a slice resampled to square pixels must stay allocatable (spacing 1e6 mm in a header)."""
    from semisam.scan.volume import check_grid_size

    fine = min(pixel_mm)
    rows, cols = slice_shape(volume.shape, axis)
    check_grid_size(
        (rows * pixel_mm[0] / fine, cols * pixel_mm[1] / fine),
        f"an {axis} slice resampled to square pixels (pixel {pixel_mm[0]:.3g} x {pixel_mm[1]:.3g} mm)",
        f"check the voxel size in the scan's header (spacing {tuple(volume.spacing)} mm)",
        volume.source,
        grown_from=(rows, cols),
    )


def init_state(
    model: PromptableModel,
    volume: Volume,
    axis: str = "axial",
    window: IntensityWindow | str | None = None,
    params: PropagationParams | None = None,
    cache: EmbeddingCache | None = None,
    modality: str | None = None,
    scan_id: str | None = None,
) -> PropagationState:
    """Start a propagation session on ``volume`` along ``axis``; nothing is encoded yet.

    Args:
        model: a generalist from :func:`semisam.generalists.build_generalist`.
        volume: the scan.
        axis: slice axis (``axial`` = the file's third voxel axis).
        window: intensity window, a preset name, or ``None`` (CT lung window / MR percentiles by
            ``modality``, guessed from the intensities when not given).
        params: propagation thresholds; defaults when ``None``.
        cache: a shared embedding cache (e.g. the one a background precompute fills).
        modality: ``"CT"`` or ``"MR"`` for the default window.
        scan_id: cache key of the scan (default: :func:`scan_fingerprint`, its content and geometry).
    """
    if axis not in AXIS_NAMES:
        raise PromptError(f"unknown axis {axis!r}; use one of {', '.join(AXIS_NAMES)}")
    win = resolve_window(volume, window, modality)
    pixel_mm, slice_mm = slice_geometry(volume, axis)
    _check_square_pixel_size(volume, axis, pixel_mm)
    if SquarePixels.needed(pixel_mm) and not hasattr(model, "propagate_volume"):
        # e.g. coronal/sagittal slices of a thick-slice scan: the model sees them resampled to square pixels.
        model = SquarePixels(model, pixel_mm)  # type: ignore[assignment]
    encoder = SliceEncoder(model, volume.array, axis, win, cache, scan_id=scan_id or scan_fingerprint(volume))
    return PropagationState(
        model=model,
        volume=volume,
        axis=axis,
        encoder=encoder,
        params=params or PropagationParams(),
        pixel_mm=pixel_mm,
        slice_mm=slice_mm,
    )


def add_prompt(
    state: PropagationState,
    slice_index: int,
    box: tuple[int, int, int, int] | None = None,
    point: tuple[int, int] | None = None,
    positive: bool = True,
) -> tuple[int, int]:
    """Add a box or a point on a slice (slice pixel coordinates ``(column, row)``).

    Only the range the prompt affects is invalidated: the slice's own tracks, and the tracks of the
    neighbouring key slices that ran into or across it (truncated at it; their masks on the other
    slices are kept).

    Returns:
        ``(lo, hi)``: the exclusive slice range whose masks may change at the next :func:`propagate`.

    Raises:
        PromptError: bad slice, box or point.
    """
    from semisam.prompts import make_prompt

    prompt = make_prompt(state.axis, state.volume.shape, slice_index, box, point, positive)
    return add_prompts(state, [prompt])


def add_prompts(state: PropagationState, prompts: list[Prompt]) -> tuple[int, int]:
    """Add several validated :class:`~semisam.prompts.Prompt` at once; returns the affected range."""
    lo, hi = state.n_slices, -1
    for p in prompts:
        s = int(p.slice)
        below = max((k for k in state.keys if k < s), default=-1)
        above = min((k for k in state.keys if k > s), default=state.n_slices)
        key = state.keys.setdefault(s, KeySlice())
        key.prompts.append(p)
        key.fresh = False
        # The slice's own tracks start from a changed answer: drop them. Neighbours' tracks are
        # re-limited (truncated) lazily by propagate(), which compares each track's limit.
        state.tracks.pop((s, 1), None)
        state.tracks.pop((s, -1), None)
        lo, hi = min(lo, below), max(hi, above)
    return lo, hi
