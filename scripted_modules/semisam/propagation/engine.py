"""Run a propagation session: key-slice answers, tracks both ways, reconciliation, 3D clean-up.

2D models (LiteMedSAM, SAM, MedSAM): each key slice is answered from its prompts (asked again with points
when the answer sits on a brighter rim, :mod:`.rim`); from every key slice a track runs up and one runs
down, slice by slice, until the structure ends or the next key slice is reached. Slices thin against the
structure (``slice_mm <= r / 2``) use :func:`semisam.propagation.follow.follow_one` (the previous mask
carried by registration places the prompt and refuses answers that drift); thick ones (the 5-6.5 mm
lesion scans) :func:`semisam.propagation.step.propagate_one`. A track beyond the outermost of several key
slices runs at most half the largest gap between them, plus one slice, and on thin slices ends where its
area grows by :data:`~semisam.propagation.continuity.REBOUND_RATIO` (the structure's largest slice is
behind it).

A key slice with several boxes (the left and the right caudate) has several *parts*: its tracks follow each
part in its own lane (:class:`~semisam.propagation.state.Lane`), so that no step boxes the tissue between
them, and a slice's mask is the union of the lanes that reached it. Parts whose boxes, grown by the step's
margin, touch are followed as one (the two thalami: unchanged). Both caudates of 8 whole-head subjects:
1 box on the largest slice 0.299 -> 0.416 mean Dice, 3 boxes 0.475 -> 0.536 (``docs/benchmarks.md``).
Each click of a key slice goes to the box it is meant for, and a slice with clicks and no box is
anchored on a box around each part of its mask so far (:mod:`.key_prompts`).

Between two key slices both tracks cover the gap. Where they agree (Dice >= ``min_agreement``) the slice
takes the distance-weighted mean of their logits (the nearer key slice counts more); where they disagree,
or only one of them reached the slice, the more confident answer is kept and the slice is *flagged*
(:attr:`PropagationResult.flagged`, first in :attr:`PropagationResult.review_order`). Confidence is the
model's predicted IoU x intensity likeness x agreement with the carried mask, times the two tracks'
agreement between key slices. Finally :func:`semisam.propagation.cleanup.keep_supported` keeps only the
3D components that a key slice's mask touches.

SAM 2-family models (``propagate_volume`` method): the slices go to SAM 2's video predictor as frames
and its memory bank propagates; their object score is the per-slice confidence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from semisam.generalists.base import SlicePrompt
from semisam.generalists.view import choose
from semisam.metrics import dice
from semisam.propagation.cleanup import keep_supported
from semisam.propagation.continuity import rebound_cut
from semisam.propagation.follow import follow_one, is_thin
from semisam.propagation.key_prompts import anchor_boxes, group_boxes, key_prompts
from semisam.propagation.lesion import LesionModel, part_models
from semisam.propagation.result import PropagationResult
from semisam.propagation.rim import rim_like, rim_points
from semisam.propagation.state import KeySlice, Lane, PropagationState, Track
from semisam.propagation.step import SliceResult, expand_box, propagate_one
from semisam.slices import axis_index, box_from_mask, put_slice, take_slice

log = logging.getLogger(__name__)


def _key_prompts(
    state: PropagationState, key: KeySlice, previous: np.ndarray | None, sizes: list | None = None
) -> list[SlicePrompt]:
    """The prompts to ask on key slice ``key`` (:func:`semisam.propagation.key_prompts.key_prompts`);
    ``previous``, the slice's 2D mask so far, anchors clicks on a slice without a box; without one,
    ``sizes`` (:func:`_nearest_sizes`) size the boxes its positive clicks get."""
    pts = [p for p in key.prompts if p.point is not None]
    points = np.array([p.point for p in pts], dtype=np.float32).reshape(-1, 2) if pts else None
    labels = np.array([1 if p.positive else 0 for p in pts], dtype=np.int64) if pts else None
    boxes = [tuple(float(v) for v in p.box) for p in key.prompts if p.box is not None]
    return key_prompts(boxes, points, labels, previous, _margin_px(state), sizes, state.slice_shape)  # type: ignore[arg-type]


def _margin_px(state: PropagationState) -> tuple[float, float]:
    """The step's box margin (``box_margin_mm``) in pixels, ``(columns, rows)``."""
    return state.params.box_margin_mm / state.pixel_mm[1], state.params.box_margin_mm / state.pixel_mm[0]


