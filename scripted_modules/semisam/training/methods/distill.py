"""``distill``: the generalist's image encoder teaches the specialist's encoder (MedSAM -> small Mamba student).

After Jia et al. (distilling a medical foundation model into a small Mamba student). Per step, on a few
whole slices of the training cases (and of unlabeled scans once the specialist points at them):

* **feature distillation**: the student's 1/16-resolution encoder features ``s`` (forward hook on
  :func:`~semisam.training.methods.base.feature_module`, ``(B, 128, H/16, W/16)`` for mamba_unet) go
  through a small trained projector ``P`` (1x1 convolution 128 -> 256, returned by :meth:`trainable`)
  and match the generalist's encoder features ``t`` of the same slice pooled onto the student's cell grid
  (LiteMedSAM ``(1, 256, 64, 64)`` of the resized slice, sampled at 4 x 4 points per 16 x 16-pixel cell
  and averaged): ``L_feat = mean over cells (1 - cos(P s, t))``. The projector maps the *student into the
  teacher's space* (FitNets' direction): the frozen teacher is the fixed target, so neither side can
  shrink the loss by collapsing; projecting the teacher into the student's space instead lets the
  projector and the student meet at a trivial, low-information point.
* **perturbation consistency**: the same input perturbation (gamma ``exp(U(-g, g))`` then Gaussian noise
  ``sigma``, drawn from a seed per (case, slice, k)) is applied to the slice the teacher encodes and to
  the student's input stack; the change it causes must agree:
  ``L_pert = mean over cells || (n(P s') - n(P s)) - (n(t') - n(t)) ||^2 / C`` with ``n`` the per-cell
  channel standardisation. The encoder costs ~1 s per slice here, too slow to run each step, so
  ``perturbations`` (default 1) perturbed teacher encodings per slice are precomputed once and cached
  in the shared :class:`~semisam.training.methods.semi.embedding_store.EmbeddingStore` (a perturbed
  slice is another content fingerprint, hence another key).

Which slices: labeled cases, slices within ``margin`` of their label; unlabeled scans, slices where the
``semisam_plus`` part prompted (shared embeddings, no extra encoding) or, without it, where the current
specialist predicts foreground (after ``start``). At most ``max_encodes`` new encoder runs per refresh.

The paper's distribution-based self-supervised loss for low-contrast lesions is not implemented: its
description does not pin down which distributions are matched and how, and a guessed variant would
be untestable against the paper.

Options (``config.parts["distill"]``): ``weight`` (1.0), ``pert_weight`` (1.0), ``perturbations`` (1),
``gamma`` (0.3), ``sigma`` (0.05), ``rows`` (4 slices per step), ``margin`` (2 slices), ``max_encodes``
(200), ``perturb_unlabeled`` (False: perturbed encodings of labeled slices only), ``start`` (0.2),
``refresh_every``.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from semisam.generalists.geometry import ResizeLongestSide
from semisam.training.methods.semi.pseudo_labels import predict_volume

from .base import Batch, PartBase, StudentOutput, TrainContext, feature_module
from .semisam_plus import _iters, embedding_store, generalists

log = logging.getLogger(__name__)

CELL = 16  # the student's feature stride (pixels)


def perturb(image: np.ndarray, seed_key: list[int], gamma: float, sigma: float) -> np.ndarray:
    """The deterministic perturbation ``clip(image ** g + sigma * n, 0, 1)`` of a ``(..., H, W)`` array.

    ``g = exp(U(-gamma, gamma))`` and the noise field ``n`` ``(H, W)`` come from ``seed_key``; the same
    key gives the same perturbation whatever the leading dimensions (the student's stack of neighbours
    gets the teacher slice's perturbation on every slice).
    """
    rng = np.random.default_rng(seed_key)
    g = float(np.exp(rng.uniform(-gamma, gamma)))
    noise = rng.normal(0.0, sigma, size=image.shape[-2:]).astype(np.float32)
    return np.clip(np.power(np.clip(image, 0.0, 1.0), g) + noise, 0.0, 1.0).astype(np.float32)


def teacher_cells(features: torch.Tensor, slice_shape: tuple[int, int], image_size: int) -> torch.Tensor:
    """Teacher features ``(1, C, h, w)`` of a slice ``(H, W)`` -> ``(C, ceil(H/16), ceil(W/16))`` on the
    student's cell grid: 4 x 4 bilinear samples per 16 x 16-pixel cell, averaged.

    A slice pixel ``p`` lies at model-frame pixel ``(p + 0.5) s`` (``s = image_size / max(H, W)``), i.e.
    at embedding index ``(p + 0.5) s / stride - 0.5`` with ``stride = image_size / h``.
    """
    h_img, w_img = slice_shape
    tf = ResizeLongestSide((h_img, w_img), image_size)
    s = tf.scale
    fh, fw = features.shape[-2:]
    stride_y, stride_x = image_size / fh, image_size / fw
    hc, wc = -(-h_img // CELL), -(-w_img // CELL)
    sub = torch.arange(4, dtype=torch.float32) * 4 + 1.5  # 4x4 sub-block centres inside a cell (pixel index)
    py = (torch.arange(hc, dtype=torch.float32)[:, None] * CELL + sub[None]).reshape(-1)
    px = (torch.arange(wc, dtype=torch.float32)[:, None] * CELL + sub[None]).reshape(-1)
    ey = (py + 0.5) * s / stride_y - 0.5
    ex = (px + 0.5) * s / stride_x - 0.5
    gy = ey / max(fh - 1, 1) * 2 - 1
    gx = ex / max(fw - 1, 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[
        None
    ]  # (1, 4hc, 4wc, 2) as (x, y)
    sampled = F.grid_sample(
        features.float().cpu(), grid, mode="bilinear", padding_mode="border", align_corners=True
    )
    return F.avg_pool2d(sampled, 4)[0]  # (C, hc, wc)


def _std(f: torch.Tensor) -> torch.Tensor:
    """Per-cell standardisation over channels: ``(B, C, h, w)`` -> same shape, zero mean, unit variance."""
    return (f - f.mean(1, keepdim=True)) / (f.std(1, keepdim=True) + 1e-5)


class FeatureHook:
    """Captures a module's output during the student forwards this part runs itself (``hook.value``).

    Armed only inside :meth:`capture`: the trainer's own forwards leave nothing here, and ``value`` is
    cleared after each use, so a ``copy.deepcopy`` of the student (inference preparation, saving) never
    meets a non-leaf tensor through the hook.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self.armed = False
        self._handle = module.register_forward_hook(self._store)

    def _store(self, module, inputs, output) -> None:
        if self.armed:
            self.value = output

    def capture(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run ``model(x)`` and return the hooked module's output."""
        self.value, self.armed = None, True
        try:
            model(x)
        finally:
            self.armed = False
        value, self.value = self.value, None
        if value is None:
            raise RuntimeError("the feature hook did not fire: the student never ran its 1/16 stage")
        return value

    def remove(self) -> None:
        self._handle.remove()


class Distill(PartBase):
    """The distillation part (see the module docstring for the losses and options)."""

    name = "distill"

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        o = self.options
        self.weight = float(o.get("weight", 1.0))
        self.pert_weight = float(o.get("pert_weight", 1.0))
        self.perturbations = int(o.get("perturbations", 1))
        self.gamma = float(o.get("gamma", 0.3))
        self.sigma = float(o.get("sigma", 0.05))
        self.rows = int(o.get("rows", 4))
        self.margin = int(o.get("margin", 2))
        self.max_encodes = int(o.get("max_encodes", 200))
        self.perturb_unlabeled = bool(o.get("perturb_unlabeled", False))
        #: channels of the generalist's encoder output (256 for every SAM-family model); checked at setup
        self.teacher_channels = int(o.get("teacher_channels", 256))
        self.projector: torch.nn.Conv2d | None = None
        self.teacher = None
        # (kind, case index, z) -> [clean cells, perturbed cells...] each (C, hc, wc) float16 CPU
        self.cells: dict[tuple[str, int, int], list[torch.Tensor]] = {}
        self.refreshed_at = -1
        self.start = 0
        self.refresh_every = 100
        self._rng = np.random.default_rng(0)
        self._hook: FeatureHook | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, ctx: TrainContext) -> None:
        if ctx.input_kind != "2.5d":
            raise ValueError("distill needs a 2.5D student (mamba_unet): teacher features are per slice")
        total = int(getattr(ctx.config, "iterations", 100))
        self.start = _iters(self.options.get("start"), total, 0.2)
        every = self.options.get("refresh_every") or getattr(ctx.config, "refresh_every", None) or 100
        self.refresh_every = max(1, int(every))
        self.teacher = generalists(ctx)[0]
        self.store = embedding_store(ctx)
        self._rng = np.random.default_rng([int(getattr(ctx.config, "seed", 0)), 7, ctx.rank])
        if self._hook is None:
            self._hook = FeatureHook(feature_module(ctx.student))
        if self.projector is None:
            self.init_projector(ctx)
        assert self.projector is not None
        self.projector.to(ctx.device)
        self._add_labeled(ctx)

    def init_projector(self, ctx: TrainContext) -> None:
        """The projector ``Conv2d(C_student, teacher_channels, 1)``, made at build time so that the
        trainer's optimiser sees it in :meth:`trainable` whenever it asks. ``C_student`` is measured with
        one forward of a 32 x 32 input through the student (eval mode)."""
        if ctx.input_kind != "2.5d":
            raise ValueError("distill needs a 2.5D student (mamba_unet): teacher features are per slice")
        if self._hook is None:
            self._hook = FeatureHook(feature_module(ctx.student))
        k = int(getattr(ctx.student, "in_slices", 1))
        was = ctx.student.training
        ctx.student.eval()
        dev = next(ctx.student.parameters()).device
        with torch.no_grad():
            c_student = int(self._hook.capture(ctx.student, torch.zeros(1, k, 32, 32, device=dev)).shape[1])
        ctx.student.train(was)
        gen = torch.Generator().manual_seed(int(getattr(ctx.config, "seed", 0)))
        self.projector = torch.nn.Conv2d(c_student, self.teacher_channels, 1)
        with torch.no_grad():
            bound = 1.0 / np.sqrt(c_student)
            self.projector.weight.uniform_(-bound, bound, generator=gen)
            self.projector.bias.zero_()
        self.projector.to(dev)

    # ------------------------------------------------------------------ teacher cells
    def _case_key(self, case) -> int:
        return int.from_bytes(hashlib.sha256(f"{case.case_id}|{case.sha256}".encode()).digest()[:4], "little")

    def _encode_slice(self, kind: str, ci: int, case, z: int, budget: list[int]) -> None:
        key = (kind, ci, z)
        if key in self.cells or budget[0] <= 0:
            return
        image = case.image[z].detach().to("cpu", torch.float32).numpy()
        # Unlabeled slices: the clean encoding is shared with semisam_plus (no extra encoder run);
        # perturbed encodings only when perturb_unlabeled (each costs one more encoder run per slice).
        n_pert = self.perturbations if (kind == "l" or self.perturb_unlabeled) else 0
        views = [image] + [
            perturb(image, [self._case_key(case), z, k], self.gamma, self.sigma) for k in range(1, n_pert + 1)
        ]
        out = []
        for v in views:
            before = self.store.encoded
            emb = self.store.get_or_encode(self.teacher, v)
            budget[0] -= self.store.encoded - before
            if int(emb.features.shape[1]) != self.teacher_channels:
                raise ValueError(
                    f"distill: the generalist's features have {emb.features.shape[1]} channels, "
                    f"the projector was made for {self.teacher_channels} (option teacher_channels)"
                )
            out.append(teacher_cells(emb.features, tuple(v.shape), int(self.teacher.image_size)).half())
        self.cells[key] = out

    def _slices_near(self, fg: np.ndarray) -> list[int]:
        zs = np.nonzero(fg)[0]
        if len(zs) == 0:
            return []
        keep = set()
        for z in zs:
            keep.update(range(max(0, z - self.margin), min(len(fg), z + self.margin + 1)))
        return sorted(keep)

    def _add_labeled(self, ctx: TrainContext) -> None:
        budget = [self.max_encodes]
        total = sum(1 for c in ctx.labeled if c.mask is not None)
        for i, case in enumerate(ctx.labeled):
            if case.mask is None:
                continue
            fg = (case.mask.reshape(case.mask.shape[0], -1) > 0).any(1).cpu().numpy()
            for z in self._slices_near(fg):
                self._encode_slice("l", i, case, z, budget)
            ctx.emit({"event": "phase", "phase": "embeddings", "done": i + 1, "total": total})

    def refresh(self, ctx: TrainContext, iteration: int) -> None:
        """Add unlabeled slices the specialist now points at (when due)."""
        if iteration < self.start or not ctx.unlabeled:
            return
        if self.refreshed_at >= 0 and iteration - self.refreshed_at < self.refresh_every:
            return
        self.refreshed_at = iteration
        budget = [self.max_encodes]
        plus = ctx.extra.get("semisam_plus")
        for i, case in enumerate(ctx.unlabeled):
            if plus is not None and getattr(plus, "pseudo", None) is not None:
                fg = np.asarray(plus.pseudo[i].prompted)
            else:
                prob = predict_volume(ctx.student, case.image, ctx.device)
                fg = (prob[1:].max(0) >= 0.5).reshape(prob.shape[1], -1).any(1)
            for z in self._slices_near(fg):
                self._encode_slice("u", i, case, z, budget)

    # ------------------------------------------------------------------ losses
    def _stack(self, case, z: int, in_slices: int) -> np.ndarray:
        r = in_slices // 2
        depth = case.image.shape[0]
        idx = np.clip(np.arange(z - r, z + r + 1), 0, depth - 1)
        return case.image[idx].detach().to("cpu", torch.float32).numpy()

    def _features(self, ctx: TrainContext, x: torch.Tensor) -> torch.Tensor:
        assert self._hook is not None
        return self._hook.capture(ctx.student, x)

    def losses(
        self, ctx: TrainContext, batch: Batch, out: StudentOutput, iteration: int
    ) -> dict[str, torch.Tensor]:
        self.refresh(ctx, iteration)
        assert self.projector is not None, "setup() was not called"
        if not self.cells:
            return {}
        keys = list(self.cells)
        kind, ci, _ = keys[int(self._rng.integers(len(keys)))]
        same = [k for k in keys if k[0] == kind and k[1] == ci]  # one case per step: one slice shape
        pick = [same[int(i)] for i in self._rng.permutation(len(same))[: self.rows]]
        case = (ctx.labeled if kind == "l" else ctx.unlabeled)[ci]
        k_in = int(getattr(ctx.student, "in_slices", 1))
        stacks = np.stack([self._stack(case, z, k_in) for _, _, z in pick])
        x = torch.from_numpy(stacks).to(ctx.device)
        t = torch.stack([self.cells[k][0] for k in pick]).float().to(ctx.device)
        hc, wc = t.shape[-2:]
        s = self.projector(self._features(ctx, x)[..., :hc, :wc].float())
        terms = {"distill_feat": self.weight * (1.0 - F.cosine_similarity(s, t, dim=1)).mean()}
        have = min(len(self.cells[k]) for k in pick) - 1
        if have <= 0 or self.pert_weight <= 0:
            terms["distill_pert"] = s.sum() * 0.0  # no perturbed teacher encoding for these slices
        else:
            kp = 1 + int(self._rng.integers(have))
            xp = np.stack(
                [
                    perturb(st, [self._case_key(case), z, kp], self.gamma, self.sigma)
                    for st, (_, _, z) in zip(stacks, pick, strict=True)
                ]
            )
            tp = torch.stack([self.cells[k][kp] for k in pick]).float().to(ctx.device)
            sp = self.projector(
                self._features(ctx, torch.from_numpy(xp).to(ctx.device))[..., :hc, :wc].float()
            )
            diff = (_std(sp) - _std(s)) - (_std(tp) - _std(t))
            terms["distill_pert"] = self.pert_weight * diff.pow(2).mean()
        return terms

    # ------------------------------------------------------------------ state
    def trainable(self) -> list[torch.nn.Parameter]:
        return list(self.projector.parameters()) if self.projector is not None else []

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"refreshed_at": int(self.refreshed_at)}
        if self.projector is not None:
            state["projector"] = {k: v.detach().cpu() for k, v in self.projector.state_dict().items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.refreshed_at = int(state.get("refreshed_at", -1))
        if "projector" in state and self.projector is not None:
            self.projector.load_state_dict(state["projector"])


def build(config: dict[str, Any], ctx: TrainContext) -> Distill:
    part = Distill(config)
    part.init_projector(ctx)
    return part
