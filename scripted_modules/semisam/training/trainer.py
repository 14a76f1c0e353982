"""``Trainer``: the one training loop; method parts plug in through their hooks.

Per iteration ``i``: (cancel check) -> parts' ``refresh`` every ``refresh_every`` -> batch (labeled,
plus unlabeled when a part needs it; MONAI augmentation) -> one student forward over ``cat(x, xu)``
(autocast on CUDA) -> every part's ``losses`` summed into ``total`` -> NaN guard -> backward, gradient
clipping (norm 10: a safety net, rarely active), AdamW step, LR schedule -> parts' ``after_step`` ->
``iteration`` event -> validation / checkpoint when due. Every random draw of iteration ``i`` comes from
generators seeded with ``(seed, rank, i)`` (:func:`semisam.training.data.iteration_rng`,
:meth:`TrainContext.generator`), so a resumed run continues exactly as the uninterrupted one would.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from semisam.training import ddp, runstate
from semisam.training.data import Augmenter, Sampler, iteration_rng
from semisam.training.errors import Cancelled, TrainError
from semisam.training.methods.base import Batch, MethodPart, StudentOutput, TrainContext, feature_module

log = logging.getLogger(__name__)

#: Gradient-norm clip: a safety net against a rare huge step (typical norms here are 0.1-3).
CLIP_NORM = 10.0
#: Iterations between checks of the time budget, and iterations after the warm-up before the first one.
BUDGET_EVERY = 25
BUDGET_MIN_ITERATIONS = 25
#: A new plan differing by at most this fraction of the current one is not worth an event (or a change).
BUDGET_STEP = 0.02


def lr_factor(it: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` iterations, then cosine decay to ``min_ratio`` at ``total``."""
    if warmup and it < warmup:
        return (it + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (it - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


class Trainer:
    """Runs iterations ``[start, config.iterations)`` for ``ctx.student`` with ``parts``.

    Args:
        ctx: the shared :class:`TrainContext`.
        parts: built method parts (``supervised`` first).
        dist: DDP info (:mod:`semisam.training.ddp`).
        run_dir: where checkpoints go (rank 0 writes).
        run_info: plain dict stored in each checkpoint's run.json (config, manifest, case ids...).
        cancel: returns True when the run must stop (SIGTERM); checked before every iteration.
        validate: ``validate(iteration) -> dict`` for periodic validation (rank 0), or ``None``.
    """

    def __init__(
        self,
        ctx: TrainContext,
        parts: list[MethodPart],
        dist: ddp.DistInfo,
        run_dir: Path,
        run_info: dict[str, Any],
        cancel: Callable[[], bool] | None = None,
        validate: Callable[[int], dict] | None = None,
    ):
        self.ctx, self.parts, self.dist = ctx, parts, dist
        self.cfg = ctx.config
        self.run_dir, self.run_info = run_dir, run_info
        self.cancel = cancel or (lambda: False)
        self.validate = validate
        self.device = ctx.device
        student = ctx.student.to(self.device)
        self.model: torch.nn.Module = student
        if dist.active:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                student, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.extra_params = [p for part in parts for p in part.trainable()]
        params = [p for p in student.parameters() if p.requires_grad] + self.extra_params
        self.optimizer = torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        #: iterations this run plans: ``config.iterations``, fewer when the time budget says so
        self.total = int(self.cfg.iterations)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: lr_factor(it, self.total, self.cfg.warmup, self.cfg.min_lr_ratio)
        )
        self.amp_dtype: torch.dtype | None = None
        if self.device.type == "cuda" and self.cfg.amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        kind = ctx.input_kind
        in_slices = int(getattr(student, "in_slices", 1))
        from semisam.training.data import SamplerSpec

        size = tuple(self.cfg.crop_size) if kind == "2.5d" else tuple(self.cfg.patch_size)
        self.sampler = Sampler(
            ctx.labeled, ctx.unlabeled, SamplerSpec(kind, in_slices, size, self.cfg.foreground_fraction)
        )
        self.augment = Augmenter(kind) if self.cfg.augment else None
        self.needs_unlabeled = any(getattr(p, "needs_unlabeled", False) for p in parts) and bool(
            ctx.unlabeled
        )
        self.wants_views = any(getattr(p, "wants_views", False) for p in parts)
        # A part whose per-sample targets are looked up by u_index on the un-augmented grid (semisam_plus's
        # pseudo-labels) sets augment_unlabeled = False: a flip or rotation of xu would misalign them.
        self.augment_unlabeled = all(getattr(p, "augment_unlabeled", True) for p in parts)
        # Case shards per rank (only when every rank gets at least one case).
        n = len(ctx.labeled)
        self.l_pool = (
            list(range(dist.rank, n, dist.world_size)) if dist.active and n >= dist.world_size else None
        )
        nu = len(ctx.unlabeled)
        self.u_pool = (
            list(range(dist.rank, nu, dist.world_size)) if dist.active and nu >= dist.world_size else None
        )
        self._features: torch.Tensor | None = None
        if ctx.want_features:
            feature_module(student).register_forward_hook(self._capture)
        self.loss_curve: list[dict[str, float]] = []
        self.val_curve: list[dict[str, Any]] = []
        self.seconds = 0.0
        self.wall = 0.0  # seconds of the training loop, refreshes and validations included
        self._budget_ref: tuple[int, float] | None = None  # (iteration, wall) the speed is measured from
        self.last_checkpoint: Path | None = None

    # ------------------------------------------------------------------------------ state
    def _capture(self, module, inputs, output) -> None:
        self._features = output

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "parts": {p.name: p.state_dict() for p in self.parts},
            "rng": runstate.rng_state(self.device),
            "loss_curve": self.loss_curve,
            "val_curve": self.val_curve,
            "seconds": self.seconds,
            "wall": self.wall,
            "total": self.total,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for p in self.parts:
            if p.name in state.get("parts", {}):
                p.load_state_dict(state["parts"][p.name])
        runstate.set_rng_state(state.get("rng", {}), self.device)
        self.loss_curve = list(state.get("loss_curve", []))
        self.val_curve = list(state.get("val_curve", []))
        self.seconds = float(state.get("seconds", 0.0))
        self.wall = float(state.get("wall", self.seconds))
        self.total = int(state.get("total", self.total))

    def checkpoint(self, iteration: int) -> Path | None:
        """Write the run checkpoint after ``iteration`` iterations (rank 0); all ranks wait for it."""
        path = None
        if self.dist.is_main:
            path = runstate.save(self.run_dir, iteration, self.ctx.student, self.state_dict(), self.run_info)
            self.ctx.emit({"event": "checkpoint", "iteration": iteration, "path": str(path)})
        ddp.barrier(self.dist)
        self.last_checkpoint = path
        return path

    # ------------------------------------------------------------------------------ steps
    def make_batch(self, it: int) -> Batch:
        rng = iteration_rng(self.cfg.seed, self.dist.rank, it)
        x, y, lidx = self.sampler.labeled_batch(rng, self.cfg.batch_size, self.l_pool)
        xu, uidx = (None, [])
        if self.needs_unlabeled:
            xu, uidx = self.sampler.unlabeled_batch(
                rng,
                self.cfg.unlabeled_batch_size or self.cfg.batch_size,
                self.u_pool,
                self.ctx.unlabeled_focus,
            )
        if self.augment is not None:
            x, y = self.augment(x, y, rng)
            if xu is not None and self.augment_unlabeled:
                xu, _ = self.augment(xu, None, rng)
        dev = self.device
        batch = Batch(
            x=x.to(dev), y=y.to(dev), xu=None if xu is None else xu.to(dev), u_index=uidx, l_index=lidx
        )
        if self.wants_views and batch.xu is not None:
            g = self.ctx.generator(it, salt=101)
            s = float(self.cfg.weak_noise)
            batch.weak = batch.xu + s * torch.randn(batch.xu.shape, generator=g, device=dev)
            gamma = torch.exp(
                0.4
                * (
                    torch.rand((batch.xu.shape[0],) + (1,) * (batch.xu.ndim - 1), generator=g, device=dev)
                    - 0.5
                )
            )
            batch.strong = batch.xu.clamp(0, 1).pow(gamma) + 2 * s * torch.randn(
                batch.xu.shape, generator=g, device=dev
            )
        return batch

    def forward(self, batch: Batch) -> StudentOutput:
        inp = batch.x if batch.xu is None else torch.cat([batch.x, batch.xu])
        self._features = None
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            logits = self.model(inp)
        b = batch.x.shape[0]
        feats = self._features
        return StudentOutput(
            logits=logits[:b],
            logits_u=None if batch.xu is None else logits[b:],
            features=None if feats is None else feats[:b],
            features_u=None if feats is None or batch.xu is None else feats[b:],
        )

    def step(self, it: int) -> dict[str, float]:
        """One optimiser step; returns the loss terms (floats, ``total`` included)."""
        self.model.train()
        batch = self.make_batch(it)
        out = self.forward(batch)
        terms: dict[str, torch.Tensor] = {}
        for part in self.parts:
            for name, value in part.losses(self.ctx, batch, out, it).items():
                key = name if name not in terms else f"{part.name}.{name}"
                terms[key] = value
        total = sum(terms.values()) if terms else out.logits.sum() * 0.0
        if self.cfg.inject_nan_at is not None and it == self.cfg.inject_nan_at:
            total = total * float("nan")
        bad = not bool(torch.isfinite(total.detach()).item())
        if ddp.any_rank(bad, self.dist, self.device):
            vals = {k: float(v.detach()) for k, v in terms.items()}
            raise TrainError(
                "nan_loss",
                f"the training loss is not finite at iteration {it + 1} (terms {vals}); nothing was saved "
                "from this run: lower lr or check the cases' intensities",
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        ddp.average_gradients(self.extra_params, self.dist)
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, CLIP_NORM)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        for part in self.parts:
            part.after_step(self.ctx, it)
        out_terms = {k: float(v.detach()) for k, v in terms.items()}
        out_terms["total"] = float(total.detach())
        return out_terms

    def fit_budget(self, done: int) -> None:
        """Plan the iterations that fit ``config.max_minutes`` at the measured speed: fewer than
        ``config.iterations`` when they would not fit, and back up towards it when the machine got
        faster (a busy spell early in a run must not cut it for good; measured: a whole-scan run cut
        to 3,507 of 4,000 iterations ended after 440 of its 600 s). Never more than ``config.iterations``,
        never fewer than ``done + 1``; a ``budget`` event is emitted when the plan moves by more than
        :data:`BUDGET_STEP`. The speed is the loop's wall time per iteration (refreshes and validations
        included) since a reference point after the warm-up, over at least :data:`BUDGET_MIN_ITERATIONS`.
        The cosine decay follows the plan, so it ends at the last iteration trained."""
        budget = self.cfg.max_minutes
        if budget is None or done >= self.total:
            return
        if self._budget_ref is None:
            if done >= self.cfg.warmup:
                self._budget_ref = (done, self.wall)
            return
        it0, wall0 = self._budget_ref
        if done - it0 < BUDGET_MIN_ITERATIONS:
            return
        per_it = (self.wall - wall0) / (done - it0)
        if per_it <= 0:
            return
        fits = done + max(1, int((60.0 * budget - self.wall) / per_it))
        plan = min(int(self.cfg.iterations), max(done + 1, fits))
        if abs(plan - self.total) <= BUDGET_STEP * self.total:
            return
        old, self.total = self.total, plan
        log.info("time budget %.1f min: %d iterations planned instead of %d", budget, self.total, old)
        self.ctx.emit(
            {
                "event": "budget",
                "iteration": done,
                "iterations": self.total,
                "planned": old,
                "max_minutes": budget,
                "seconds_per_iteration": round(per_it, 4),
            }
        )

    def run(self, start: int = 0) -> None:
        """Iterate from ``start`` to :attr:`total` (``config.iterations``, or fewer under the time
        budget); raises Cancelled / TrainError."""
        cfg = self.cfg
        ema: float | None = None
        # The budget counts this loop's time plus what a resumed run had spent already.
        base, t_loop, self._budget_ref = self.wall, time.perf_counter(), None
        it = start
        while it < self.total:
            if ddp.any_rank(self.cancel(), self.dist, self.device):
                self.wall = base + time.perf_counter() - t_loop
                path = self.checkpoint(it)
                raise Cancelled(it, None if path is None else str(path))
            if it == start or it % cfg.refresh_every == 0:
                for part in self.parts:
                    part.refresh(self.ctx, it)
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses
            t0 = time.perf_counter()
            terms = self.step(it)
            dt = time.perf_counter() - t0
            self.seconds += dt
            ema = dt if ema is None else 0.9 * ema + 0.1 * dt
            done = it + 1
            self.wall = base + time.perf_counter() - t_loop
            if done % BUDGET_EVERY == 0 or self._budget_ref is None:
                self.fit_budget(done)
            if done % cfg.log_every == 0 or done == self.total:
                self.loss_curve.append({"iteration": done, **terms})
                self.ctx.emit(
                    {
                        "event": "iteration",
                        "iteration": done,
                        "iterations": self.total,
                        "losses": terms,
                        "lr": lr,
                        "seconds_per_iteration": round(ema, 4),
                        "eta_s": round(ema * (self.total - done), 1),
                    }
                )
            if (
                self.validate is not None
                and cfg.validate_every
                and done % cfg.validate_every == 0
                and done < self.total
            ):
                if self.dist.is_main:
                    v = self.validate(done)
                    if v.get("dice") is not None:
                        self.val_curve.append({"iteration": done, "dice": v["dice"]})
                        self.ctx.emit(
                            {
                                "event": "validation",
                                "iteration": done,
                                "dice": v["dice"],
                                "per_case": v["per_case"],
                            }
                        )
                ddp.barrier(self.dist)
            if done % cfg.checkpoint_every == 0 and done < self.total:
                self.wall = base + time.perf_counter() - t_loop
                self.checkpoint(done)
            it = done
        self.wall = base + time.perf_counter() - t_loop
        ddp.average_buffers(self.ctx.student, self.dist)
