"""One adaptation run: the named steps of ``semisam adapt STORE``.

``open_cases`` -> ``make_samples`` -> ``score_current`` (the frozen generalist, and the active version if
any, on the validation cases) -> ``fine_tune`` (the mask decoder on the training cases' samples, within a
step and time budget) -> ``score_adapted`` -> ``register`` (a new generalist version, promoted only when it
beats the generalist answering today, case by case: :func:`semisam.training.promote.compare`).

Embeddings come from the store's disk cache (``STORE/cache/embeddings``, shared with pseudo-labelling),
so a second run on the same cases encodes nothing. Events are dicts (``semisam adapt`` prints them as
JSON lines); the last one is ``done`` (``version``, ``promoted``, ``reason``, ``validation``) or ``error``.
"""

from __future__ import annotations

import copy
import logging
import random
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from semisam.generalists.view import mark

from .samples import Sample, case_samples

log = logging.getLogger(__name__)

Emit = Callable[[dict], None]

#: an adapted decoder whose mean 1-box propagation Dice on the validation cases falls more than this below
#: the generalist answering today is not promoted, however much better it answers each slice's box: in a
#: whole-head caudate loop a version promoted on box-per-slice Dice alone (0.75 -> 0.84, 1 case) drew
#: 207-257 px on the empty neighbours (frozen 173-184) and its propagations from the annotator's prompts
#: reached 0.10 Dice on a new case where the frozen generalist reached 0.49. The same tolerance holds for the
#: one-click Dice (``click_dice`` of :func:`.evaluate.evaluate`): corrections must not get worse
PROPAGATION_TOLERANCE = 0.02

#: an adapted decoder whose predicted IoU ranks the validation answers (Spearman rank correlation with each
#: answer's true Dice, ``spearman`` of :func:`.evaluate.evaluate`) more than this below the generalist
#: answering today is not promoted: that ranking is what ends a track (predicted IoU < ``min_score``) and
#: what orders the review. In two whole-head thalamus loops the version adapted on 7 accepted masks ranked
#: them 0.41 -> 0.25 and 0.41 -> 0.11 while its box and 1-box Dice rose on the one validation case; on
#: blind cases that followed, its tracks ran up to 8 slices past the structure (first box 0.26 against the
#: frozen 0.40) and one case took 313 s of annotation against 183 s with the frozen generalist (on two
#: other blind cases it helped: 79 s against 189 s, 144 s against 166 s). 0.1 is the margin by which an
#: adapted IoU head is expected to rank better (docs/methods.md); no version adapted on ground truth fell
#: below its frozen one (thalamus 0.64 -> 0.76, caudate 0.53 -> 0.73, pallidum 0.04 -> 0.67)
RANKING_TOLERANCE = 0.1

#: the 1-box propagation Dice that guards promotion is each validation case's mean over this many prompts
#: (:func:`.evaluate.propagation_dice` ``draws``: a box on the structure's largest and on its middle slice,
#: each jittered twice). One prompt is noise against the tolerance: on two whole-head thalamus validation
#: subjects one decoder's 1-box Dice moved by 0.03-0.37 between a box on the largest and one on the middle
#: slice (frozen 0.735 / 0.581 and 0.461 / 0.495, adapted 0.455 / 0.823 and 0.548 / 0.717), so one draw
#: refused or promoted by chance. Four cost three more propagations per case and decoder (a few seconds
#: each once the slices are encoded, and the windows are cached across decoders)
PROPAGATION_DRAWS = 4

#: at least this share of each batch is an empty slice beyond the structure's end ("not here"; the boxes
#: on look-alike tissue come on top, as often as they are among the samples): they are 5-10 % of the samples,
#: and at that share the adapted decoder answered them with more pixels than the frozen one (validation,
#: whole-head thalamus: 105 -> 141-162 px), while a track asks that question at both ends of every structure
EMPTY_SHARE = 0.25


