"""Replay the whole loop on a labeled dataset: propose, correct, accept, retrain; count the effort.

For each case, in a fixed seeded order (:meth:`semisam.loop.dataset.Dataset.order`):

1. **propose**: the store's active specialist auto-segments the scan through the same public calls that
   SemiSAMSegment's *Auto-segment* drives (:func:`semisam.store.active.load_specialist` on the active
   version, then :func:`semisam.inference.segment`); before the first promotion
   there is no model and the proposal is empty. A case the store will put into its validation split
   (:meth:`~semisam.store.LabeledStore.next_split`) is drawn without the proposal, as SemiSAMSegment
   advises: masks corrected from a version's proposal favour that version when versions are compared
   (:func:`semisam.training.promote.comparison_case_ids`); its line says ``"blind": true``;
2. **correct**: :class:`~semisam.loop.annotator.SimulatedAnnotator` works the proposal up to the target
   in the result's review order;
3. **accept**: image, final mask and :class:`~semisam.store.Provenance` (prompt counts, the simulated
   seconds as ``finished - started``, the proposing version) go into a real store at ``WORK/store`` with
   :meth:`~semisam.store.LabeledStore.add_case`, taking the scan out of the unlabeled pool;
4. **retrain**: after every ``retrain_every`` accepted cases :func:`semisam.training.train` runs on the
   store; its unlabeled pool is the cases not yet seen (registered by reference to their image files at
   the start; labels are never registered).

With ``baseline`` the same annotator also corrects every case from an empty mask, no specialist ("prompts
only"), sharing the case's slice embeddings.

Work folder (everything needed to resume; a killed run continues where it stopped, accepted cases are
not redone)::

    simulation.json   the plan: dataset, case order, options (a resume with other options is refused)
    store/            the labeled-set store the loop grows
    cases.jsonl       one JSON line per accepted case ("event": "case") and per retrain ("retrain")
    baseline.jsonl    one line per case of the prompts-only baseline
    pending.json      the record of the case being accepted (moved into cases.jsonl after the commit)
    summary.json      the last summary; loop.png: the plot
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semisam.fileio import atomic_write_json
from semisam.loop.annotator import (
    AnnotatorConfig,
    SimulatedAnnotator,
    new_cache,
    oracle_dice,
    precompute,
    start_session,
    structure_slices,
)
from semisam.loop.dataset import Dataset
from semisam.loop.effort import Effort, TimeModel
from semisam.loop.files import (  # noqa: F401 - the file names are part of replay's interface
    BASELINE_FILE,
    CASES_FILE,
    PENDING_FILE,
    PLAN_FILE,
    PLOT_FILE,
    SUMMARY_FILE,
    append_jsonl,
    read_jsonl,
)
from semisam.loop.plan import check_work_folder, plan_order
from semisam.loop.summary import summarize
from semisam.store import LabeledStore, Provenance

log = logging.getLogger(__name__)

TOOL = "semisam simulate"


#: Share of a retrain's iterations spent warming the learning rate up (see :meth:`Simulation.train_config`),
#: and its cap: the trainer measures its speed (and fits the time budget) only after the warm-up, so a
#: tenth of a 12-case plan (600 of 6,000) would already be a third of what 10 minutes allow.
WARMUP_FRACTION = 0.1
MAX_WARMUP = 200


@dataclass
class SimulationConfig:
    """Options of one simulation (the CLI's flags).

    Attributes:
        dataset: MSD / nnU-Net raw dataset folder (its labels are the truth).
        work: work folder (created; holds the store and the outputs).
        retrain_every: retrain after every this many accepted cases (0: never).
        method, iterations: the training method and its iterations (:class:`semisam.training.TrainConfig`).
            ``None`` (the default): what the product's Retrain runs, iterations that follow the labeled
            set within the trainer's time budget (``TrainConfig.iterations``, ``max_minutes``). A fixed
            count that does not grow with the cases starves the later retrains (200 iterations reached
            0.61-0.73 of what 12 labeled cases allow: ``docs/benchmarks.md``).
        seed: case order, box jitter and training seed.
        baseline: also run the prompts-only baseline on the same cases.
        generalist: ``NAME[:CHECKPOINT]`` of the generalist the prompts go to.
        max_cases: replay only the first this many cases of the order (``None``: all).
        held_out: the last this many cases of the order are kept aside: never replayed and not in the
            unlabeled pool; every retrain scores its new version and the version it would replace there
            (mean Dice of the product's Auto-segment against the truth), so a promotion that made the
            specialist worse shows.
        label: dataset label value to segment (``None``: the smallest declared one).
        target_dice: an absolute target Dice for every case instead of ``annotator.target_fraction`` x
            the oracle (the oracle, a box on every truth slice, is then not computed).
        device: ``auto`` / ``cpu`` / ``cuda`` for the specialist, the generalist and training.
        train_options: further :class:`semisam.training.TrainConfig` fields for every retrain (batch
            size, crop size, model kwargs...; ``method``, ``iterations``, ``seed``, ``device`` come from
            the fields above). Without a ``warmup`` here, the warm-up is :data:`WARMUP_FRACTION` of the
            iterations (see :meth:`Simulation.train_config`).
        adapt: every retrain also adapts the generalist (:func:`semisam.adapt.job.adapt`); the loop's
            annotator then prompts the store's active generalist version, the baseline the frozen one.
        adapt_options: further :class:`semisam.adapt.job.AdaptConfig` fields (``seed`` and ``device``
            come from the fields above).
        annotator: :class:`AnnotatorConfig`.
        time_model: :class:`TimeModel`.
    """

    dataset: Path
    work: Path
    retrain_every: int = 4
    method: str = "supervised"
    iterations: int | None = None
    seed: int = 0
    baseline: bool = False
    generalist: str = "litemedsam"
    max_cases: int | None = None
    held_out: int = 0
    label: int | None = None
    target_dice: float | None = None
    device: str = "cpu"
    train_options: dict[str, Any] = field(default_factory=dict)
    adapt: bool = False
    adapt_options: dict[str, Any] = field(default_factory=dict)
    annotator: AnnotatorConfig = field(default_factory=AnnotatorConfig)
    time_model: TimeModel = field(default_factory=TimeModel)

    def plan_options(self) -> dict[str, Any]:
        """The options a resumed run must share (``max_cases`` and ``baseline`` may change)."""
        return {
            "retrain_every": self.retrain_every,
            "method": self.method,
            "iterations": self.iterations,
            "seed": self.seed,
            "generalist": self.generalist,
            "target_dice": self.target_dice,
            "train_options": dict(self.train_options),
            **({"adapt": True} if self.adapt else {}),
            **({"held_out": self.held_out} if self.held_out else {}),
            "annotator": dataclasses.asdict(self.annotator),
            "time_model": self.time_model.to_json(),
        }


def propose_with(model, manifest, image, label_name: str, device) -> tuple[np.ndarray, np.ndarray]:
    """``(proposal (Z, Y, X) uint8, review order)``: Auto-segment of ``image`` by a loaded specialist,
    its label ``label_name`` (else its first) as the case's proposal."""
    from semisam.inference import segment

    result = segment(image, model, manifest, device=device)
    value = int(manifest.labels.get(label_name, min(manifest.labels.values())))
    return (result.labels == value).astype(np.uint8), np.asarray(result.review_order)


class Simulation:
    """One simulation in its work folder (see the module docstring).

    Args:
        config: :class:`SimulationConfig`.
        emit: called with every JSON record as it is produced (the CLI prints them); ``None``: nothing.
    """

    def __init__(self, config: SimulationConfig, emit: Callable[[dict], None] | None = None):
        self.config = config
        self.emit = emit or (lambda record: None)
        self.work = Path(config.work)
        check_work_folder(self.work)
        self.dataset = Dataset.open(config.dataset)
        labels = self.dataset.labels
        self.label = min(labels) if config.label is None else int(config.label)
        if self.label not in labels:
            raise ValueError(
                f"--label {self.label}: the dataset declares labels {labels}; choose one of {sorted(labels)}"
            )
        self._generalist = None
        self.held_out_ids: list[str] = []  # set by run(): the last ``held_out`` cases of the order
        self._specialists: dict = {}  # semisam.store.active's cache: the active version, loaded once

    # ------------------------------------------------------------------ plan and state
    def _plan(self) -> list[str]:
        """The case order, from ``simulation.json`` (written on the first run, checked on a resume)."""
        return plan_order(
            self.work / PLAN_FILE,
            str(Path(self.config.dataset).resolve()),
            self.label,
            self.config.plan_options(),
            {c.case_id for c in self.dataset.cases},
            lambda: self.dataset.order(self.config.seed),
        )

    def _hold_out(self, order: list[str]) -> list[str]:
        """The order without its last ``held_out`` cases, which become :attr:`held_out_ids`."""
        n_held = int(self.config.held_out)
        if n_held and n_held >= len(order):
            raise ValueError(
                f"--held-out {n_held}: the dataset holds {len(order)} cases; keep fewer aside so that some "
                "are replayed"
            )
        self.held_out_ids = order[len(order) - n_held :] if n_held else []
        return order[: len(order) - n_held]

    def _open_store(self, order: list[str]) -> LabeledStore:
        store = LabeledStore.open_or_create(
            self.work / "store", {1: self.dataset.labels[self.label]}, modality=self.dataset.modality
        )
        accepted = set(store.case_ids())
        pooled = {r.scan_id for r in store.unlabeled()}
        for cid in order:
            if cid not in accepted and cid not in pooled:
                # By reference: the image file only (no copy, and never its label file).
                store.add_unlabeled(self.dataset.case(cid).image, scan_id=cid, copy=False)
        return store

    def _recover_pending(self, store: LabeledStore) -> None:
        """A case committed to the store whose line had not been appended yet gets its line now."""
        path = self.work / PENDING_FILE
        if not path.is_file():
            return
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        if record and record.get("case_id") in set(store.case_ids()):
            done = {r.get("case_id") for r in read_jsonl(self.work / CASES_FILE) if r.get("event") == "case"}
            if record["case_id"] not in done:
                record["split"] = store.record(record["case_id"]).split
                append_jsonl(self.work / CASES_FILE, record)
        path.unlink()

    # ------------------------------------------------------------------ models
    def generalist(self):
        if self._generalist is None:
            from semisam.generalists import build_generalist, parse_model_spec

            name, ckpt = parse_model_spec(self.config.generalist)
            self._generalist = build_generalist(name, ckpt, device=self.config.device)
        return self._generalist

    def loop_generalist(self, store: LabeledStore):
        """The generalist the loop's annotator prompts: the store's active adapted version (built once per
        version), else the frozen one the baseline uses."""
        if not self.config.adapt:
            return self.generalist()
        from semisam.adapt.versions import active_version_path, apply_version
        from semisam.generalists import parse_model_spec

        name, ckpt = parse_model_spec(self.config.generalist)
        version = active_version_path(store.root, name)
        if version is None:
            return self.generalist()
        if getattr(self, "_adapted", (None, None))[0] != version:
            from semisam.generalists import build_generalist

            self._adapted = (
                version,
                apply_version(build_generalist(name, ckpt, device=self.config.device), version),
            )
        return self._adapted[1]

    def adapt(self, store: LabeledStore, after: int) -> dict:
        """Adapt the generalist on the store's cases (after a retrain); a failure is recorded, the loop goes on."""
        from semisam.adapt.job import AdaptConfig, AdaptError, adapt

        t0 = time.perf_counter()
        try:
            done = adapt(
                store.root,
                AdaptConfig(
                    **{**self.config.adapt_options, "seed": self.config.seed, "device": self.config.device}
                ),
                model=self.generalist(),
            )
        except (AdaptError, ValueError, OSError) as exc:
            # no validation case yet (the first retrain) is expected; anything else is a failure
            quiet = getattr(exc, "code", "") == "no_validation_case"
            (log.info if quiet else log.error)("adapting the generalist after %d cases: %s", after, exc)
            return {"event": "adapt", "after_cases": after, "status": "error", "message": str(exc)}
        return {
            "event": "adapt",
            "after_cases": after,
            "status": "done",
            "version": done["version"],
            "promoted": done["promoted"],
            "reason": done["reason"],
            "validation": done["validation"],
            "seconds": round(time.perf_counter() - t0, 3),
        }

    def propose(
        self, store: LabeledStore, image
    ) -> tuple[np.ndarray | None, np.ndarray | None, str | None, float]:
        """``(proposal, review_order, version, seconds)`` from the store's active specialist, or
        ``(None, None, None, 0)`` when there is none."""
        from semisam.device import resolve_device
        from semisam.store.active import load_active

        t0 = time.perf_counter()
        device = resolve_device(self.config.device)
        loaded = load_active(store, device, self._specialists)
        if loaded is None:
            return None, None, None, 0.0
        active, model, manifest = loaded
        proposal, order = propose_with(model, manifest, image, self.dataset.labels[self.label], device)
        return proposal, order, active.version, time.perf_counter() - t0

    def train_config(self, n_train: int = 1):
        """The :class:`semisam.training.TrainConfig` of a retrain on ``n_train`` training cases."""
        from semisam.training import TrainConfig

        cfg = self.config
        base = {"method": cfg.method, "iterations": cfg.iterations, "seed": cfg.seed, "device": cfg.device}
        plain = TrainConfig.from_dict({**cfg.train_options, **base}, where="train options")
        planned = plain.resolved(n_train).iterations  # the iterations the trainer will plan
        # Every retrain after the first warm-starts from the active version with a fresh AdamW: its first
        # steps (second-moment estimates from one or two batches) are the largest, and at the full rate
        # they undo what the parent learned. A warm-up of a tenth of the run lets the estimates settle
        # first (the trainer's fixed 10 iterations are 0.7 % of 1500).
        warm = {"warmup": min(MAX_WARMUP, max(10, int(WARMUP_FRACTION * planned)))}
        return TrainConfig.from_dict({**warm, **cfg.train_options, **base}, where="train options")

    def retrain(self, store: LabeledStore, after: int) -> dict:
        """Run the training job on the store (the unlabeled pool holds the cases not yet seen).

        A failed run is recorded (``status`` / ``message``) and the loop goes on with the active version.
        """
        from semisam.training import train

        t0 = time.perf_counter()
        before = store.models.active()
        result = train(store.root, self.train_config(len(store.train_ids())), events=None)
        if result.status != "done":
            log.error("retrain after %d cases: %s (%s)", after, result.status, result.message)
        active = store.models.active()
        seconds = round(time.perf_counter() - t0, 3)
        try:
            held = self._score_held_out(store, result.version, before.version if before else None)
        except (OSError, ValueError, RuntimeError, MemoryError) as exc:  # recorded: the retrain stands
            log.error("scoring the held-out cases after %d cases: %s", after, exc)
            held = {"cases": list(self.held_out_ids), "error": f"{type(exc).__name__}: {exc}"}
        return {
            "event": "retrain",
            "after_cases": after,
            "status": result.status,
            "message": result.message or None,
            "version": result.version,
            "promoted": bool(result.promoted),
            "promotion": result.promotion,
            "validation_dice": (result.validation or {}).get("dice"),
            "active": active.version if active else None,
            "train_cases": len(store.train_ids()),
            "unlabeled": len(store.unlabeled()),
            "iterations": result.iterations,
            "seconds": seconds,
            **({"held_out": held} if held else {}),
        }

    def _score_held_out(self, store: LabeledStore, new: str | None, previous: str | None) -> dict | None:
        """Mean Dice of Auto-segment with the ``new`` and the ``previous`` version on the held-out cases
        (``None`` without held-out cases or a new version); ``previous`` is ``None`` before the first."""
        if not self.held_out_ids or new is None:
            return None
        t0 = time.perf_counter()
        cases = [self.dataset.read(cid, self.label) for cid in self.held_out_ids]  # read once, scored twice
        scores = {"new": self._version_dice(store, new, cases)}
        if previous is not None:
            scores["previous"] = self._version_dice(store, previous, cases)
        out: dict[str, Any] = {
            "cases": list(self.held_out_ids),
            "new_version": new,
            "previous_version": previous,
        }
        for key, per_case in scores.items():
            out[key] = round(float(np.mean(per_case)), 4)
            out[f"{key}_per_case"] = [round(d, 4) for d in per_case]
        out["seconds"] = round(time.perf_counter() - t0, 3)
        return out

    def _version_dice(self, store: LabeledStore, version: str, cases) -> list[float]:
        """Dice against the truth of ``version``'s Auto-segment on each ``(image, truth)`` of ``cases``."""
        from semisam.device import resolve_device
        from semisam.metrics import dice
        from semisam.store.active import load_specialist

        device = resolve_device(self.config.device)
        model, manifest = load_specialist(store.models.get(version).path, device)
        name = self.dataset.labels[self.label]
        return [
            float(dice(propose_with(model, manifest, image, name, device)[0], truth))
            for image, truth in cases
        ]

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        """Replay every case not yet done; returns (and emits) the summary."""
        cfg = self.config
        if cfg.retrain_every > 0:
            self.train_config()  # a bad option fails now, not after the first cases
        order = self._hold_out(self._plan())
        store = self._open_store(order)  # the pool: every case not yet seen, also past --max-cases
        if cfg.max_cases is not None:
            order = order[: int(cfg.max_cases)]
        self._recover_pending(store)
        lines = read_jsonl(self.work / CASES_FILE)
        retrained = {r["after_cases"] for r in lines if r.get("event") == "retrain"}
        baseline = {
            r["case_id"]: r for r in read_jsonl(self.work / BASELINE_FILE) if r.get("event") == "case"
        }
        annotator_cfg = cfg.annotator
        for index, cid in enumerate(order, 1):
            accepted = set(store.case_ids())
            loop_done = cid in accepted
            base_done = not cfg.baseline or cid in baseline
            if loop_done and base_done:
                continue
            before = index - 1
            if not loop_done and cfg.retrain_every > 0 and before > 0 and before % cfg.retrain_every == 0:
                if before not in retrained:
                    record = self.retrain(store, before)
                    append_jsonl(self.work / CASES_FILE, record)
                    self.emit(record)
                    if cfg.adapt:
                        record = self.adapt(store, before)
                        append_jsonl(self.work / CASES_FILE, record)
                        self.emit(record)
                    retrained.add(before)
            image, truth = self.dataset.read(cid, self.label)
            annotator = SimulatedAnnotator(self.generalist(), annotator_cfg, modality=self.dataset.modality)
            loop_annotator = annotator
            if cfg.adapt and self.loop_generalist(store) is not self.generalist():
                loop_annotator = SimulatedAnnotator(
                    self.loop_generalist(store), annotator_cfg, modality=self.dataset.modality
                )
            cache = new_cache(image)
            rng_seed = [cfg.seed, index]
            if not loop_done:
                blind = store.next_split() == "validation"
                if blind:
                    proposal, order_k, version, propose_s = None, None, None, 0.0
                else:
                    proposal, order_k, version, propose_s = self.propose(store, image)
                masks = [truth] if proposal is None else [truth, proposal]
                pre_s, oracle, oracle_s, target = self._prepare(image, truth, masks, cache)
                res = loop_annotator.annotate(
                    image, truth, target, np.random.default_rng(rng_seed), proposal, order_k, cache, propose_s
                )
                record = self._record("loop", index, cid, res, oracle, version, propose_s, pre_s, oracle_s)
                record["blind"] = blind
                self._accept(store, cid, res, proposal, version, record)
                self.emit(record)
            else:
                pre_s, oracle, oracle_s, target = self._prepare(image, truth, [truth], cache)
            if not base_done:
                res = annotator.annotate(image, truth, target, np.random.default_rng(rng_seed), cache=cache)
                record = self._record("baseline", index, cid, res, oracle, None, 0.0, pre_s, oracle_s)
                append_jsonl(self.work / BASELINE_FILE, record)
                baseline[cid] = record
                self.emit(record)
        summary = self.summary(order)
        atomic_write_json(self.work / SUMMARY_FILE, summary)
        try:
            from semisam.loop.plot import plot_run

            summary["plot"] = str(plot_run(self.work, self.work / PLOT_FILE))
        except ImportError as exc:  # matplotlib missing: the numbers still stand
            log.warning("no plot: %s", exc)
        self.emit(summary)
        return summary

    def _prepare(self, image, truth, masks, cache) -> tuple[float, float | None, float, float]:
        """Precompute the slice embeddings the annotator will see, then the oracle Dice (both timed).

        Returns ``(precompute seconds, oracle Dice or None, oracle seconds, target Dice)``.
        """
        cfg = self.config
        pre_s = 0.0
        if cfg.annotator.budget != 0:  # with no prompts to place, no slice is ever encoded
            state = start_session(self.generalist(), image, cfg.annotator.axis, cache, self.dataset.modality)
            pre_s = precompute(state, structure_slices(*masks))
        if cfg.target_dice is not None:
            return pre_s, None, 0.0, float(cfg.target_dice)
        t0 = time.perf_counter()
        oracle = oracle_dice(self.generalist(), image, truth, cache, self.dataset.modality)
        return pre_s, oracle, time.perf_counter() - t0, cfg.annotator.target_fraction * oracle

    def _record(self, run, index, cid, res, oracle, version, propose_s, pre_s, oracle_s) -> dict:
        return {
            "event": "case",
            "run": run,
            "index": index,
            "case_id": cid,
            "accepted_before": index - 1,
            "model_version": version,
            "proposal_dice": round(res.proposal_dice, 4),
            "prompt_dice": round(res.prompt_dice, 4),
            "final_dice": round(res.final_dice, 4),
            "oracle_dice": None if oracle is None else round(oracle, 4),
            "target_dice": round(res.target_dice, 4),
            **res.effort.to_json(self.config.time_model),
            "budget": res.budget,
            "stop": res.stop,
            "propose_s": round(propose_s, 3),
            "precompute_s": round(pre_s, 3),
            "oracle_s": round(oracle_s, 3),
            "actions": [a.to_json() for a in res.actions],
        }

    def _accept(self, store: LabeledStore, cid: str, res, proposal, version, record: dict) -> None:
        """Commit the case (the pending file bridges the store commit and the line append)."""
        started = dt.datetime.now(dt.UTC).replace(microsecond=0)
        effort: Effort = res.effort
        provenance = Provenance(
            annotator="simulated",
            started=started,
            finished=started + dt.timedelta(seconds=round(effort.total_s(self.config.time_model), 3)),
            prompts=effort.prompt_counts(),
            model_version=version,
            tool=TOOL,
            notes=f"simulated annotator; Dice vs truth {res.final_dice:.4f} (target {res.target_dice:.4f})",
        )
        atomic_write_json(self.work / PENDING_FILE, record)
        rec = store.add_case(None, res.mask, provenance, case_id=cid, from_unlabeled=cid, proposal=proposal)
        record["split"] = rec.split
        append_jsonl(self.work / CASES_FILE, record)
        (self.work / PENDING_FILE).unlink()

    def summary(self, order: list[str]) -> dict:
        lines = read_jsonl(self.work / CASES_FILE)
        loop = [r for r in lines if r.get("event") == "case" and r["case_id"] in order]
        retrains = [r for r in lines if r.get("event") == "retrain"]
        base = [
            r
            for r in read_jsonl(self.work / BASELINE_FILE)
            if r.get("event") == "case" and r["case_id"] in order
        ]
        return summarize(loop, base, retrains, self.config)
