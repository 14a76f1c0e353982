"""How well a generalist answers a store's cases: what adaptation is validated and promoted on.

On each case, every structure slice's parts get a user-like box (:mod:`.samples`, a fixed seed per case
so that the frozen and the adapted decoder answer the same boxes), answered the way the product answers
a key slice (:func:`semisam.generalists.view.choose` between the whole slice and the view). Reported:

* ``dice``: per case, the Dice of the union of the slice answers with the structure (box per slice);
* ``empty_fp_px``: mean foreground pixels answered on the empty slices next to the structure, and
  ``empty_fp_px_by_distance`` the same per distance in slices from the structure's end (the first
  neighbour of a 1 mm scan looks almost like the last structure slice: what "not here" can mean there);
  ``empty_fp_px_kept`` counts only answers a propagation track would keep (predicted IoU at least the
  engine's ``min_score``; a track ends at a lower one), what the user would see drawn there;
* ``lookalike_fp_px``: mean foreground pixels answered to the boxes on look-alike tissue off the
  structure (:func:`.samples.lookalike_box`);
* ``part_dice``: mean Dice of each part's answer to its box, and ``click_dice`` the same after one
  correction click on that answer's largest error (:func:`semisam.clicks.error_point`, the annotator's
  click): how well the decoder answers the box + point every correction asks;
* ``spearman``: rank correlation of the model's predicted IoU with each answer's true Dice, over all
  answered parts (how well its confidence orders review).

:func:`propagation_dice` scores what a user gets from one box (or ``k``): the product's propagation engine
from a user-like box on the slice where the structure is largest (or on ``k`` key slices), Dice of the 3D
mask; with several draws, the mean over jitters and, for one box, over the largest and the middle slice. A
decoder that answers every box better can still propagate worse (it keeps drawing where the structure has
ended and its tracks run on), so promotion looks at both.
"""

from __future__ import annotations

import numpy as np

from semisam.clicks import error_point
from semisam.generalists.base import SlicePrompt
from semisam.generalists.view import choose
from semisam.generalists.view import predict as predict_in_view
from semisam.metrics import dice

from .samples import Sample


def _answer(model, embeddings, whole: Sample, closer: Sample | None, click=None):
    """The key-slice answer to the sample's box (and ``click``, ``((column, row), positive)`` in slice
    pixels), from the whole slice or the view as the propagation engine chooses."""
    prompt = SlicePrompt(box=whole.box)
    if click is not None:
        prompt = SlicePrompt(box=whole.box, points=[click[0]], point_labels=[1 if click[1] else 0])
    w = predict_in_view(model, embeddings(whole), prompt)
    if closer is None:
        return w
    c = predict_in_view(model, embeddings(closer), prompt)
    return c if choose(w, c, whole.box) else w


def _pairs(samples: list[Sample]) -> list[tuple[Sample, Sample | None]]:
    """Each whole-slice sample with its view twin (the next sample with the same slice and box)."""
    out = []
    for i, s in enumerate(samples):
        if s.view is not None:
            continue
        twin = samples[i + 1] if i + 1 < len(samples) else None
        ok = twin is not None and twin.view is not None and twin.slice == s.slice and twin.box == s.box
        out.append((s, twin if ok else None))
    return out