class AdaptError(ValueError):
    """An adaptation that cannot run; ``code`` names the kind (``no_labeled_case``, ``no_validation_case``,
    ``not_adaptable``, ``bad_config``, ``cancelled``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class AdaptConfig:
    """Budget and optimiser of one adaptation run.

    Attributes:
        steps_per_case: optimiser steps per training case (the budget follows the labeled set).
        min_steps, max_steps: the clamp of that budget.
        max_minutes: wall-clock budget of the fine-tuning step (it ends early, never overruns).
        batch: samples per step.
        lr: AdamW learning rate of the decoder (weight decay 0.01).
        click_share: share of the samples with a structure taught as a correction: the box, then one click
            on the decoder's own answer's largest error. Every correction in the product (a point after a
            box, the simulated annotator's points) asks the decoder for box + point; a decoder taught boxes
            alone drifts from answering them. Half is a rule, not tuned; the one-click Dice on the
            validation cases (``click_dice``) shows what it gives, and guards promotion.
        lookalikes: teach boxes on look-alike tissue off the structure as "not here"
            (:func:`.samples.lookalike_box`). Measured without -> with them on two whole-head tasks (test
            subjects, N = 2 / 4; ``docs/benchmarks.md``): px on the look-alike boxes 256-311 -> 23-115, on
            the empty neighbours from 2 cases 22.9 / 12.1 -> 0.0 / 0.0 (thalamus / caudate); 3-box
            propagation Dice +0.03 on average, 1-box -0.015, box-per-slice Dice -0.012, one-click -0.028.
        tracks: teach a neighbouring slice's box, grown by a track's margin, with this slice's structure
            as the target, as a propagation track asks it (:mod:`.samples`, where the measurements are:
            without them an adapted decoder ends tracks early, 1-box propagation below the frozen one's).
            Their cost: a lone box just beyond a thin end is answered more often (whole-head caudate, 8
            test subjects, N = 2 / 4: 9.8 / 11.0 px against the frozen 15.5 / 18.4; 0.0 on two subjects
            without them), while what a propagation writes on those slices is 0.0 px.
        seed: samples' jitter and order, and torch's initial state.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
    """

    steps_per_case: int = 50
    min_steps: int = 100
    max_steps: int = 400
    max_minutes: float = 5.0
    batch: int = 4
    lr: float = 1e-4
    click_share: float = 0.5
    lookalikes: bool = True
    tracks: bool = True
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("steps_per_case", "min_steps", "max_steps", "batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise AdaptError("bad_config", f"{name} must be a positive whole number, got {v!r}")
        if self.min_steps > self.max_steps:
            raise AdaptError("bad_config", f"min_steps {self.min_steps} > max_steps {self.max_steps}")
        for name in ("lookalikes", "tracks"):
            if not isinstance(getattr(self, name), bool):
                raise AdaptError("bad_config", f"{name} must be true or false, got {getattr(self, name)!r}")
        v = self.click_share
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= float(v) <= 1.0:
            raise AdaptError("bad_config", f"click_share must be a number from 0 to 1, got {v!r}")
        for name in ("max_minutes", "lr"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < float(v) < 1e6:
                raise AdaptError("bad_config", f"{name} must be a positive finite number, got {v!r}")

    def steps(self, n_cases: int) -> int:
        return int(min(self.max_steps, max(self.min_steps, self.steps_per_case * n_cases)))


@dataclass
class Case:
    """A labeled case ready to sample: axial slices scaled to [0, 1] on demand."""

    case_id: str
    volume: object  # semisam.scan.volume.Volume
    window: object  # semisam.scan.intensity.IntensityWindow
    label: np.ndarray

    def image(self, k: int) -> np.ndarray:
        from semisam.scan.intensity import apply_window

        return apply_window(self.volume.array[k], self.window)


def _rng(case_id: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(case_id.encode()), seed])


# --- steps --------------------------------------------------------------------------------------------


def open_cases(store_root, modality: str | None = None) -> tuple[object, list[Case], list[Case]]:
    """``(store, training cases, validation cases)``; refuses a store without a labeled training case."""
    from semisam.propagation.state import resolve_window
    from semisam.store import LabeledStore

    store = LabeledStore(store_root)
    train_ids, val_ids = store.train_ids(), store.validation_ids()
    if not train_ids:
        raise AdaptError(
            "no_labeled_case",
            f"{store.root}: no labeled training case to adapt the generalist on; accept a case first",
        )
    mod = modality or store.modality

    def load(cid: str) -> Case:
        c = store.read_case(cid)
        return Case(cid, c.image, resolve_window(c.image, None, mod), np.asarray(c.mask.array) > 0)

    return store, [load(c) for c in train_ids], [load(c) for c in val_ids]


def make_samples(
    cases: list[Case], seed: int, lookalikes: bool = True, tracks: bool = False
) -> dict[str, list[Sample]]:
    """Every case's samples (:func:`.samples.case_samples`), with the look-alike boxes or without, and the
    track boxes (grown by the propagation's ``box_margin_mm``) or without."""
    from semisam.propagation.params import PropagationParams
    from semisam.propagation.state import slice_geometry

    def margin(c: Case) -> tuple[float, float] | None:
        if not tracks:
            return None
        (row_mm, column_mm), _ = slice_geometry(c.volume, "axial")
        mm = PropagationParams().box_margin_mm
        return mm / column_mm, mm / row_mm  # (x, y) pixels, as the engine grows a track's box

    return {
        c.case_id: case_samples(
            i,
            c.label,
            _rng(c.case_id, seed),
            image=c.image if lookalikes else None,
            track_margin_px=margin(c),
        )
        for i, c in enumerate(cases)
    }


class Embeddings:
    """``(case, slice, view)`` -> embedding: memory, then the store's disk cache, then the encoder."""

    def __init__(self, model, cases: list[Case], disk) -> None:
        self.model, self.disk = model, disk
        self.cases = {i: c for i, c in enumerate(cases)}
        self._memo: dict = {}

    def __call__(self, s: Sample):
        key = (s.case, s.slice, None if s.view is None else s.view.key())
        emb = self._memo.get(key)
        if emb is None:
            image = self.cases[s.case].image(s.slice)
            emb = self.disk.get_or_encode(self.model, image if s.view is None else s.view.crop(image))
            if s.view is not None:  # as encode_view marks it: predict() maps prompts and answers
                mark(emb, s.view, image.shape)
            self._memo[key] = emb
        return emb


def _check_cancel(cancel) -> None:
    """Raise :class:`AdaptError` ``cancelled`` once ``cancel`` (a ``threading.Event``) is set."""
    if cancel is not None and cancel.is_set():
        raise AdaptError("cancelled", "adaptation cancelled; no generalist version was registered")


def fine_tune(
    model,
    samples: list[Sample],
    embeddings: Embeddings,
    cfg: AdaptConfig,
    steps: int,
    emit: Emit,
    cancel=None,
) -> dict:
    """Train the mask decoder for ``steps`` (or until ``cfg.max_minutes``); returns a summary.

    Raises:
        AdaptError: ``cancelled`` when ``cancel`` (a ``threading.Event``) is set between two steps.
    """
    import torch

    from .decoder import sample_loss, trainable_parameters

    torch.manual_seed(cfg.seed)
    order = random.Random(cfg.seed)
    beyond = [s for s in samples if s.empty and s.kind != "lookalike"]
    alike = [s for s in samples if s.kind == "lookalike"]
    full = [s for s in samples if not s.empty] or beyond or alike
    n = max(1, len(samples))
    share = max(EMPTY_SHARE, len(beyond) / n) if beyond else 0.0
    alike_share = min(len(alike) / n, 1.0 - share)  # as often as they come, never at the ends' expense
    params = trainable_parameters(model)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    model.mask_decoder.train()
    t0, done, last = time.perf_counter(), 0, {}
    try:
        for step in range(1, steps + 1):
            _check_cancel(cancel)
            if time.perf_counter() - t0 > 60 * cfg.max_minutes:
                log.info(
                    "adaptation stopped at step %d of %d: the %.1f min budget",
                    step - 1,
                    steps,
                    cfg.max_minutes,
                )
                break
            opt.zero_grad(set_to_none=True)
            terms_sum: dict[str, float] = {}
            total = 0.0
            batch = [
                order.choice(beyond if r < share else alike if r < share + alike_share else full)
                for r in (order.random() for _ in range(cfg.batch))
            ]
            for s in batch:
                correct = cfg.click_share > 0 and not s.empty and order.random() < cfg.click_share
                loss, terms = sample_loss(model, embeddings(s), s, correct)
                (loss / cfg.batch).backward()
                total += float(loss.detach())
                for k, v in terms.items():
                    terms_sum[k] = terms_sum.get(k, 0.0) + v / cfg.batch
            opt.step()
            done = step
            last = {"loss": round(total / cfg.batch, 4), **{k: round(v, 4) for k, v in terms_sum.items()}}
            if step == 1 or step % 25 == 0 or step == steps:
                emit({"event": "iteration", "step": step, "steps": steps, **last})
    finally:
        model.mask_decoder.eval()
        for p in params:
            p.requires_grad_(False)
    return {"steps": done, "seconds": round(time.perf_counter() - t0, 1), "last": last}


def register(
    store, model, train_ids, val_ids, scores: dict, base_sha256: str, promote: bool = True
) -> tuple[str, bool, str]:
    """Register the adapted decoder; promote it when it beats the generalist answering today (and
    ``promote``)."""
    from semisam.training.promote import compare

    from .versions import GeneralistRegistry, save_version

    reg = GeneralistRegistry(store)
    with tempfile.TemporaryDirectory(prefix=".semisam-adapt-", dir=store.root) as tmp:
        folder = save_version(Path(tmp) / "version", model, train_ids, scores, base_sha256)
        metrics = {"dice": scores["adapted"]["dice"]} if scores["adapted"]["dice"] is not None else None
        rec = reg.add(folder, metrics=metrics, evaluated_on=val_ids)
    current = scores.get("active") or scores["frozen"]
    cmp = compare(scores["adapted"]["per_case"], current["per_case"], more_labels=False)
    better, reason = bool(cmp.better), cmp.reason
    # Better on every slice's box is not enough: propagations, corrections (every point after a box asks
    # the one-click question) and the ranking that ends tracks and orders the review must not get worse.
    guards = (
        ("propagation_1box", PROPAGATION_TOLERANCE, "1-box propagation Dice"),
        ("click_dice", PROPAGATION_TOLERANCE, "one-click Dice"),
        ("spearman", RANKING_TOLERANCE, "its predicted IoU ranks the answers worse, Spearman"),
    )
    for key, tolerance, what in guards:
        new, old = scores["adapted"].get(key), current.get(key)
        if better and new is not None and old is not None and new < old - tolerance:
            better = False
            reason = f"not promoted: better box per slice ({cmp.reason}), but {what} {old} -> {new}"
    if not promote:
        return rec.version, False, f"registered only (promotion off); {reason}"
    if better:
        reg.promote(rec.version, require_better=False)
    return rec.version, better, reason


# --- the run ------------------------------------------------------------------------------------------


def adapt(
    store_root,
    cfg: AdaptConfig | None = None,
    emit: Emit | None = None,
    model=None,
    cancel=None,
    promote: bool = True,
) -> dict:
    """Run every step; returns the ``done`` event (also emitted). ``model``: a built generalist (default:
    LiteMedSAM's embedded weights on ``cfg.device``); ``cancel``: a ``threading.Event`` that stops the run
    before anything is registered (:class:`AdaptError` ``cancelled``); ``promote=False`` registers the
    version without promoting it."""
    from semisam.device import resolve_device

    from .decoder import adaptable
    from .versions import base_digest

    cfg = cfg or AdaptConfig()
    emit = emit or (lambda e: None)
    t0 = time.perf_counter()
    store, train, val = open_cases(store_root)
    if not val:
        # Nothing could promote it (it must beat the generalist answering today on validation cases), and
        # encoding + fine-tuning take minutes (533 s for 4 whole-head cases on one thread): refuse first.
        raise AdaptError(
            "no_validation_case",
            f"{store.root}: no validation case to compare an adapted generalist with the one answering "
            "today; accept more cases until one joins the validation split",
        )
    emit(
        {
            "event": "start",
            "store": str(store.root),
            "train": len(train),
            "validation": len(val),
            "config": asdict(cfg),
        }
    )
    if model is None:
        from semisam.generalists import build_generalist

        model = build_generalist("litemedsam", device=resolve_device(cfg.device))
    if not adaptable(model):
        raise AdaptError("not_adaptable", f"the generalist {model.name!r} has no SAM mask decoder to adapt")
    base = base_digest(model)
    frozen_state = copy.deepcopy(model.mask_decoder.state_dict())
    # An exported decoder graph (onnxruntime) holds the frozen weights: scoring the adapted decoder through
    # it would score the frozen one. The eager decoder answers during the run; the caller's comes back.
    fast = (getattr(model, "_fast_decoder", None), getattr(model, "decoder_backend", "eager"))
    if fast[0] is not None:
        model.set_fast_decoder(None)
    try:
        return _run(store, train, val, cfg, model, base, frozen_state, emit, t0, cancel, promote)
    finally:
        model.mask_decoder.load_state_dict(frozen_state)  # the caller's model answers as before
        if fast[0] is not None:
            model.set_fast_decoder(*fast)


def _run(
    store,
    train,
    val,
    cfg: AdaptConfig,
    model,
    base: str,
    frozen_state,
    emit: Emit,
    t0: float,
    cancel=None,
    promote: bool = True,
) -> dict:
    """The steps after the set-up of :func:`adapt` (which restores the caller's model whatever happens)."""
    from semisam.training.methods.semi.embedding_store import EmbeddingStore

    from .evaluate import evaluate, propagation_dice
    from .versions import GeneralistRegistry, apply_version

    disk = EmbeddingStore(store.root / "cache" / "embeddings")
    train_samples = make_samples(train, cfg.seed, cfg.lookalikes, cfg.tracks)
    val_samples = make_samples(val, cfg.seed + 1)  # always scored on look-alikes too (apart)
    train_emb, val_emb = Embeddings(model, train, disk), Embeddings(model, val, disk)
    val_cases = {c.case_id: (c.label, val_samples[c.case_id]) for c in val}
    from semisam.generalists.cache import EmbeddingCache

    caches = {c.case_id: EmbeddingCache() for c in val}  # one case's slices, shared by every decoder
    by_id = {c.case_id: c for c in val}

    def score() -> dict:
        out = evaluate(model, val_cases, val_emb, cancel)
        _check_cancel(cancel)
        prop = propagation_dice(model, by_id, cfg.seed, caches, draws=PROPAGATION_DRAWS, cancel=cancel)
        _check_cancel(cancel)
        return {**out, "propagation_1box": prop["dice"], "propagation_per_case": prop["per_case"]}

    scores: dict = {"frozen": score()}
    active = GeneralistRegistry(store).active()
    if active is not None:
        apply_version(model, active.path)
        scores["active"] = {"version": active.version, **score()}
        model.mask_decoder.load_state_dict(frozen_state)
        model.generalist_version = None
    emit({"event": "validation", "which": "before", **{k: v.get("dice") for k, v in scores.items()}})
    samples = [s for c in train for s in train_samples[c.case_id]]
    steps = cfg.steps(len(train))
    emit({"event": "budget", "steps": steps, "samples": len(samples), "max_minutes": cfg.max_minutes})
    t_enc = time.perf_counter()
    for s in samples:  # encode (or read) every embedding once, before the clock of the fine-tuning runs
        _check_cancel(cancel)
        train_emb(s)
    emit({"event": "embeddings", "encoded": disk.encoded, "seconds": round(time.perf_counter() - t_enc, 1)})
    summary = fine_tune(model, samples, train_emb, cfg, steps, emit, cancel)
    scores["adapted"] = score()
    _check_cancel(cancel)
    version, promoted, reason = register(
        store, model, [c.case_id for c in train], [c.case_id for c in val], scores, base, promote
    )
    done = {
        "event": "done",
        "version": version,
        "promoted": promoted,
        "reason": reason,
        "validation": {
            k: {kk: vv for kk, vv in v.items() if not kk.endswith("per_case")} for k, v in scores.items()
        },
        "training": summary,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    emit(done)
    return done