def _answer_key(
    state: PropagationState,
    index: int,
    key: KeySlice,
    previous: np.ndarray | None,
    sizes: list | None = None,
) -> None:
    prompts = _key_prompts(state, key, previous, sizes)
    key.result, key.lesion, key.fresh, key.closer, key.parts, key.part_lesions = (
        None,
        None,
        True,
        False,
        [],
        [],
    )
    if not prompts:
        return
    image = state.image(index)
    answers = []
    for p in prompts:
        pred, closer = _answer_seen(state, index, image, p)
        answers.append(SliceResult(index, pred.logits.astype(np.float32), pred.score, 1.0, index, p, "key"))
        key.closer |= closer
    res = _union_result(index, index, answers)
    if res.mask.any():
        key.result = res
        key.lesion = LesionModel.fit(image, res.mask)
        key.parts = _separate_parts(state, index, [a for a in answers if a.area])
        key.part_lesions = part_models(image, key.lesion, [p.mask for p in key.parts])


def _separate_parts(state: PropagationState, index: int, answers: list[SliceResult]) -> list[SliceResult]:
    """The parts a key slice's tracks follow apart: the boxes' answers, those whose boxes (the user's;
    the answer's for a prompt without one) grown by the step's margin (``box_margin_mm``) touch merged
    into one. Parts that close together (the left and the right thalamus across the third ventricle) are
    one structure split by a thin line, and their joint area is the steadier signal of where it ends;
    parts further apart (the two caudate heads across the ventricles) would hand a joint box the tissue
    between them. (The answers' own boxes, smaller than the truth, split touching thalami too: on two
    whole-head subjects whose largest slice holds both, 1-box Dice fell 0.556 -> 0.486, 0.654 -> 0.487.)

    ``answers``: one non-empty answer per prompt; returns one :class:`SliceResult` per part, in prompt
    order."""
    mx, my = _margin_px(state)
    grown = []
    for a in answers:
        box = a.prompt.box
        drawn = box_from_mask(a.mask) if box is None else tuple(int(round(v)) for v in box)
        grown.append(expand_box(drawn, mx, my, a.logits.shape))
    group = group_boxes(grown)  # box against box, so the prompt order changes nothing
    return [
        _union_result(index, index, [a for a, gi in zip(answers, group, strict=True) if gi == g])
        for g in sorted(set(group), key=group.index)
    ]


def _answer_seen(state: PropagationState, index: int, image: np.ndarray, prompt: SlicePrompt):
    """``(answer, closer)``: the key slice's answer to ``prompt`` from the whole slice, or from a view around
    its box when that answer fills the box better (:func:`semisam.generalists.view.choose`)."""
    whole = _answer_prompt(state, state.embedding(index), image, prompt)
    # The user's box alone places the view when there is one (points inside it move nothing)
    extent = prompt.box if prompt.box is not None else _positive_extent(prompt)
    view = state.view(extent)
    if view is None:
        return whole, False
    closer = _answer_prompt(state, state.embedding(index, view), image, prompt)
    if choose(whole, closer, extent):
        log.debug("key slice %d: a %d px view answers better than the whole slice", index, view.side)
        return closer, True
    return whole, False


def _positive_extent(prompt: SlicePrompt) -> tuple[float, float, float, float] | None:
    """The box around a prompt's positive points (slice pixels), or ``None``."""
    if prompt.points is None or prompt.point_labels is None:
        return None
    pts = np.asarray(prompt.points, np.float32).reshape(-1, 2)[np.asarray(prompt.point_labels) > 0]
    if not len(pts):
        return None
    return (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))


