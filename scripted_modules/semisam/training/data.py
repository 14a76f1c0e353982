"""Training data: store cases on the model grid, structure-aware slab/patch sampling, augmentation.

Cases are preprocessed exactly as inference does it (:func:`semisam.inference.preprocess.to_model_grid`
with the manifest's preprocessing); masks follow the same orientation and go to the model grid with
nearest-exact resampling (the inverse of what :func:`~semisam.inference.preprocess.to_input_grid` does
with predictions). Mask values (the store's label values) become class indices in the manifest's
label order.

Sampling. A labeled sample is centred on a random structure voxel with probability
``foreground_fraction`` (uniform jitter of a quarter crop, so the structure is not always central),
otherwise it is uniform over the volume. Lesions of < 1 % of the voxels would otherwise be absent from
most crops. Every random choice of iteration ``i`` on DDP rank ``r`` comes from a generator seeded with
``(seed, r, i)``, so a resumed run draws exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from semisam.fileio import sha256_file
from semisam.inference.preprocess import GridMap, to_model_grid
from semisam.training.errors import TrainError
from semisam.training.methods.base import CaseData, rng_for

log = logging.getLogger(__name__)


def mask_to_model_grid(mask: np.ndarray, grid: GridMap, lut: np.ndarray) -> torch.Tensor:
    """Input-grid label map ``(Z, Y, X)`` -> ``(Z', Y', X')`` uint8 class indices on the model grid.

    ``lut[value]`` is the class index of label value ``value`` (0 for undeclared values).
    """
    arr = np.transpose(np.asarray(mask), grid.axes)
    if grid.flips:
        arr = np.flip(arr, axis=grid.flips)
    classes = lut[np.clip(arr, 0, len(lut) - 1).astype(np.int64)]
    t = torch.from_numpy(np.ascontiguousarray(classes.astype(np.uint8)))
    if tuple(t.shape) != tuple(grid.model_shape):
        t = F.interpolate(t[None, None].float(), size=grid.model_shape, mode="nearest-exact")[0, 0]
        t = t.to(torch.uint8)
    return t.contiguous()


def label_lut(class_values: Sequence[int]) -> np.ndarray:
    """Label value -> class index table for the manifest's ``class_values()`` (index 0 = background)."""
    lut = np.zeros(max(int(v) for v in class_values) + 1 if class_values else 1, dtype=np.int64)
    for i, v in enumerate(class_values):
        if i:
            lut[int(v)] = i
    return lut


def load_labeled(store, case_ids: list[str], manifest, emit=None) -> list[CaseData]:
    """Read and preprocess labeled cases; a case that cannot be read is a ``corrupt_case`` error."""
    lut = label_lut(manifest.class_values())
    out = []
    for n, cid in enumerate(case_ids):
        try:
            case = store.read_case(cid)
            image, grid = to_model_grid(case.image, manifest.preprocessing, torch.device("cpu"))
            mask = mask_to_model_grid(case.mask.array, grid, lut)
            if not torch.isfinite(image).all():
                raise ValueError("the preprocessed image holds NaN or infinite values")
            sha = sha256_file(store.image_path(cid))[:16] + sha256_file(store.mask_path(cid))[:16]
        except (ValueError, OSError, RuntimeError) as exc:
            raise TrainError(
                "corrupt_case", f"case {cid!r} cannot be used for training: {_line(exc)}"
            ) from exc
        undeclared = sorted(set(np.unique(case.mask.array).tolist()) - set(manifest.class_values()))
        if undeclared:
            log.warning(
                "case %s: label values %s are not model labels; trained as background", cid, undeclared
            )
        out.append(CaseData(cid, image, mask, sha, grid.model_spacing))
        if emit is not None:
            emit({"event": "phase", "phase": "loading", "done": n + 1, "total": len(case_ids)})
    return out


def load_unlabeled(store, scan_ids: list[str], manifest) -> list[CaseData]:
    """Read and preprocess unlabeled scans; one that cannot be read is skipped with a warning."""
    out = []
    for sid in scan_ids:
        try:
            vol = store.read_unlabeled(sid)
            image, grid = to_model_grid(vol, manifest.preprocessing, torch.device("cpu"))
            sha = sha256_file(store.unlabeled_path(sid))[:32]
        except (ValueError, OSError, RuntimeError) as exc:
            log.warning("unlabeled scan %s skipped: %s", sid, _line(exc))
            continue
        out.append(CaseData(sid, image, None, sha, grid.model_spacing))
    return out


def _line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# ------------------------------------------------------------------------------------------ sampling
@dataclass
class SamplerSpec:
    """How samples are cut: ``kind`` ``"2.5d"`` or ``"3d"``, ``in_slices`` (2.5D), ``size`` the crop
    ``(H, W)`` or patch ``(D, H, W)``, ``foreground_fraction`` as in :class:`TrainConfig`."""

    kind: str
    in_slices: int
    size: tuple[int, ...]
    foreground_fraction: float


def _origin(center: int, size: int, extent: int) -> int:
    """First index of a window of ``size`` around ``center`` inside ``[0, extent)`` (0 if it does not fit)."""
    return int(min(max(center - size // 2, 0), max(extent - size, 0)))


def _pad_to(t: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad the last ``len(size)`` dims of ``t`` at their end up to ``size``."""
    pads: list[int] = []
    for have, want in zip(reversed(t.shape[-len(size) :]), reversed(list(size)), strict=True):
        pads += [0, max(0, int(want) - int(have))]
    return F.pad(t, pads) if any(pads) else t


class Sampler:
    """Cuts labeled and unlabeled samples from cases on the model grid.

    Args:
        labeled, unlabeled: the cases (:class:`CaseData`).
        spec: :class:`SamplerSpec`.
    """

    def __init__(self, labeled: list[CaseData], unlabeled: list[CaseData], spec: SamplerSpec):
        self.labeled = labeled
        self.unlabeled = unlabeled
        self.spec = spec
        # Structure voxel coordinates per case, (N, 3) int32 (small: the structure is a small part).
        self.fg = [np.argwhere(c.mask.numpy() > 0).astype(np.int32) for c in labeled]

    def _center(self, rng: np.random.Generator, case: CaseData, fg: np.ndarray | None) -> tuple[int, ...]:
        shape = case.shape
        if fg is not None and len(fg):
            z, y, x = (int(v) for v in fg[rng.integers(len(fg))])
            s = self.spec.size
            jy, jx = (int(rng.integers(-(n // 4), n // 4 + 1)) for n in s[-2:])
            jz = int(rng.integers(-(s[0] // 4), s[0] // 4 + 1)) if self.spec.kind == "3d" else 0
            return (
                min(max(z + jz, 0), shape[0] - 1),
                min(max(y + jy, 0), shape[1] - 1),
                min(max(x + jx, 0), shape[2] - 1),
            )
        return tuple(int(rng.integers(n)) for n in shape)

    def cut(self, case: CaseData, center: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor | None, tuple]:
        """Sample around ``center``: (input, label or None, origin ``(z, y0, x0)``).

        2.5D input ``(in_slices, H, W)`` (edge slices repeat, as in inference), label ``(H, W)``;
        3D input ``(1, D, H, W)``, label ``(D, H, W)``.
        """
        zc, yc, xc = center
        shape = case.shape
        if self.spec.kind == "2.5d":
            h, w = self.spec.size
            y0, x0 = _origin(yc, h, shape[1]), _origin(xc, w, shape[2])
            r = self.spec.in_slices // 2
            zs = torch.arange(zc - r, zc + r + 1).clamp_(0, shape[0] - 1)
            img = _pad_to(case.image[zs, y0 : y0 + h, x0 : x0 + w], (h, w))
            lab = None if case.mask is None else _pad_to(case.mask[zc, y0 : y0 + h, x0 : x0 + w], (h, w))
            return img, lab, (int(zc), y0, x0)
        d, h, w = self.spec.size
        z0, y0, x0 = _origin(zc, d, shape[0]), _origin(yc, h, shape[1]), _origin(xc, w, shape[2])
        img = _pad_to(case.image[z0 : z0 + d, y0 : y0 + h, x0 : x0 + w], (d, h, w))[None]
        lab = (
            None
            if case.mask is None
            else _pad_to(case.mask[z0 : z0 + d, y0 : y0 + h, x0 : x0 + w], (d, h, w))
        )
        return img, lab, (z0, y0, x0)

    def labeled_batch(self, rng: np.random.Generator, n: int, case_pool: Sequence[int] | None = None):
        """``n`` labeled samples: (x ``(n, ...)`` float32, y ``(n, ...)`` int64, index list)."""
        pool = list(case_pool) if case_pool is not None else list(range(len(self.labeled)))
        xs, ys, idx = [], [], []
        for _ in range(n):
            i = pool[int(rng.integers(len(pool)))]
            use_fg = rng.random() < self.spec.foreground_fraction
            c = self._center(rng, self.labeled[i], self.fg[i] if use_fg else None)
            img, lab, origin = self.cut(self.labeled[i], c)
            xs.append(img)
            ys.append(lab)
            idx.append((i, origin))
        return torch.stack(xs).float(), torch.stack(ys).long(), idx

    def unlabeled_batch(self, rng: np.random.Generator, n: int, case_pool: Sequence[int] | None = None):
        """``n`` unlabeled samples (uniform): (xu, index list); ``(None, [])`` without unlabeled scans."""
        pool = list(case_pool) if case_pool is not None else list(range(len(self.unlabeled)))
        if not pool:
            return None, []
        xs, idx = [], []
        for _ in range(n):
            i = pool[int(rng.integers(len(pool)))]
            img, _, origin = self.cut(self.unlabeled[i], self._center(rng, self.unlabeled[i], None))
            xs.append(img)
            idx.append((i, origin))
        return torch.stack(xs).float(), idx


# -------------------------------------------------------------------------------------- augmentation
class Augmenter:
    """MONAI augmentation of a batch, sample by sample, with randomness from the caller's generator.

    Spatial (applied identically to image and label): flips of the in-plane axes, a small in-plane
    rotation (+-15 degrees) and zoom (+-15 %); intensity (image only): scale and shift by up to 10 %
    and 5 %, Gaussian noise (std 0.02). The 3D variant rotates in plane only (slices are often thicker
    than pixels).
    """

    def __init__(self, kind: str):
        from monai import transforms as T

        self.kind = kind
        keys = ["image", "label"]
        rot = 0.26  # radians, ~15 degrees
        self.spatial = T.Compose(
            [
                T.RandFlipd(keys, prob=0.5, spatial_axis=-1),
                T.RandFlipd(keys, prob=0.5, spatial_axis=-2),
                T.RandAffined(
                    keys,
                    prob=0.5,
                    rotate_range=(rot,) if kind == "2.5d" else (rot, 0.0, 0.0),
                    scale_range=(0.15, 0.15) if kind == "2.5d" else (0.0, 0.15, 0.15),
                    mode=("bilinear", "nearest"),
                    padding_mode="zeros",
                ),
            ]
        )
        self.intensity = T.Compose(
            [
                T.RandScaleIntensity(factors=0.1, prob=0.5),
                T.RandShiftIntensity(offsets=0.05, prob=0.5),
                T.RandGaussianNoise(prob=0.3, std=0.02),
            ]
        )

    def _seed(self, rng: np.random.Generator) -> None:
        seed = int(rng.integers(2**31 - 1))
        self.spatial.set_random_state(seed=seed)
        self.intensity.set_random_state(seed=seed + 1)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor | None, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` ``(B, C, *S)`` and ``y`` ``(B, *S)`` (or ``None``) -> augmented copies (same shapes)."""
        self._seed(rng)
        xs, ys = [], []
        for b in range(x.shape[0]):
            lab = (y[b][None].float() if y is not None else torch.zeros_like(x[b][:1])).contiguous()
            d = self.spatial({"image": x[b], "label": lab})
            img = self.intensity(d["image"])
            xs.append(torch.as_tensor(img).float())
            ys.append(torch.as_tensor(d["label"])[0].round().long())
        xo = torch.stack([t.as_tensor() if hasattr(t, "as_tensor") else t for t in xs])
        yo = (
            torch.stack([t.as_tensor() if hasattr(t, "as_tensor") else t for t in ys])
            if y is not None
            else None
        )
        return xo.contiguous(), yo


def iteration_rng(seed: int, rank: int, iteration: int) -> np.random.Generator:
    """The generator of every random choice of ``iteration`` on ``rank`` (resume-exact)."""
    return rng_for(seed, rank, iteration)
