"""Preprocessing recorded in a model's manifest, and its exact inverse back to the input grid.

Steps (all in voxel index space, so the way back is exact by construction):

1. **Orientation**: permute and flip the array so voxel axes point as the manifest's code says
   (``"LPS"``: i towards Left, j towards Posterior, k towards Superior; letters in the sense of NIfTI's
   axis codes). No interpolation: an oblique scan keeps its in-plane tilt, the model sees its slices.
2. **Spacing**: trilinear resampling (``align_corners=False``: voxel *edges* of the first and last voxel
   stay put) to ``round(n * spacing / target_spacing)`` voxels per axis; the actual spacing is
   ``n * spacing / n'`` (within half a voxel of the target over the whole field of view).
3. **Intensity**: CT clip to a window and scale to [0, 1]; MRI clip to percentiles of the scan and
   scale to [0, 1] (percentiles on a fixed stride subsample: deterministic and 50x cheaper).

:func:`to_input_grid` undoes 2 (nearest-exact for labels, trilinear for floats) then 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from semisam.scan.volume import Volume, check_grid_size

log = logging.getLogger(__name__)

_AXIS = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
#: At most this many voxels are sampled (fixed stride) to estimate MRI percentiles.
PERCENTILE_SAMPLES = 2_000_000


@dataclass(frozen=True)
class GridMap:
    """How the model grid relates to the input grid.

    Attributes:
        axes: ``np.transpose`` axes taking the input array ``(Z, Y, X)`` to the oriented array.
        flips: array axes (after transposing) that are reversed.
        oriented_shape: shape after orientation, before resampling.
        model_shape: shape of the model grid ``(Z', Y', X')``.
        model_spacing: actual spacing (i, j, k) of the model grid in mm.
    """

    axes: tuple[int, int, int]
    flips: tuple[int, ...]
    oriented_shape: tuple[int, int, int]
    model_shape: tuple[int, int, int]
    model_spacing: tuple[float, float, float]


def orientation_axes(direction: np.ndarray, code: str) -> tuple[tuple[int, int, int], tuple[int, ...]]:
    """Transpose axes and flipped axes that bring a ``(Z, Y, X)`` array with ``direction`` to ``code``.

    ``direction``: 3x3, columns = RAS unit vectors of voxel axes i, j, k. Each voxel axis is matched to
    the RAS axis it is closest to (largest cosine first, so a 45-degree tie still gives a permutation).
    """
    code = code.upper()
    if len(code) != 3 or {_AXIS[c][0] for c in code if c in _AXIS} != {0, 1, 2}:
        raise ValueError(f"orientation code must name each of R/L, A/P, S/I once, got {code!r}")
    d = np.abs(np.asarray(direction, dtype=float))
    ras_of: dict[int, int] = {}  # voxel axis -> RAS axis
    order = np.dstack(np.unravel_index(np.argsort(-d, axis=None), d.shape))[0]
    for ras, vox in order:
        if vox not in ras_of and ras not in ras_of.values():
            ras_of[int(vox)] = int(ras)
    vox_of = {ras: vox for vox, ras in ras_of.items()}
    axes = [0, 0, 0]
    flips = []
    for c_new, letter in enumerate(code):
        ras, sign = _AXIS[letter]
        c_old = vox_of[ras]
        axes[2 - c_new] = 2 - c_old  # voxel axis c is array axis 2 - c
        if np.sign(direction[ras, c_old]) != sign:
            flips.append(2 - c_new)
    return tuple(axes), tuple(sorted(flips))  # type: ignore[return-value]


def _resample(t: torch.Tensor, size: tuple[int, int, int], mode: str) -> torch.Tensor:
    """``(Z, Y, X)`` tensor -> ``size`` with ``mode`` (``trilinear`` or ``nearest-exact``)."""
    if tuple(t.shape) == tuple(size):
        return t
    kw = {"align_corners": False} if mode == "trilinear" else {}
    return F.interpolate(t[None, None], size=size, mode=mode, **kw)[0, 0]


def normalise_intensity(t: torch.Tensor, spec: dict) -> torch.Tensor:
    """Map a float tensor to [0, 1] in place according to ``preprocessing.intensity``."""
    mode = spec.get("mode")
    if mode == "ct":
        lo, hi = (float(v) for v in spec.get("window", (-1000.0, 1000.0)))
    elif mode == "percentile":
        flat = t.reshape(-1)
        step = max(1, flat.numel() // PERCENTILE_SAMPLES)
        sample = flat[::step].double().cpu().numpy()
        lo, hi = np.percentile(sample, [float(spec.get("lower", 0.5)), float(spec.get("upper", 99.5))])
    else:
        raise ValueError(f"unknown intensity normalisation mode {mode!r} (use 'ct' or 'percentile')")
    if not hi > lo:
        hi = lo + 1.0  # a constant scan: everything maps to 0 rather than dividing by zero
    return t.clamp_(lo, hi).sub_(lo).mul_(1.0 / (hi - lo))


def model_grid(volume: Volume, preprocessing: dict) -> GridMap:
    """The :class:`GridMap` ``volume`` gets under ``preprocessing``, from its header alone (no voxel is
    read or allocated: work bounds are checked on it before any compute).

    Raises:
        GridTooLargeError: the model grid would be absurdly large (see :func:`check_grid_size`).
    """
    axes, flips = orientation_axes(volume.direction, preprocessing.get("orientation", "LPS"))
    oriented_shape = tuple(int(volume.array.shape[a]) for a in axes)
    # spacing in array order (Z, Y, X) of the oriented array: array axis a is input array axis axes[a].
    sp_in = np.asarray(volume.spacing)[::-1]  # (sk, sj, si) = spacing per input array axis
    sp = sp_in[list(axes)]
    target = np.asarray(preprocessing["target_spacing"], dtype=float)[::-1]
    sizes = [n * s / t for n, s, t in zip(oriented_shape, sp, target, strict=True)]
    # Bounded before anything is allocated: a header spacing of 1e6 mm or a target of 0.01 mm would ask
    # for terabytes.
    check_grid_size(
        sizes,
        f"resampling the scan (spacing {tuple(volume.spacing)} mm) to the model's target_spacing "
        f"{tuple(preprocessing['target_spacing'])} mm",
        "check the voxel size in the scan's header, or the model manifest's preprocessing.target_spacing",
        volume.source,
        grown_from=oriented_shape,
    )
    model_shape = tuple(max(2, int(round(x))) for x in sizes)
    spacing = tuple(float(n * s / m) for n, s, m in zip(oriented_shape, sp, model_shape, strict=True))[::-1]
    return GridMap(axes, flips, oriented_shape, model_shape, spacing)  # type: ignore[arg-type]


def to_model_grid(
    volume: Volume, preprocessing: dict, device: torch.device, grid: GridMap | None = None
) -> tuple[torch.Tensor, GridMap]:
    """Input scan -> normalised float32 tensor ``(Z', Y', X')`` on ``device`` and the :class:`GridMap`
    (``grid``: :func:`model_grid`'s answer, when the caller has it already)."""
    grid = grid or model_grid(volume, preprocessing)
    arr = np.transpose(volume.array, grid.axes)
    if grid.flips:
        arr = np.flip(arr, axis=grid.flips)
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device=device, dtype=torch.float32)
    t = _resample(t, grid.model_shape, "trilinear").contiguous()
    normalise_intensity(t, preprocessing["intensity"])
    return t, grid


def to_input_grid(t: torch.Tensor, grid: GridMap, mode: str) -> np.ndarray:
    """Model-grid tensor ``(Z', Y', X')`` -> numpy array on the input grid ``(Z, Y, X)`` (exact inverse).

    ``mode``: ``"nearest-exact"`` for label maps (values are copied, never blended), ``"trilinear"``
    for continuous maps such as uncertainty.
    """
    t = _resample(t, grid.oriented_shape, mode)
    if grid.flips:
        t = torch.flip(t, dims=grid.flips)
    inverse = tuple(int(a) for a in np.argsort(grid.axes))
    return np.ascontiguousarray(t.permute(*inverse).cpu().numpy())