def _track_step(state: PropagationState, lesion, s: int, prev, thin: bool, outward: bool):
    """One step of a track onto slice ``s`` from ``prev``, on the whole slice.

    Tracks do not look through views, even from a key slice answered closer: measured on seven AAL
    structures of the whole Colin27 head (``Testing/benchmarks/propagation.py``, axial, one jitter draw),
    tracks answering both the whole slice and a view that follows the structure (the step keeping the
    higher predicted IoU + likeness) lowered the mean 1-box Dice from 0.388 to 0.355 (caudate L 0.29 ->
    0.15) and the 3-box Dice from 0.505 to 0.491; views on key slices alone gave 0.427 and 0.491. A
    view's predicted IoU is not comparable with the whole slice's, so a track cannot choose between them.
    Tracks answering in a view around each lane's previous mask alone (no choice) did worse still: both
    caudates of three whole-head development subjects, 1 box 0.500 -> 0.285 mean Dice, 3 boxes 0.462 ->
    0.492, at an extra encode per lane and slice.
    """
    emb = state.embedding(s)
    if thin:  # neighbouring slices nearly alike: carry the mask by registration (follow.py)
        return follow_one(
            state,  # its predict() counts decoder calls
            emb,
            state.image(s),
            state.image(prev.slice),
            prev,
            lesion,
            state.params,
            state.pixel_mm,
            state.slice_mm,
            s,
            outward=outward,
        )
    return propagate_one(
        state, emb, state.image(s), prev, lesion, state.params, state.pixel_mm, state.slice_mm, s
    )


def _answer_prompt(state: PropagationState, emb, image: np.ndarray, prompt: SlicePrompt):
    """The model's answer to a key slice's box, asked again with points when it sits on a brighter rim
    (:mod:`semisam.propagation.rim`). Prompts with the user's own points are answered as given."""
    pred = state.predict(emb, prompt)
    if prompt.box is None or prompt.points is not None or not rim_like(image, pred.mask, prompt.box):
        return pred
    points, labels = rim_points(pred.mask, prompt.box)
    retry = state.predict(emb, SlicePrompt(box=prompt.box, points=points, point_labels=labels))
    cx, cy = int(points[0, 0]), int(points[0, 1])
    if retry.mask[cy, cx] and not rim_like(image, retry.mask, prompt.box):
        log.debug("key slice answer sat on a brighter rim; re-asked with the box centre")
        return retry
    return pred


def _limit(state: PropagationState, key: int, direction: int) -> int:
    others = [k for k in state.keys if (k - key) * direction > 0]
    if not others:
        return state.n_slices if direction > 0 else -1
    return min(others) if direction > 0 else max(others)


def _outward_reach(state: PropagationState, track: Track) -> int | None:
    """How far a track beyond the outermost key slice may run, in slices; ``None``: no bound.

    Several boxes are spread over the structure the way :func:`semisam.propagation.simulate.key_slices`
    spreads them (the centres of equal parts of the extent), so the structure goes on beyond the
    outermost box for about half a gap between boxes. A track may run half the largest gap, plus one
    slice; further on it has left the structure (on 1 mm T1 a track from the lowest of three thalamus
    boxes otherwise runs 40 slices down the brainstem, whose tissue looks alike: intensity cannot stop
    it). With one key slice there is no such bound.
    """
    keys = sorted(k for k, v in state.keys.items() if v.result is not None)
    if len(keys) < 2 or (track.limit not in (-1, state.n_slices)):
        return None
    return int(np.ceil(max(np.diff(keys)) / 2)) + 1