def spearman(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def evaluate(model, cases: dict[str, tuple[np.ndarray, list[Sample]]], embeddings, cancel=None) -> dict:
    """Scores of ``model`` on ``cases`` (case id -> ``(label (Z, Y, X), samples)``); ``embeddings(sample)``
    gives the sample's (cached) embedding. ``cancel`` (a ``threading.Event``) ends it early between two
    answers (the scores are then partial; the caller stops)."""
    from semisam.propagation.params import PropagationParams

    # A propagation track refuses an answer whose predicted IoU is below this and ends there: what such an
    # answer draws on an empty slice never reaches the user's mask.
    min_score = PropagationParams().min_score
    per_case: dict[str, float] = {}
    fp: list[int] = []
    kept: list[int] = []
    fp_at: dict[int, list[int]] = {}
    scores: list[float] = []
    dices: list[float] = []
    clicked: list[float] = []
    alike: list[int] = []
    for cid, (label, samples) in cases.items():
        truth = np.asarray(label) > 0
        answer = np.zeros(truth.shape, bool)
        on = np.flatnonzero(truth.reshape(truth.shape[0], -1).any(axis=1))
        for whole, closer in _pairs(samples):
            if cancel is not None and cancel.is_set():
                break
            if whole.kind == "track":  # scored by the propagations, not box by box
                continue
            pred = _answer(model, embeddings, whole, closer)
            if whole.kind == "lookalike":
                alike.append(int(pred.mask.sum()))
                continue
            if whole.empty:
                fp.append(int(pred.mask.sum()))
                kept.append(fp[-1] if float(pred.score) >= min_score else 0)
                d = int(np.abs(on - whole.slice).min()) if on.size else 0
                fp_at.setdefault(d, []).append(fp[-1])
                continue
            answer[whole.slice] |= pred.mask
            scores.append(float(pred.score))
            dices.append(dice(pred.mask, whole.target))
            click = error_point(pred.mask, whole.target)
            if click is None:
                clicked.append(dices[-1])
            else:
                clicked.append(dice(_answer(model, embeddings, whole, closer, click).mask, whole.target))
        per_case[cid] = round(float(dice(answer, truth)), 4)
    return {
        "dice": round(float(np.mean(list(per_case.values()))), 4) if per_case else None,
        "per_case": per_case,
        "empty_fp_px": round(float(np.mean(fp)), 1) if fp else None,
        "empty_fp_px_kept": round(float(np.mean(kept)), 1) if kept else None,
        "empty_fp_px_by_distance": {str(d): round(float(np.mean(v)), 1) for d, v in sorted(fp_at.items())},
        "lookalike_fp_px": round(float(np.mean(alike)), 1) if alike else None,
        "part_dice": round(float(np.mean(dices)), 4) if dices else None,
        "click_dice": round(float(np.mean(clicked)), 4) if clicked else None,
        "spearman": None if (r := spearman(scores, dices)) is None else round(r, 3),
    }


def part_box_rng(case_id: str, seed: int) -> np.random.Generator:
    """The jitter draw of :func:`propagate_from_part_boxes` for a case: the same for every model at a seed."""
    import zlib

    return np.random.default_rng([zlib.crc32(case_id.encode()), seed, 7])


def propagate_from_part_boxes(model, volume, truth: np.ndarray, keys: list[int], rng, **state_kwargs):
    """The product's engine (axial) from a user-like box around each part of ``truth`` ``(Z, Y, X)`` on each
    of the slices ``keys``, as a radiologist boxes the left and the right thalamus apart
    (:func:`semisam.propagation.simulate.structure_boxes`, each side moved by :func:`.samples.jitter_box`
    drawing from ``rng``); ``state_kwargs`` go to :func:`semisam.propagation.init_state` (window, cache,
    params, ...). Returns the :class:`~semisam.propagation.PropagationResult`, or ``None`` when no key slice
    holds a part to box."""
    from semisam.propagation import add_prompt, init_state, propagate
    from semisam.propagation.simulate import structure_boxes

    from .samples import jitter_box

    state = init_state(model, volume, "axial", **state_kwargs)
    prompted = False
    for key in keys:
        for box in structure_boxes(truth[key]):
            add_prompt(state, key, box=jitter_box(box, truth.shape[1:], rng))
            prompted = True
    return propagate(state) if prompted else None


def propagation_dice(
    model, cases, seed: int = 0, caches: dict | None = None, k: int = 1, draws: int = 1, cancel=None
) -> dict:
    """``k``-box propagation Dice of ``model`` on ``cases`` (case id -> :class:`semisam.adapt.job.Case`):
    on each of ``k`` key slices (the product's rule, :func:`semisam.propagation.simulate.key_slices`: with
    ``k = 1`` the slice where the structure is largest) a jittered box around each part of the structure
    (:func:`propagate_from_part_boxes`, the same boxes for every model at a given ``seed``), propagated by
    the product's engine. ``caches`` (case id -> :class:`semisam.generalists.cache.EmbeddingCache`) lets two
    decoders share one case's slice embeddings (the encoder is the same).

    ``draws`` > 1 scores each case by the mean over that many prompts: draw ``i`` jitters its boxes with
    seed ``seed + i`` and, with ``k = 1``, the odd draws box the structure's middle slice instead of its
    largest (the two slices a user picks for one box); draw 0 is the one-draw score. ``per_draw``: case id
    -> each draw's Dice (a case whose prompts all fall outside the engine's reach scores no draw).
    ``cancel`` (a ``threading.Event``) ends it early between two propagations (the scores are then partial;
    the caller stops)."""
    from semisam.propagation.simulate import key_slices, middle_slice

    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    per_draw: dict[str, list[float]] = {}
    for cid, case in cases.items():
        truth = np.asarray(case.label) > 0
        on = np.flatnonzero(truth.reshape(truth.shape[0], -1).any(axis=1))
        if not on.size:
            continue
        cache = None if caches is None else caches.get(cid)
        keys = key_slices(truth, k, "axial")  # once per case: it measures every structure slice's area
        # the odd draws' key slices: the middle slice for one box, the same key slices for several
        odd_keys = [middle_slice(truth, "axial")] if k == 1 and draws > 1 else keys
        for i in range(draws):
            if cancel is not None and cancel.is_set():
                break
            result = propagate_from_part_boxes(
                model,
                case.volume,
                truth,
                odd_keys if i % 2 else keys,
                part_box_rng(cid, seed + i),
                window=case.window,
                cache=cache,
            )
            if result is not None:
                per_draw.setdefault(cid, []).append(round(float(dice(np.asarray(result.mask) > 0, truth)), 4))
    per_case = {cid: round(float(np.mean(v)), 4) for cid, v in per_draw.items()}
    return {
        "dice": round(float(np.mean(list(per_case.values()))), 4) if per_case else None,
        "per_case": per_case,
        "per_draw": per_draw,
    }
