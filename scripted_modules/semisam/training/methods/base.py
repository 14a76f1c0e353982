"""What a method part sees and returns: the hook protocol and the state dataclasses it works on.

A training method is a ``+``-joined list of parts (:data:`semisam.training.methods.METHOD_PARTS`);
the :class:`~semisam.training.trainer.Trainer` owns the loop and calls every part's hooks:

* ``setup(ctx)`` once before the loop (also after a resume, before ``load_state_dict``);
* ``refresh(ctx, iteration)`` every ``ctx.config.refresh_every`` iterations (pseudo-label refresh);
* ``losses(ctx, batch, out, iteration)`` every iteration: named, already weighted scalar terms that the
  trainer sums into ``total``;
* ``after_step(ctx, iteration)`` after the optimiser step (e.g. the EMA teacher update);
* ``trainable()`` extra parameters the optimiser also updates (e.g. a distillation projector);
* ``state_dict()`` / ``load_state_dict(state)`` for checkpoints: tensors and plain Python types only,
  because checkpoints are read back with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch

if TYPE_CHECKING:
    from semisam.model_folder import ModelManifest
    from semisam.store import LabeledStore
    from semisam.training.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class CaseData:
    """One case on the model grid (preprocessed exactly as inference does it).

    Attributes:
        case_id: store case id (labeled) or scan id (unlabeled).
        image: ``(Z, Y, X)`` float32 in [0, 1] (CPU tensor).
        mask: ``(Z, Y, X)`` uint8 class indices (0 = background, i = the manifest's i-th label), or
            ``None`` for an unlabeled scan.
        sha256: content digest of the source file(s) (cache keys).
        spacing: model-grid spacing (i, j, k) in mm.
    """

    case_id: str
    image: torch.Tensor
    mask: torch.Tensor | None
    sha256: str = ""
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.image.shape)  # type: ignore[return-value]


@dataclass
class TrainContext:
    """Everything a method part may use; built by the trainer, shared by all parts.

    Attributes:
        config: the run's :class:`~semisam.training.config.TrainConfig` (``config.parts[name]`` holds
            a part's own options).
        device: the training device.
        student: the specialist being trained (the bare module, never the DDP wrapper).
        manifest: the student's manifest (preprocessing, labels, arch); ``n_classes`` via the manifest.
        store: the :class:`~semisam.store.LabeledStore` (read-only for parts).
        cache: the store's cache folder ``STORE/cache/`` (generalist embeddings, pseudo-labels); may be
            deleted at any time by ``semisam store check --clean``.
        labeled: training cases on the model grid.
        unlabeled: unlabeled scans on the model grid (``mask is None``).
        emit: send an event dict (e.g. ``{"event": "phase", "phase": "pseudo_labels", "done": 3,
            "total": 10}``); the trainer adds ``time`` and ``elapsed_s``. A no-op on DDP ranks > 0.
        generalists: ``[(name, checkpoint or None)]`` from ``--generalist``, as given.
        rank, world_size: DDP rank and number of processes (0, 1 without DDP).
        want_features: set True in ``setup`` to get the student's 1/16-resolution encoder features in
            :class:`StudentOutput` (the trainer registers the forward hook on :func:`feature_module`).
        unlabeled_focus: per unlabeled case, ``(N, 3)`` int voxel coordinates ``(z, y, x)`` on the
            model grid (or ``None``) around which unlabeled crops are centred with probability
            ``config.foreground_fraction`` (else uniform), like labeled crops around the structure. A
            part sets it, typically in ``refresh`` from the current predicted foreground; empty: uniform.
        extra: free room for parts to share objects (e.g. a built generalist), keyed by part name.
        cancel: returns True once the run must stop; a part whose ``refresh`` works for minutes checks it
            between its units of work (the trainer checks it before every iteration).
    """

    config: TrainConfig
    device: torch.device
    student: torch.nn.Module
    manifest: ModelManifest
    store: LabeledStore | None
    cache: Path
    labeled: list[CaseData] = field(default_factory=list)
    unlabeled: list[CaseData] = field(default_factory=list)
    emit: Callable[[dict[str, Any]], None] = lambda event: None
    generalists: list[tuple[str, str | None]] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1
    want_features: bool = False
    unlabeled_focus: list[np.ndarray | None] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    cancel: Callable[[], bool] = lambda: False
    _generalist_objects: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n_classes(self) -> int:
        return int(self.manifest.n_classes)

    def generator(self, iteration: int, salt: int = 0) -> torch.Generator:
        """A torch generator on ``device`` for ``iteration`` (seeded from seed, rank, iteration, salt).

        Parts draw their noise from it, so a resumed run repeats the uninterrupted run's draws.
        """
        seq = np.random.SeedSequence([int(self.config.seed), self.rank, int(iteration), int(salt)])
        g = torch.Generator(device=self.device)
        g.manual_seed(int(seq.generate_state(1, dtype=np.uint64)[0] >> 1))
        return g

    @property
    def input_kind(self) -> str:
        """``"2.5d"`` (``(B, in_slices, H, W)`` input) or ``"3d"`` (``(B, 1, D, H, W)``)."""
        return str(getattr(self.student, "input_kind", "3d"))

    def generalist(self, index: int = 0):
        """The ``index``-th generalist from ``--generalist``, built on first use (frozen, eval mode).

        Built with :func:`semisam.generalists.build_generalist` (name, checkpoint, device) and shared
        by every part; it answers with the store's active adapted generalist version (``semisam adapt``)
        when that version was made for it (else the frozen one, with a warning). Raises
        ``ValueError`` when fewer generalists were given.
        """
        if index >= len(self.generalists):
            raise ValueError(f"generalist #{index} requested but only {len(self.generalists)} given")
        name, ckpt = self.generalists[index]
        key = f"{name}:{ckpt or ''}"
        if key not in self._generalist_objects:
            from semisam.generalists import build_generalist

            model = build_generalist(name, ckpt, self.device)
            self._generalist_objects[key] = _with_active_version(model, self.store)
        return self._generalist_objects[key]


def _with_active_version(model, store):
    """``model`` answering with ``store``'s active adapted generalist version when one was made for it."""
    if store is None or not hasattr(model, "mask_decoder"):
        return model
    from semisam.adapt.versions import GeneralistVersionError, active_version_path, apply_version

    version = active_version_path(store.root, model.name)
    if version is None:
        return model
    try:
        return apply_version(model, version)
    except GeneralistVersionError as exc:
        log.warning("the frozen generalist teaches: %s", exc)
        return model


@dataclass
class Batch:
    """One training batch, in the student's input kind.

    Attributes:
        x: labeled input, 2.5D ``(B, in_slices, H, W)`` or 3D ``(B, 1, D, H, W)`` float32 in ~[0, 1].
        y: labels for ``x``: ``(B, H, W)`` (2.5D: the centre slice) or ``(B, D, H, W)``, int64 class
            indices.
        xu: unlabeled input of the same shape as ``x`` (``B_u`` samples), or ``None`` when no part
            needs unlabeled data or the store has none.
        u_index: for each row of ``xu``, ``(unlabeled case index into ctx.unlabeled, origin)`` where
            origin is ``(z, y0, x0)``: the centre slice and the crop's top-left corner (2.5D) or the
            patch's first voxel (3D), on the model grid. A part looks up its pseudo-label for exactly
            that sample with it.
        weak, strong: perturbed views of ``xu`` (weak: Gaussian noise sigma ``config.weak_noise``;
            strong: random contrast/gamma plus stronger noise), filled only when a part sets
            ``wants_views = True``; else ``None``.
        l_index: like ``u_index`` for the labeled rows (index into ctx.labeled).
    """

    x: torch.Tensor
    y: torch.Tensor
    xu: torch.Tensor | None = None
    u_index: list[tuple[int, tuple[int, int, int]]] = field(default_factory=list)
    weak: torch.Tensor | None = None
    strong: torch.Tensor | None = None
    l_index: list[tuple[int, tuple[int, int, int]]] = field(default_factory=list)


@dataclass
class StudentOutput:
    """The student's outputs for one batch (one forward pass over ``cat(x, xu)``).

    Attributes:
        logits: ``(B, n_classes, H, W)`` / ``(B, n_classes, D, H, W)`` for ``batch.x``.
        logits_u: the same for ``batch.xu`` (``None`` without unlabeled input).
        features: encoder features at 1/16 resolution for ``batch.x``, ``(B, C, H/16, W/16)`` for the
            2.5D student (3D: ``(B, C, D/16, H/16, W/16)``), when ``ctx.want_features``; else ``None``.
        features_u: the same for ``batch.xu``.
    """

    logits: torch.Tensor
    logits_u: torch.Tensor | None = None
    features: torch.Tensor | None = None
    features_u: torch.Tensor | None = None


@runtime_checkable
class MethodPart(Protocol):
    """A method part (see the module docstring for when each hook runs).

    Optional attributes the trainer reads with ``getattr``: ``needs_unlabeled`` (bool, default
    False: batches then carry ``xu``), ``wants_views`` (bool: fill ``batch.weak``/``strong``) and
    ``augment_unlabeled`` (bool, default True; False: ``xu`` is not augmented, so targets looked up by
    ``u_index`` stay aligned).
    """

    name: str

    def setup(self, ctx: TrainContext) -> None: ...

    def refresh(self, ctx: TrainContext, iteration: int) -> None: ...

    def losses(
        self, ctx: TrainContext, batch: Batch, out: StudentOutput, iteration: int
    ) -> dict[str, torch.Tensor]: ...

    def after_step(self, ctx: TrainContext, iteration: int) -> None: ...

    def trainable(self) -> list[torch.nn.Parameter]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class PartBase:
    """Convenience base with no-op hooks; a part overrides what it needs."""

    name = "part"
    needs_unlabeled = False
    wants_views = False
    augment_unlabeled = True

    def __init__(self, config: dict[str, Any] | None = None):
        self.options = dict(config or {})

    def setup(self, ctx: TrainContext) -> None:
        return None

    def refresh(self, ctx: TrainContext, iteration: int) -> None:
        return None

    def losses(
        self, ctx: TrainContext, batch: Batch, out: StudentOutput, iteration: int
    ) -> dict[str, torch.Tensor]:
        return {}

    def after_step(self, ctx: TrainContext, iteration: int) -> None:
        return None

    def trainable(self) -> list[torch.nn.Parameter]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def feature_module(student: torch.nn.Module) -> torch.nn.Module:
    """The student submodule whose output is the 1/16-resolution encoder feature map.

    ``mamba_unet``: the last encoder stage ``enc[2]`` (128 channels at 1/16, before the 1/32 Mamba
    bottleneck). ``unet3d`` (MONAI UNet, strides 2,2,2,2): the encoder path at 1/16 is the innermost
    ``SkipConnection``'s submodule; we take the down-sampling block at depth 4.
    """
    enc = getattr(student, "enc", None)
    if isinstance(enc, torch.nn.ModuleList) and len(enc) >= 3:
        return enc[2]
    net = getattr(student, "net", None)
    if net is not None:
        # MONAI UNet: Sequential(down, SkipConnection(Sequential(down, SkipConnection(...), up)), up).
        m = net
        for _ in range(3):
            m = m[1].submodule  # type: ignore[index]
        return m[0]  # type: ignore[index]
    raise ValueError(f"no 1/16-resolution feature module known for {type(student).__name__}")


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """A numpy generator seeded from ``seed`` and extra integer keys (rank, iteration...)."""
    return np.random.default_rng([int(seed), *[int(k) for k in keys]])