def _run_track(state: PropagationState, key: KeySlice, track: Track, progress: Callable | None) -> None:
    """Extend ``track`` from where it reached (or the key slice) until every lane stops or the track
    reaches its limit: each part of the key slice's answer is followed on its own (:class:`Lane`), and a
    slice's mask is the union of the lanes that reached it."""
    if key.result is None:
        track.stop = "key slice has no mask"
        return
    starts = key.parts or [key.result]
    if not track.lanes and not track.results:
        track.lanes = [Lane() for _ in starts]
    models = key.part_lesions or [key.lesion]  # each lane judges its slices against its own part's model
    s = (track.results[-1].slice if track.results else track.key) + track.direction
    thin = is_thin(key.lesion, state.pixel_mm, state.slice_mm)
    reach = _outward_reach(state, track)
    outward = track.limit in (-1, state.n_slices)
    # Beyond the outermost key slice, thin tracks also end where the area rebounds (continuity.py).
    rebound = thin and outward and state.params.rebound_ratio > 0
    while s != track.limit:
        if reach is not None and abs(s - track.key) > reach:
            _stop_all(track, s, f"more than {reach} slices beyond the outermost key slice")
            return
        reached, cut = [], False
        for lane, start, model in zip(track.lanes, starts, models, strict=True):
            if lane.stop is None:
                went = _lane_step(state, model, lane, start, s, thin, outward, rebound, reach is not None)
                if went == "on":
                    reached.append(lane.results[-1])
                cut |= went == "cut"
        union = _union_result(s, track.key, reached) if reached else None
        if cut:  # a lane gave back slices it had reached: their unions change (this slice's included)
            track.results = _lane_unions(track)
        elif union is not None:
            track.results.append(union)
        if progress is not None:
            progress(s, union)
        if union is None:
            last = max(track.lanes, key=lambda ln: (ln.stop_at - track.key) * track.direction)
            track.stop = last.stop
            log.debug("track %d%+d stops at %s", track.key, track.direction, track.stop)
            return
        s += track.direction
    track.stop = None


def _lane_step(
    state: PropagationState,
    lesion: LesionModel | None,
    lane: Lane,
    start: SliceResult,
    s: int,
    thin: bool,
    outward: bool,
    rebound: bool,
    past_peak: bool,
) -> str:
    """Step ``lane`` onto slice ``s``: ``"on"``; ``"stop"`` where it ends there; ``"cut"`` where it ends
    and gives back slices it had reached (the area rebounded). The lane's stop is set when it ends."""
    prev = lane.results[-1] if lane.results else start
    outcome = _track_step(state, lesion, s, prev, thin, outward)
    if outcome.stop is not None:
        lane.stop, lane.stop_at = f"slice {s}: {outcome.stop}", s
        return "stop"
    assert outcome.result is not None
    outcome.result.key = start.key
    lane.results.append(outcome.result)
    if rebound:
        areas = [r.area for r in [start, *lane.results]]
        cut = rebound_cut(areas, state.params.rebound_ratio, past_peak=past_peak)
        if cut is not None:
            low = lane.results[cut - 1].slice if cut > 0 else start.slice
            lane.results = lane.results[:cut]
            lane.stop = f"slice {s}: the area grew again after slice {low}: another structure"
            lane.stop_at = s
            return "cut"
    return "on"


def _stop_all(track: Track, s: int, reason: str) -> None:
    for lane in track.lanes:
        if lane.stop is None:
            lane.stop, lane.stop_at = f"slice {s}: {reason}", s
    track.stop = f"slice {s}: {reason}"


def _union_result(s: int, key: int, reached: list[SliceResult]) -> SliceResult:
    """One slice's result from the lanes that reached it: the union of their masks (the larger logit),
    their mean predicted IoU, likeness and agreement; the first lane's prompt and candidate (``"carried-only"``
    where any lane's is)."""
    if len(reached) == 1:
        return reached[0]
    first = reached[0]
    # A part whose every answer was refused leaves the slice for review, whichever lane it is.
    carried = next((r for r in reached if r.candidate == "carried-only"), first)
    return SliceResult(
        s,
        np.maximum.reduce([r.logits for r in reached]).astype(np.float32),
        float(np.mean([r.score for r in reached])),
        float(np.mean([r.likeness for r in reached])),
        key,
        first.prompt,
        carried.candidate,
        float(np.mean([r.agreement for r in reached])),
        min(r.carried_run for r in reached),
    )


