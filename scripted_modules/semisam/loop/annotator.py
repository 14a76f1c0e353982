"""A simulated radiologist correcting one case with SemiSAMSegment's tools (boxes, +/- points, propagate).

It sees the truth (it *is* the radiologist) but the product's models never do: the truth only decides
where the annotator clicks. What it does, per case:

1. **Target**: ``target_fraction`` (0.9) x the *oracle* Dice, what a box on every truth slice reaches
   with the same generalist through the same propagation engine (:func:`oracle_dice`).
2. **Correct**: while the case's Dice is below the target and the prompt budget lasts, it goes through
   the slices in the product's review order (:class:`semisam.review.ReviewOrder`: the specialist's
   per-slice uncertainty ranking, and after each propagation across slices the slices it answered first,
   least confident first by the generalist's predicted IoU, as SemiSAMSegment's *Next uncertain slice*
   offers them; without a specialist it looks where the mask is most wrong first, as a radiologist
   scrolling the scan would) and
   on the first *clearly wrong* slice (per-slice Dice below the target and at least ``clearly_wrong`` of
   the worst slice's wrong pixels) it places

   - a **box** from the truth (each corner moved by Gaussian jitter of ``jitter_px`` pixels, a human
     hand) when the slice holds the structure and has no box yet; one box per separate part of the
     structure on that slice (left and right thalamus: two boxes, two interactions);
   - else a **point** on the largest error: at the pixel deepest inside the largest connected region
     of missed (positive point) or extra (negative point) pixels, at most ``max_points_per_slice``;

   then propagates and writes the result into the mask through the editing session SemiSAMSegment's
   *Propagate* runs (:class:`semisam.propagation.session.EditingSession`, one per case, so each new
   prompt recomputes only the range it affects): inside the propagated slice range only and, by default
   (rule ``keep_agreeing``), only from each prompted slice outward up to the first slice where the new
   answer agrees with the mask already there.
   A propagation that lowers the Dice is undone, as a user undoes it (:meth:`EditingSession.undo`: the
   prompt is deleted and the session restarts without it, its embeddings cached); its seconds still
   count.
   **Slice by slice after an undo** (``slice_after_undo``): the same prompt is then placed again (and
   counted again) with SemiSAMSegment's *Propagate across slices* turned off, which answers and writes
   the prompted slices only (the new one and those prompted before, each from its own prompts), and the
   rest of the case is corrected that way. A radiologist whose box on a good proposal made the
   neighbouring slices worse does not box again and hope: they fix the slices that are wrong one at a
   time, keeping the proposal's good ones. (Without it, every prompt after such an undo tended to be
   undone as well, and the case ended with slices drawn by hand at 30 s each.)
   A clearly wrong slice where the structure is absent and the mask's pixels belong to a piece of the
   mask that touches the structure nowhere (a specialist's stray false positive, face-connected in 3D)
   is cleared with one click of Segment Editor's *Islands* effect (*Remove selected island*), which
   removes that piece on every slice it spans (``islands``; not a prompt, so outside the budget).
3. **Give up on prompts** when the budget is spent or ``patience`` prompts in a row did not raise the
   Dice (slice by slice, each slice also gets at most its box and ``max_points_per_slice`` points).
   Then every slice still wrong is drawn by hand (the truth's slice copied), largest error first, until the
   target is reached; each counts as a hand-drawn slice, priced by how wrong it was
   (:meth:`semisam.loop.effort.TimeModel.hand_share`), except that stray pieces are still removed as
   islands.

Everything is seeded (the jitter) so a resumed simulation redoes a case identically.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from semisam.clicks import error_point
from semisam.generalists.base import PromptableModel
from semisam.generalists.cache import EmbeddingCache
from semisam.loop.effort import Effort
from semisam.merge import MergeRule
from semisam.metrics import dice
from semisam.propagation import PropagationState, add_prompt, init_state, propagate
from semisam.propagation.session import EditingSession
from semisam.propagation.simulate import structure_boxes
from semisam.review import ReviewOrder
from semisam.scan.volume import Volume
from semisam.slices import take_slice

log = logging.getLogger(__name__)

#: Bytes of one LiteMedSAM slice embedding (256 x 64 x 64 float32); sizes the per-case cache.
EMBEDDING_BYTES = 4 * 2**20


@dataclass(frozen=True)
class AnnotatorConfig:
    """How the simulated annotator works (see the module docstring).

    Attributes:
        target_fraction: the case is done at this fraction of the oracle Dice.
        slice_dice: a slice whose Dice against the truth is below this is wrong (and gets a prompt);
            ``None``: the case's target Dice (a slice is wrong when it is worse than the case must be;
            a fixed 0.8 made the annotator poke at slices the generalist cannot do better on).
        jitter_px: standard deviation (pixels) of each box corner's placement error.
        budget: prompts (boxes + points) per case before the rest is drawn by hand; ``None``: half the
            structure's slices, at least 4 (a box on every other slice: what boxing alone can cost).
        max_points_per_slice: points on one slice before the annotator moves on.
        clearly_wrong: the annotator acts on the first slice in the review order whose wrong pixels are
            at least this fraction of the worst slice's: scrolling in that order it passes over slices
            that are only slightly off and stops where the mask is clearly wrong. (Taking the first
            wrong slice, however slightly, spent the first prompts on the structure's thin end slices,
            which the uncertainty ranking puts first, while its middle was missed.)
        patience: prompts in a row that may leave the Dice unimproved before the annotator stops
            prompting (a radiologist stops clicking when clicks stop helping), across slices and slice by
            slice alike. (Slice by slice it once had no such stop, from when every hand-drawn slice cost
            30 s; priced by how wrong it is, a nearly right slice costs 6-10 s to touch up, and on 8
            whole-head caudate cases with 0.81-0.85 proposals the prompts placed after three useless ones
            raised the Dice by at most 0.003 at 2-4 s each: with the stop, 343 s instead of 532 s for the
            8; on 4 cases without a proposal, where boxes keep helping, nothing changed.)
        undo: undo a propagation that lowered the Dice (and delete its prompt).
        axis: slice axis of the prompts.
        merge_rule: how a propagation is written into the mask (:class:`semisam.merge.MergeRule`
            value): ``"keep_agreeing"`` (SemiSAMSegment's default) or ``"replace"`` (the whole range).
        slice_after_undo: after an undone propagation, place the same prompt again on its slice only
            and correct the rest of the case slice by slice (module docstring); needs ``undo``.
        islands: remove a piece of the mask that touches the structure nowhere with one click (Segment
            Editor's Islands effect) instead of clearing each of its slices (module docstring). Without
            it, a weak specialist's stray false positives cost a negative point or a hand-drawn slice
            each: a whole-head amygdala case whose proposal from 4 labeled cases scattered them over ~40
            empty slices cost 60 hand-drawn slices (1,388 s against 438 s without a proposal).
    """

    target_fraction: float = 0.9
    slice_dice: float | None = None
    jitter_px: float = 2.0
    budget: int | None = None
    max_points_per_slice: int = 2
    clearly_wrong: float = 0.5
    patience: int = 3
    undo: bool = True
    axis: str = "axial"
    merge_rule: str = MergeRule.KEEP_AGREEING.value
    slice_after_undo: bool = True
    islands: bool = True

    def budget_for(self, truth: np.ndarray) -> int:
        """The prompt budget for a case with label ``truth`` ``(Z, Y, X)``."""
        if self.budget is not None:
            return int(self.budget)
        from semisam.propagation.simulate import lesion_slices

        return max(4, math.ceil(len(lesion_slices(truth, self.axis)) / 2))


@dataclass
class Action:
    """One prompt the annotator placed: ``kind`` ``"box"`` / ``"point+"`` / ``"point-"`` / ``"hand"`` /
    ``"island"`` (stray pieces of the mask removed with one click each);
    ``undone`` when its propagation lowered the Dice and was undone (``dice_after`` is then the Dice it
    gave, before the undo); ``slice_only`` when it was answered and written on its own slice only
    (*Propagate across slices* off)."""

    kind: str
    slice: int
    dice_after: float
    undone: bool = False
    slice_only: bool = False

    def to_json(self) -> dict:
        out = {"kind": self.kind, "slice": self.slice, "dice_after": round(self.dice_after, 4)}
        if self.undone:
            out["undone"] = True
        if self.slice_only:
            out["slice_only"] = True
        return out


@dataclass
class AnnotationResult:
    """One corrected case.

    Attributes:
        mask: the accepted mask ``(Z, Y, X)`` uint8 (0/1) on the scan's grid.
        effort: interactions and compute seconds spent.
        proposal_dice: Dice of the starting mask (the specialist's proposal, or empty) vs the truth.
        prompt_dice: Dice after the last prompt, before anything was drawn by hand.
        final_dice: Dice of ``mask`` vs the truth.
        target_dice: the Dice the annotator worked towards.
        budget: the prompt budget it had.
        stop: why prompting ended: ``"target"``, ``"budget"``, ``"stalled"`` or ``"nothing_to_prompt"``.
        actions: every prompt and hand-drawn slice, in order.
    """

    mask: np.ndarray
    effort: Effort
    proposal_dice: float
    prompt_dice: float
    final_dice: float
    target_dice: float
    budget: int
    stop: str
    actions: list[Action] = field(default_factory=list)


def per_slice_errors(mask: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(dice per slice, wrong pixels per slice)`` along axis 0 of two ``(Z, Y, X)`` masks.

    A slice where both are empty has Dice 1 and no error.
    """
    m = np.asarray(mask, dtype=bool).reshape(mask.shape[0], -1)
    t = np.asarray(truth, dtype=bool).reshape(truth.shape[0], -1)
    inter = (m & t).sum(axis=1)
    total = m.sum(axis=1) + t.sum(axis=1)
    d = np.where(total > 0, 2.0 * inter / np.maximum(total, 1), 1.0)
    return d, total - 2 * inter


def stray_pieces(mask: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(Z, Y, X)`` int32: each face-connected piece of ``mask`` that touches no voxel of ``truth`` keeps
    its own id (> 0), the rest is 0; what Segment Editor's Islands effect removes with a click each."""
    lab, n = ndi.label(np.asarray(mask) > 0)
    if n:
        touching = np.unique(lab[(np.asarray(truth) > 0) & (lab > 0)])
        lab[np.isin(lab, touching)] = 0
    return lab


def remove_stray_pieces(mask: np.ndarray, truth: np.ndarray, s: int) -> int:
    """Remove from ``mask`` (in place) the stray pieces (:func:`stray_pieces`) that cross slice ``s``;
    returns how many (one click each)."""
    stray = stray_pieces(mask, truth)
    ids = np.unique(stray[s])
    ids = ids[ids > 0]
    if ids.size:
        mask[np.isin(stray, ids)] = 0
    return int(ids.size)


def jitter_box(
    box: tuple[int, int, int, int], shape: tuple[int, int], rng: np.random.Generator, jitter_px: float
) -> tuple[int, int, int, int]:
    """``box`` with each corner moved by ``N(0, jitter_px)`` pixels, clipped to a slice of ``shape``."""
    rows, cols = shape
    d = np.rint(rng.normal(0.0, jitter_px, 4)).astype(int) if jitter_px > 0 else np.zeros(4, int)
    x0, y0 = min(max(box[0] + d[0], 0), cols - 1), min(max(box[1] + d[1], 0), rows - 1)
    x1, y1 = min(max(box[2] + d[2], 0), cols - 1), min(max(box[3] + d[3], 0), rows - 1)
    return (int(min(x0, x1)), int(min(y0, y1)), int(max(x0, x1)), int(max(y0, y1)))


def new_cache(volume: Volume) -> EmbeddingCache:
    """An embedding cache that holds every slice of ``volume`` and as many key-slice views
    (:mod:`semisam.generalists.view`), one per case, shared by its sessions."""
    return EmbeddingCache(max(512 * 2**20, 2 * (max(volume.shape) + 8) * EMBEDDING_BYTES))


def start_session(
    model: PromptableModel, volume: Volume, axis: str, cache: EmbeddingCache, modality: str | None
) -> PropagationState:
    """A propagation session on the case, sharing ``cache`` (so no slice is encoded twice per case)."""
    return init_state(model, volume, axis, cache=cache, modality=modality, scan_id="simulate")


def precompute(state: PropagationState, slices: list[int]) -> float:
    """Encode ``slices`` into the session's cache now (the product does it while the user looks at the
    scan); returns the seconds it took."""
    t0 = time.perf_counter()
    for s in slices:
        if 0 <= s < state.n_slices:
            state.embedding(int(s))
    return time.perf_counter() - t0


def structure_slices(*masks: np.ndarray, margin: int = 2) -> list[int]:
    """Slices (axis 0) where any mask is non-empty, widened by ``margin`` (propagation looks one past)."""
    any_ = np.zeros(masks[0].shape[0], bool)
    for m in masks:
        any_ |= np.asarray(m).reshape(m.shape[0], -1).any(axis=1)
    idx = np.flatnonzero(any_)
    if idx.size == 0:
        return []
    return list(range(max(0, int(idx[0]) - margin), min(len(any_), int(idx[-1]) + margin + 1)))


def oracle_dice(
    model: PromptableModel,
    volume: Volume,
    truth: np.ndarray,
    cache: EmbeddingCache,
    modality: str | None = None,
    axis: str = "axial",
) -> float:
    """Dice that the truth's exact box on every truth slice reaches through the propagation engine."""
    from semisam.propagation.simulate import lesion_slices

    slices = lesion_slices(truth, axis)
    if not slices:
        return 1.0  # nothing to find: an empty mask is perfect
    state = start_session(model, volume, axis, cache, modality)
    for s in slices:
        for box in structure_boxes(take_slice(truth, axis, s)):
            add_prompt(state, s, box=box)
    return dice(propagate(state).mask, truth)


class SimulatedAnnotator:
    """Corrects cases as described in the module docstring.

    Args:
        model: the generalist the prompts go to (e.g. ``build_generalist("litemedsam")``).
        config: :class:`AnnotatorConfig`.
        modality: ``"CT"`` / ``"MR"`` for the default intensity window, as SemiSAMSegment passes it.
    """

    def __init__(
        self, model: PromptableModel, config: AnnotatorConfig | None = None, modality: str | None = None
    ):
        self.model = model
        self.config = config or AnnotatorConfig()
        self.modality = modality

    def annotate(
        self,
        volume: Volume,
        truth: np.ndarray,
        target_dice: float,
        rng: np.random.Generator,
        proposal: np.ndarray | None = None,
        review_order: list[int] | np.ndarray | None = None,
        cache: EmbeddingCache | None = None,
        compute_s: float = 0.0,
    ) -> AnnotationResult:
        """Correct ``proposal`` (or an empty mask) until ``target_dice`` (see the module docstring).

        Args:
            volume: the scan.
            truth: ``(Z, Y, X)`` truth mask (> 0 = structure) on the scan's grid.
            target_dice: stop prompting at this Dice.
            rng: the jitter's random generator (seed it per case for reproducible runs).
            proposal: the specialist's mask ``(Z, Y, X)``; ``None`` = no specialist (empty start).
            review_order: slices in the product's review order (most uncertain first); ``None``: the
                annotator's own order (most wrong pixels first).
            cache: embedding cache shared with the case's other sessions.
            compute_s: compute seconds already spent on the case (the auto-segment), added to the effort.
        """
        # Long: the correction loop keeps a dozen pieces of state (mask, Dice, budget, patience, undo,
        # slice-by-slice mode) that change together each turn; they read best in one loop.
        cfg = self.config
        axis = cfg.axis
        if axis != "axial":
            raise ValueError("the simulated annotator prompts axial slices only (axis='axial')")
        truth = (np.asarray(truth) > 0).astype(np.uint8)
        mask = np.zeros_like(truth) if proposal is None else (np.asarray(proposal) > 0).astype(np.uint8)
        effort = Effort(compute_s=float(compute_s))
        budget = cfg.budget_for(truth)
        start = dice(mask, truth)
        actions: list[Action] = []
        session = EditingSession(
            self.model,
            volume,
            axis,
            cache=cache or new_cache(volume),
            modality=self.modality,
            scan_id="simulate",
        )
        boxed: set[int] = set()
        points: dict[int, int] = {}
        review = None if review_order is None else ReviewOrder.from_specialist(review_order)
        best, unimproved = start, 0
        current = start
        stop = "target"
        slice_dice = target_dice if cfg.slice_dice is None else cfg.slice_dice
        across = True  # Propagate across slices (off after an undone propagation: slice_after_undo)
        again: tuple[str, int, list[dict]] | None = None  # the undone prompt, to place on its slice only
        while current < target_dice:
            if effort.prompts >= budget:
                stop = "budget"
                break
            if unimproved >= cfg.patience:
                stop = "stalled"
                break
            if again is not None:
                (kind, s, group), again = again, None
            else:
                order = None if review is None else review.slices
                choice = self._next_prompt(mask, truth, order, boxed, points, slice_dice)
                if choice is None:
                    stop = "nothing_to_prompt"
                    break
                if choice[0] == "island":  # an edit, not a prompt: no propagation, outside the budget
                    effort.islands += remove_stray_pieces(mask, truth, choice[1])
                    current = dice(mask, truth)
                    actions.append(Action("island", choice[1], current))
                    best, unimproved = max(best, current), 0
                    continue
                group = self._place(choice[0], choice[1], mask, truth, rng, boxed, points)
                kind, s = self._kind(group), choice[1]
            self._count(effort, kind, group)
            session.add([session.prompt(s, **prompt) for prompt in group])
            t0 = time.perf_counter()
            # Propagated and written into the mask by the editing session SemiSAMSegment's Propagate runs
            # (slice by slice, a slice with points only is anchored on the mask's own slice).
            result = session.propagate(across_slices=across, current=None if across else mask)
            new_mask = session.write(mask, result, cfg.merge_rule, across_slices=across).mask
            effort.compute_s += time.perf_counter() - t0
            new_dice = dice(new_mask, truth)
            undone = cfg.undo and new_dice < current - 1e-4
            actions.append(Action(kind, s, new_dice, undone, slice_only=not across))
            if undone:  # undo and delete the prompt, as a user does (embeddings stay cached)
                session.undo()
                if across and cfg.slice_after_undo:
                    across, again = False, (kind, s, group)
            else:
                mask, current = new_mask, new_dice
                if review is not None and across:  # the product re-ranks what the propagation answered
                    review = review.after_propagation(result)
            if current > best + 1e-4:
                best, unimproved = current, 0
            else:
                unimproved += 1
        prompt_dice = current
        current = self._draw_by_hand(mask, truth, target_dice, effort, actions, cfg.islands)
        return AnnotationResult(
            mask=mask,
            effort=effort,
            proposal_dice=start,
            prompt_dice=prompt_dice,
            final_dice=current,
            target_dice=target_dice,
            budget=budget,
            stop=stop,
            actions=actions,
        )

    @staticmethod
    def _draw_by_hand(
        mask: np.ndarray,
        truth: np.ndarray,
        target_dice: float,
        effort: Effort,
        actions: list[Action],
        islands: bool = True,
    ) -> float:
        """Draw the slices still wrong by hand (the truth's slice copied into ``mask`` in place), the
        largest error first, until ``target_dice``; with ``islands``, a slice without structure whose
        pixels are stray pieces loses them with a click each instead. Returns the final Dice."""
        current = dice(mask, truth)
        while current < target_dice:
            slice_dice, err = per_slice_errors(mask, truth)
            s = int(np.argmax(err))
            if err[s] <= 0:
                break
            if islands and not truth[s].any() and (n := remove_stray_pieces(mask, truth, s)):
                effort.islands += n
                current = dice(mask, truth)
                actions.append(Action("island", s, current))
                continue
            mask[s] = truth[s]
            effort.add_hand_slice(slice_dice[s])  # priced by how wrong it was (loop.effort)
            current = dice(mask, truth)
            actions.append(Action("hand", s, current))
        return current

    def _place(
        self,
        kind: str,
        s: int,
        mask: np.ndarray,
        truth: np.ndarray,
        rng: np.random.Generator,
        boxed: set[int],
        points: dict[int, int],
    ) -> list[dict]:
        """The prompts of one action on slice ``s``: a jittered box per separate part of the truth, or,
        for ``kind == "point"`` (or a slice with only specks to box), one point on the largest error."""
        group: list[dict] = []
        if kind == "box":
            group = [
                {"box": jitter_box(box, truth[s].shape, rng, self.config.jitter_px)}
                for box in structure_boxes(truth[s])
            ]
            boxed.add(s)
        if not group:  # a point, or only specks of structure here (too small to box): click on them
            point, positive = error_point(mask[s], truth[s])  # type: ignore[misc]
            group = [{"point": point, "positive": positive}]
            points[s] = points.get(s, 0) + 1
        return group

    @staticmethod
    def _kind(group: list[dict]) -> str:
        """``"box"``, ``"point+"`` or ``"point-"``: what an action's prompts are."""
        if "box" in group[0]:
            return "box"
        return "point+" if group[0]["positive"] else "point-"

    @staticmethod
    def _count(effort: Effort, kind: str, group: list[dict]) -> None:
        """Count one action's prompts in ``effort`` (a box per part; one point)."""
        if kind == "box":
            effort.boxes += len(group)
        elif kind == "point+":
            effort.points_pos += 1
        else:
            effort.points_neg += 1

    def _next_prompt(
        self,
        mask: np.ndarray,
        truth: np.ndarray,
        review_order: list[int] | np.ndarray | None,
        boxed: set[int],
        points: dict[int, int],
        slice_dice: float,
    ) -> tuple[str, int] | None:
        """``(kind, slice)`` of the next prompt (``"box"`` or ``"point"``), or of the next edit
        (``"island"``: the slice's stray pieces, with :attr:`AnnotatorConfig.islands`), or ``None``."""
        d, err = per_slice_errors(mask, truth)
        stray = None
        if self.config.islands:
            absent = ~np.asarray(truth).reshape(truth.shape[0], -1).any(axis=1)
            if (absent & (err > 0)).any():  # labelled only when a slice without structure is wrong
                stray = stray_pieces(mask, truth)
        if review_order is None:
            order = [int(s) for s in np.argsort(-err, kind="stable")]
        else:
            order = [int(s) for s in review_order]
        max_points = self.config.max_points_per_slice

        def action(s: int) -> str | None:
            if err[s] <= 0 or d[s] >= slice_dice:
                return None
            if truth[s].any() and s not in boxed:
                return "box"
            if stray is not None and not truth[s].any() and stray[s].any():
                return "island"
            return "point" if points.get(s, 0) < max_points else None

        wrong = [(s, a) for s in order if (a := action(s)) is not None]
        if not wrong:
            return None
        worst = max(err[s] for s, _ in wrong)
        for s, a in wrong:  # the first clearly wrong slice in the order
            if err[s] >= self.config.clearly_wrong * worst:
                return a, s
        return None