def _lane_unions(track: Track) -> list[SliceResult]:
    """The track's per-slice results rebuilt from its lanes, up to the first slice no lane reached."""
    by_slice: dict[int, list[SliceResult]] = {}
    for lane in track.lanes:
        for r in lane.results:
            by_slice.setdefault(r.slice, []).append(r)
    out, s = [], track.key + track.direction
    while s in by_slice:
        out.append(_union_result(s, track.key, by_slice[s]))
        s += track.direction
    return out


def _truncate(track: Track, limit: int) -> None:
    """Keep what ``track`` found before a new ``limit`` nearer its key slice (no model call); a lane that
    ended at or beyond the new limit now reaches it."""
    d = track.direction
    track.results = [r for r in track.results if (limit - r.slice) * d > 0]
    for lane in track.lanes:
        lane.results = [r for r in lane.results if (limit - r.slice) * d > 0]
        last = lane.results[-1].slice if lane.results else track.key
        if last == limit - d:  # it reaches the new limit (a lane cut back by a rebound may not)
            lane.stop, lane.stop_at = None, None
    if any(ln.stop is None for ln in track.lanes):
        track.stop = None
    track.limit = limit


def _update_track(state: PropagationState, k: int, d: int, progress: Callable | None) -> Track:
    """Bring track ``(k, d)`` up to date with the current key slices, reusing its masks when possible.

    If the work is interrupted (``progress`` raised: the user cancelled), the half-extended track is
    dropped, so the next :func:`propagate` runs it again instead of taking its partial masks as complete.
    """
    try:
        return _extend_track(state, k, d, progress)
    except BaseException:
        state.tracks.pop((k, d), None)
        raise


def _extend_track(state: PropagationState, k: int, d: int, progress: Callable | None) -> Track:
    limit = _limit(state, k, d)
    track = state.tracks.get((k, d))
    if track is None:
        track = state.tracks[(k, d)] = Track(k, d, limit)
        _run_track(state, state.keys[k], track, progress)
    elif (track.limit - limit) * d > 0:
        _truncate(track, limit)  # a new key slice cut into the track: keep the masks before it
    elif track.limit != limit:
        track.limit = limit  # the limit moved away: continue where the track had reached its old limit
        if track.stop is None:
            _run_track(state, state.keys[k], track, progress)
    return track


def propagate(
    state: PropagationState,
    progress: Callable[[int, object], None] | None = None,
    *,
    across_slices: bool = True,
    current: np.ndarray | None = None,
) -> PropagationResult:
    """Bring every key slice and track up to date (reusing what is still valid) and assemble the mask.

    Args:
        state: from :func:`~semisam.propagation.state.init_state` with at least one prompt.
        progress: called as ``progress(slice_index, result)`` after each slice a track worked on
            (``result`` ``None`` where the track ended there). It may raise
            to stop the work (a Cancel button): the exception propagates, finished tracks are kept and the
            interrupted one is dropped, so calling :func:`propagate` again completes the same result.
        across_slices: ``False`` answers the prompted (key) slices only, each from its own prompts, and
            runs no track: the mask is empty off the key slices. (A user fixing a proposal slice by slice
            wants exactly the prompted slices answered.) The tracks already computed are kept for the
            next propagation across slices. SAM 2-family models still run their whole video (their
            memory needs it) and the answer is cut to the key slices.
        current: the segment's mask ``(Z, Y, X)`` on the volume's grid, or ``None``. A key slice with
            points and no box is anchored on a box around each part of a mask: with ``across_slices`` off, this mask's
            slice (what the user sees now, edits included), else the mask a track gives it; either falls
            back to the other (a positive point that corrects a proposal keeps to the proposal's extent).

    Returns:
        :class:`PropagationResult`.
    """
    if not state.keys:
        raise ValueError("no prompts: add a box or a point on at least one slice first")
    if current is not None and np.shape(current) != tuple(state.volume.shape):
        raise ValueError(
            f"the segment's mask {np.shape(current)} is not on the scan's grid {state.volume.shape}"
        )
    if hasattr(state.model, "propagate_volume"):
        from semisam.propagation.memory import propagate_with_memory

        result = propagate_with_memory(state)
        return result if across_slices else only_key_slices(result, state.axis)
    for k in sorted(state.keys):
        key = state.keys[k]
        if key.fresh and not key.unsized:
            continue
        clicks = not any(p.box is not None for p in key.prompts)
        previous = _anchor(state, k, current, prefer_current=not across_slices) if clicks else None
        sizes = _nearest_sizes(state, k, current) if clicks and previous is None else []
        if key.fresh and previous is None and not sizes:  # still nothing to anchor or size on
            continue
        _answer_key(state, k, key, previous, sizes)
        key.unsized = clicks and previous is None and not sizes and key.result is None
        for d in (1, -1):
            state.tracks.pop((k, d), None)
    if not across_slices:
        return _assemble(state, with_tracks=False)
    for k in sorted(state.keys):
        for d in (1, -1):
            _update_track(state, k, d, progress)
    return _assemble(state)


def only_key_slices(result: PropagationResult, axis: str) -> PropagationResult:
    """``result`` with everything off its key slices removed (mask, confidence, source, flags)."""
    keys = set(result.key_slices)
    mask = np.zeros_like(result.mask)
    confidence = np.full_like(result.confidence, np.nan)
    source = np.full_like(result.source, -1)
    for k in keys:
        put_slice(mask, axis, k, take_slice(result.mask, axis, k))
        confidence[k], source[k] = result.confidence[k], result.source[k]
    return PropagationResult(mask, confidence, source, {}, sorted(keys), {})


def _anchor(
    state: PropagationState, index: int, current: np.ndarray | None, prefer_current: bool = False
) -> np.ndarray | None:
    """The 2D mask that anchors point-only prompts on key slice ``index``: a track's (the most
    confident) or ``current``'s slice when it holds anything, ``current`` first if ``prefer_current``;
    ``None`` when neither has one."""
    res = _current_result(state, index)
    tracked = res.mask if res is not None else None
    own = None
    if current is not None:
        m = np.asarray(take_slice(current, state.axis, index)) > 0
        own = m if m.any() else None
    first, second = (own, tracked) if prefer_current else (tracked, own)
    return first if first is not None else second


def _nearest_sizes(
    state: PropagationState, index: int, current: np.ndarray | None
) -> list[tuple[float, ...]]:
    """Boxes ``(x0, y0, x1, y1)`` of the structure on the slice nearest ``index`` (not ``index`` itself)
    that shows it: a key slice's own boxes, else the parts (:func:`~.key_prompts.anchor_boxes`) of the
    mask ``current`` or a track gives it; ``[]`` when no slice does. They size the boxes the clicks of a
    slice with nothing to anchor them get. Only what the user drew and what earlier propagations left
    count, not the answers of the key slices answered now, so the order they are answered in changes
    nothing."""
    boxed = {k for k, key in state.keys.items() if any(p.box is not None for p in key.prompts)}
    held = {r.slice for t in state.tracks.values() for r in t.results if r.area}
    if current is not None:
        # a projection of the largest value, not a boolean copy of the whole segment (78 MB on a 512 x 512 x
        # 300 CT) at every clicked slice: > 0 is what holds the structure, whatever values the segment uses
        a = axis_index(state.axis)
        top = np.asarray(current).max(axis=tuple(d for d in range(3) if d != a))
        held |= {int(i) for i in np.flatnonzero(top > 0)}
    near = (boxed | held) - {index}
    if not near:
        return []
    s = min(near, key=lambda i: (abs(i - index), i))
    if s in boxed:
        return [tuple(float(v) for v in p.box) for p in state.keys[s].prompts if p.box is not None]
    mask = None
    if current is not None and (on := np.asarray(take_slice(current, state.axis, s)) > 0).any():
        mask = on
    elif (res := _current_result(state, s)) is not None:
        mask = res.mask
    return [] if mask is None else [tuple(float(v) for v in b) for b in anchor_boxes(mask, _margin_px(state))]


def _current_result(state: PropagationState, index: int) -> SliceResult | None:
    """The mask a track currently gives slice ``index`` (to anchor point-only corrections)."""
    best = None
    for t in state.tracks.values():
        for r in t.results:
            if r.slice == index and (best is None or r.confidence > best.confidence):
                best = r
    return best


def _reconcile(
    state: PropagationState, s: int, results: list[SliceResult]
) -> tuple[np.ndarray, float, int, str | None]:
    """One slice's ``(logits, confidence, source key, flag)`` from the tracks that reached it.

    Two tracks (one from each neighbouring key slice) that agree (Dice >= ``min_agreement``) are averaged,
    the nearer key slice weighing more, and their confidence is scaled by their agreement. Two that
    disagree cannot both be right: the more confident one is kept (its confidence scaled by the
    agreement too) and the slice is flagged. A slice between two key slices that only one track reached
    is flagged as well: the other key slice's track ended before it.
    """
    if len(results) == 1:
        r = results[0]
        flag = "every answer refused: the registered previous mask" if r.candidate == "carried-only" else None
        lower = max((k for k in state.keys if k < s), default=None)
        upper = min((k for k in state.keys if k > s), default=None)
        if flag is None and lower is not None and upper is not None:
            other = upper if r.key == lower else lower
            if state.keys[other].result is not None:
                flag = f"only the track from key slice {r.key} reached it (key slice {other}'s ended)"
        return r.logits, r.confidence, r.key, flag
    a, b = results[0], results[1]
    agreement = dice(a.mask, b.mask)
    if agreement >= state.params.min_agreement:
        w = np.array([1.0 / abs(s - r.key) for r in results])
        w /= w.sum()
        logits = sum(wi * r.logits for wi, r in zip(w, results, strict=True))
        conf = float(sum(wi * r.confidence for wi, r in zip(w, results, strict=True)))
        src = results[int(np.argmax(w))].key
        flag = None
        if any(r.candidate == "carried-only" for r in results):
            flag = "every answer refused on one track: the registered previous mask"
        return logits, conf * agreement, src, flag
    best = max(results, key=lambda r: (r.confidence, -abs(s - r.key)))
    flag = f"the tracks from key slices {a.key} and {b.key} disagree (Dice {agreement:.2f})"
    return best.logits, best.confidence * agreement, best.key, flag


def _assemble(state: PropagationState, with_tracks: bool = True) -> PropagationResult:
    n = state.n_slices
    per_slice: dict[int, list[SliceResult]] = {}
    for k, key in state.keys.items():
        if key.result is not None:
            per_slice[k] = [key.result]
    for t in state.tracks.values() if with_tracks else ():
        for r in t.results:
            if r.slice not in state.keys:
                per_slice.setdefault(r.slice, []).append(r)
    mask = np.zeros(state.volume.shape, dtype=np.uint8)
    confidence = np.full(n, np.nan, dtype=np.float32)
    source = np.full(n, -1, dtype=np.int64)
    flagged: dict[int, str] = {}
    for s, results in per_slice.items():
        if s in state.keys:
            r = results[0]
            logits, conf, src, flag = r.logits, r.score, r.key, None
        else:
            logits, conf, src, flag = _reconcile(state, s, results)
        m = logits > 0
        if m.any():
            put_slice(mask, state.axis, s, m.astype(np.uint8))
            confidence[s], source[s] = conf, src
            if flag is not None:
                flagged[s] = flag
    support = np.zeros(state.volume.shape, dtype=bool)
    for k, key in state.keys.items():
        if key.result is not None:
            put_slice(support, state.axis, k, key.result.mask)
    mask = keep_supported(mask, support)
    for s in range(n):  # slices emptied by the clean-up lose their confidence
        if not np.isnan(confidence[s]) and not _slice_any(mask, state.axis, s):
            confidence[s], source[s] = np.nan, -1
            flagged.pop(s, None)
    stops = {f"{t.key}:{t.direction:+d}": t.stop for t in state.tracks.values() if t.stop and with_tracks}
    return PropagationResult(mask, confidence, source, stops, sorted(state.keys), flagged)


def _slice_any(mask: np.ndarray, axis: str, s: int) -> bool:
    return bool(take_slice(mask, axis, s).any())
