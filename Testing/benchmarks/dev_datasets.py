"""Multi-subject development datasets built from the real scans in ``shared/data`` (MSD layout).

Brain tasks take real anatomy from the Colin27 T1 MRI (``ch2.nii.gz``) and its AAL labels
(``aal_dev.nii.gz``) and make many "subjects" of it. Each case is drawn independently from its own seed:

1. a random affine about the structure (rotation up to ``ROT_DEG`` per axis, scale 1 +- ``SCALE`` per
   axis, shift up to ``SHIFT_MM``) plus a smooth random displacement field (Gaussian control points on a
   ``CTRL_MM`` grid, spline-upsampled, ``ELASTIC_MM`` standard deviation): new shapes, not copies;
2. image (trilinear) and label (trilinear on the binary mask, threshold 0.5) are sampled on a 1 mm box
   around the structure with a margin (the box size per task is in :data:`TASKS`);
3. slice thickness: a slice profile (box average of ``t`` mm along Z) then one slice every ``t`` mm,
   ``t`` drawn from ``THICKNESS_MM``; the label is averaged the same way (partial volume) and thresholded;
4. intensity: a random gamma, a smooth multiplicative bias field (+- ``BIAS``), Rician noise of
   ``NOISE`` x the 99th percentile, stored as int16.

Tasks (one foreground label each; left + right together):

======== ========================== ================ =============================================
task     AAL values                 box (X, Y, Z) mm  contrast inside vs 3-voxel ring (raw ch2)
======== ========================== ================ =============================================
caudate  71, 72 (Caudate_L/R)       80 x 96 x 64     81 +- 21 vs 84 +- 33 (bounded by ventricles)
thalamus 77, 78 (Thalamus_L/R)      80 x 64 x 48     94 +- 12 vs 84 +- 27
pallidum 75, 76 (Pallidum_L/R)      96 x 64 x 48     103 +- 5 vs 102 +- 7 (HARD: low contrast)
amygdala 41, 42 (Amygdala_L/R)      96 x 64 x 48     84 +- 13 vs 83 +- 18 (HARD: low contrast)
======== ========================== ================ =============================================

(Z extent before thickness; with ``t`` = 2 mm a 48 mm box has 24 slices.) Hippocampus and putamen are not
in ``aal_dev`` (kept aside for evaluation) and are not built here.

Lesion tasks ``lung_solid`` and ``lung_subsolid`` (HARD: ground-glass, low contrast) put synthetic lesions
into the real lung1 chest CT; how is in ``dev_lesions.py``.

Whole scans (``--whole``, ``build(..., whole=True)``): a box around the structure flatters a model, users
load whole scans. The whole-scan variant builds the same subjects (same seeds: same affine, displacement,
thickness, gamma, bias and noise level) on the whole field of view, in ``OUT_DIR/<task>_whole`` (cases
``<task>_whole_000``, ...; ``dataset.json`` says ``"whole": true``), so both variants can sit side by side:

- brain tasks: the Colin27 head, 181 x 217 mm in-plane at 1 mm and its 181 mm along Z at the case's
  thickness (:func:`make_whole_case`);
- lung tasks: lung1's 512 x 512 in-plane grid at its own 0.57 mm and its Z extent (235 mm) at the case's
  thickness (:func:`dev_lesions.make_whole_lesion_case`).

The grid is placed (under half a voxel in-plane, under one slice along Z from the source's first slice) so
that the cropped case's slices are slices of the whole one; for brain tasks every cropped voxel is a whole
voxel with the same value (the crop's first and last slices aside, where its slice profile stops at its
edge). The displacement (and bias) field drawn on the box reaches beyond it by its edge values, fading out
over a Gaussian of ``CTRL_MM`` (bias: 32 mm, into a bias field drawn for the whole head); noise outside the
box is new at the same level; what the rotation and scale bring in from beyond the source is background
(0, or -1000 HU).

Usage::

    python Testing/benchmarks/dev_datasets.py pallidum|lung_subsolid|... OUT_DIR [--cases 24] [--seed 0] [--whole] [--data DIR]
    semisam store import OUT_DIR/pallidum STORE

or from Python: ``build("pallidum", out_dir, n_cases=24, seed=0) -> out_dir/pallidum``.
The same (task, n_cases, seed, whole) gives the same files. Per case, on a shared 2-core AMD EPYC with
``OMP_NUM_THREADS=1``, after the source scans are read (atlas 0.5 s, lung1 6 s): cropped 0.25-0.5 s, 0.2-
0.4 MB; whole brain 2.3-3.5 s, about 5 MB, 0.5 GB of memory at most; whole lung 6.5-9 s, about 33 MB (its
1 GB peak is reading lung1, as for the cropped task).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

if str(Path(__file__).resolve().parent) not in sys.path:  # dev_lesions beside this file
    sys.path.append(str(Path(__file__).resolve().parent))
import dev_lesions  # noqa: E402
from dev_synth import require_files, sample_separable, smooth_field, taper, thick_slices  # noqa: E402

log = logging.getLogger("dev_datasets")

#: Default data folder: ``<repo>/../shared/data``.
DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

ROT_DEG = 10.0
SCALE = 0.08
SHIFT_MM = 6.0
CTRL_MM = 16.0
ELASTIC_MM = 1.5
THICKNESS_MM = (1.0, 1.5, 2.0, 2.5, 3.0)
GAMMA = (0.8, 1.25)
BIAS = 0.2
NOISE = (0.01, 0.04)


@dataclass(frozen=True)
class Task:
    """One development task: which atlas values make the label, and the box size (X, Y, Z) in mm."""

    name: str
    values: tuple[int, ...]
    box_mm: tuple[int, int, int]
    hard: bool = False
    note: str = ""


TASKS: dict[str, Task] = {
    "caudate": Task("caudate", (71, 72), (80, 96, 64), note="bounded by the lateral ventricles"),
    "thalamus": Task("thalamus", (77, 78), (80, 64, 48)),
    "pallidum": Task("pallidum", (75, 76), (96, 64, 48), hard=True, note="low contrast to putamen/capsule"),
    "amygdala": Task(
        "amygdala", (41, 42), (96, 64, 48), hard=True, note="low contrast to hippocampus/cortex"
    ),
}


#: Every task this script builds: the brain ones above and the lung-lesion ones of ``dev_lesions``.
ALL_TASKS: tuple[str, ...] = (*TASKS, *dev_lesions.LESION_TASKS)


def _rng(seed: int, task: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{task}:{seed}:{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _rotation(angles_rad: np.ndarray) -> np.ndarray:
    a, b, c = angles_rad
    rz = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


@functools.lru_cache(maxsize=2)
def _load(data: Path) -> tuple[np.ndarray, np.ndarray, sitk.Image]:
    """The atlas T1 (float32) and labels (Z, Y, X), read once per folder (callers do not modify them)."""
    t1_path, aal_path = data / "ch2.nii.gz", data / "aal_dev.nii.gz"
    require_files(t1_path, aal_path, what="the Colin27 T1 and AAL atlas")
    ref = sitk.ReadImage(str(t1_path))
    t1 = sitk.GetArrayFromImage(ref).astype(np.float32)
    aal = sitk.GetArrayFromImage(sitk.ReadImage(str(aal_path)))
    if t1.shape != aal.shape:
        raise ValueError(f"{aal_path}: shape {aal.shape} differs from {t1_path} {t1.shape}")
    return t1, aal, ref


@dataclass
class _Draw:
    """Everything one brain case drew from its seed, kept so the whole-scan variant can reuse it."""

    image: np.ndarray  # int16 (Z, Y, X), the cropped case
    label: np.ndarray  # uint8
    thickness: float
    start: np.ndarray  # (Z, Y, X) atlas index of the crop's first voxel (before deformation)
    centre: np.ndarray  # atlas index the affine turns about
    mat: np.ndarray  # rotation @ scale
    disp: list[np.ndarray]  # displacement (atlas voxels) per axis on the 1 mm crop, float32
    top: float  # 99.5th percentile the image is divided by
    gamma: float
    log_bias: np.ndarray  # on the crop's thick slices
    sigma: float  # noise level
    noise: tuple[np.ndarray, np.ndarray]  # Rician noise (real, imaginary) on the crop's thick slices


def _draw(t1: np.ndarray, mask: np.ndarray, task: Task, rng: np.random.Generator) -> _Draw:
    zz, yy, xx = np.nonzero(mask)
    centre = np.array([zz.mean(), yy.mean(), xx.mean()])
    bx, by, bz = task.box_mm
    shape = (bz, by, bx)
    centre = centre + rng.uniform(-SHIFT_MM, SHIFT_MM, size=3)
    start = centre - (np.array(shape) - 1) / 2.0
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    offs = grid - ((np.array(shape, dtype=np.float32) - 1) / 2.0)[:, None, None, None]
    mat = _rotation(np.deg2rad(rng.uniform(-ROT_DEG, ROT_DEG, size=3))) @ np.diag(
        1.0 + rng.uniform(-SCALE, SCALE, size=3)
    )
    coords = np.einsum("ij,j...->i...", mat.astype(np.float32), offs)
    coords += centre.astype(np.float32)[:, None, None, None]
    disp = []
    for ax in range(3):
        disp.append(smooth_field(rng, shape, CTRL_MM, ELASTIC_MM).astype(np.float32))
        coords[ax] += disp[-1]
    img = ndi.map_coordinates(t1, coords, order=1, mode="constant", cval=0.0)
    lab = ndi.map_coordinates(mask.astype(np.float32), coords, order=1, mode="constant", cval=0.0)

    t = float(rng.choice(THICKNESS_MM))
    img, lab = thick_slices(img, lab, t)
    label = (lab >= 0.5).astype(np.uint8)

    # intensity: gamma, smooth bias, Rician noise
    top = float(np.percentile(img, 99.5)) or 1.0
    gamma = rng.uniform(*GAMMA)
    img = np.clip(img / top, 0.0, None) ** gamma
    log_bias = smooth_field(rng, img.shape, 32.0, BIAS)
    img = img * np.exp(log_bias)
    sigma = rng.uniform(*NOISE)
    noise = (rng.normal(0, sigma, img.shape), rng.normal(0, sigma, img.shape))
    img = np.sqrt((img + noise[0]) ** 2 + noise[1] ** 2)
    image = np.clip(img * 1000.0, 0, 32767).astype(np.int16)
    return _Draw(image, label, t, start, centre, mat, disp, top, gamma, log_bias, sigma, noise)


def make_case(
    t1: np.ndarray, mask: np.ndarray, task: Task, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """One synthetic subject: ``(image int16 (Z, Y, X), label uint8 (Z, Y, X), thickness mm, box start)``.

    ``t1``/``mask``: the atlas grid (Z, Y, X) at 1 mm. ``box start`` is the (Z, Y, X) index in the atlas of
    the output's first voxel centre (before deformation), for the output's origin.
    """
    d = _draw(t1, mask, task, rng)
    return d.image, d.label, d.thickness, d.start


#: Voxels (before slice thickness) one step of a whole-scan case samples at once: bounds its memory.
SLAB_VOXELS = 2_000_000


def make_whole_case(
    t1: np.ndarray, mask: np.ndarray, task: Task, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """The subject :func:`make_case` draws from ``rng``, sampled on the whole atlas field of view.

    Returns ``(image, label, thickness, origin)`` like :func:`make_case`; ``origin`` is the atlas index of
    the first voxel. The grid is the atlas's (1 mm in-plane, ``thickness`` along Z) moved by under half a
    voxel in-plane and under one slice along Z so that every voxel of the cropped case is a voxel of this one,
    with the same value there (the running mean of the slice profile aside, on the crop's first and last
    slices). The crop's displacement field reaches beyond its box by its edge values, fading out over
    ``CTRL_MM`` (Gaussian); its bias field likewise, blended into a bias field of the same strength drawn
    for the whole scan; the noise outside the box is new (same level).
    """
    d = _draw(t1, mask, task, rng)
    extra = np.random.default_rng(int(rng.integers(2**63)))  # drawn after the case's own numbers
    box = np.array(d.disp[0].shape)
    big = np.array(t1.shape)
    k = np.round(d.start).astype(int)  # crop voxel p is whole voxel p + k
    t = d.thickness
    z0 = float(k[0] % t)
    n = int((big[0] - 1 - z0) // t) + 1
    m = int(round((k[0] - z0) / t))  # crop slice j is whole slice j + m
    half = (box.astype(np.float32) - 1) / 2.0
    p = [np.arange(big[a], dtype=np.float32) - k[a] for a in range(3)]  # crop index of each whole voxel
    w = [taper(p[a], 0.0, box[a] - 1.0, CTRL_MM) for a in range(3)]
    img = np.empty((n, big[1], big[2]), np.float32)
    lab = np.empty_like(img)
    maskf = mask.astype(np.float32)
    rows = max(1, SLAB_VOXELS // int(big[0] * big[2]))
    for y0 in range(0, int(big[1]), rows):
        ys = slice(y0, min(int(big[1]), y0 + rows))
        axes = (p[0] - half[0], p[1][ys] - half[1], p[2] - half[2])
        coords = np.einsum(
            "ij,j...->i...", d.mat.astype(np.float32), np.stack(np.meshgrid(*axes, indexing="ij"))
        )
        coords += d.centre.astype(np.float32)[:, None, None, None]
        weight = w[0][:, None, None] * w[1][ys][None, :, None] * w[2][None, None, :]
        for ax in range(3):
            coords[ax] += weight * sample_separable(d.disp[ax], (p[0], p[1][ys], p[2]))
        slab_img = ndi.map_coordinates(t1, coords, order=1, mode="constant", cval=0.0)
        slab_lab = ndi.map_coordinates(maskf, coords, order=1, mode="constant", cval=0.0)
        del coords
        img[:, ys], lab[:, ys] = thick_slices(slab_img, slab_lab, t, z0, n)
    label = (lab >= 0.5).astype(np.uint8)
    del lab, maskf

    # intensity, slab by slab: the crop's gamma and scale; its bias inside the box, fading into one drawn for
    # the whole scan; its noise inside the box, new noise of its level outside
    q = (np.arange(n) - m, np.arange(big[1]) - k[1], np.arange(big[2]) - k[2])  # crop index, thick grid
    nb = d.log_bias.shape
    wz = taper(q[0] * t, 0.0, (nb[0] - 1) * t, 32.0)[:, None, None]
    wy = taper(q[1], 0.0, nb[1] - 1.0, 32.0)[None, :, None]
    wx = taper(q[2], 0.0, nb[2] - 1.0, 32.0)[None, None, :]
    whole_bias = smooth_field(extra, img.shape, 32.0, BIAS)
    offset = (m, int(k[1]), int(k[2]))  # crop thick voxel j is whole voxel j + offset
    span = [(max(0, o), min(img.shape[a], o + nb[a])) for a, o in enumerate(offset)]  # the box, whole index
    image = np.empty(img.shape, np.int16)
    rows = max(1, SLAB_VOXELS // int(n * big[2]))
    for y0 in range(0, int(big[1]), rows):
        ys = slice(y0, min(int(big[1]), y0 + rows))
        x = np.clip(img[:, ys] / d.top, 0.0, None) ** d.gamma
        weight = wz * wy[:, ys] * wx
        log_bias = whole_bias[:, ys] * (1.0 - weight) + weight * sample_separable(
            d.log_bias, (q[0], q[1][ys], q[2])
        )
        x = x * np.exp(log_bias)
        del log_bias, weight
        # the box's part of this slab, whole-scan and crop index
        here = [span[0], (max(span[1][0], ys.start), min(span[1][1], ys.stop)), span[2]]
        inside = all(lo < hi for lo, hi in here)
        at = (slice(*here[0]), slice(here[1][0] - ys.start, here[1][1] - ys.start), slice(*here[2]))
        of = tuple(slice(lo - o, hi - o) for (lo, hi), o in zip(here, offset, strict=True))
        noise = []
        for part in d.noise:
            noise.append(extra.normal(0, d.sigma, x.shape))
            if inside:
                noise[-1][at] = part[of]
        x = np.sqrt((x + noise[0]) ** 2 + noise[1] ** 2)
        image[:, ys] = np.clip(x * 1000.0, 0, 32767).astype(np.int16)
    origin = d.start - k + np.array([z0, 0.0, 0.0])
    return image, label, t, origin


def _to_image(
    arr: np.ndarray,
    ref: sitk.Image,
    start_zyx: np.ndarray,
    thickness: float,
    spacing_xy: tuple[float, float] = (1.0, 1.0),
) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetDirection(ref.GetDirection())
    img.SetSpacing((*spacing_xy, thickness))
    idx = [float(start_zyx[2]), float(start_zyx[1]), float(start_zyx[0])]
    img.SetOrigin(ref.TransformContinuousIndexToPhysicalPoint(idx))
    return img


def build(
    task: str,
    out_dir: str | Path,
    n_cases: int = 24,
    seed: int = 0,
    data: str | Path | None = None,
    whole: bool = False,
) -> Path:
    """Write ``out_dir/<task>/`` (imagesTr/, labelsTr/, dataset.json, MSD layout) and return that folder.

    ``whole``: the same subjects on the whole scan (:func:`make_whole_case`,
    :func:`dev_lesions.make_whole_lesion_case`) in ``out_dir/<task>_whole/``.

    Raises:
        KeyError: unknown task (the known ones are :data:`ALL_TASKS`).
        FileExistsError: the task folder exists and is not empty.
        FileNotFoundError: the task's source scans (atlas, or lung1 CT) are not in ``data``.
    """
    if task not in ALL_TASKS:
        raise KeyError(f"unknown task {task!r}; choose one of {', '.join(ALL_TASKS)}")
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    name = f"{task}_whole" if whole else task
    dest = Path(out_dir) / name
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest}: exists and is not empty; choose another folder")
    t0 = time.perf_counter()
    folder = (Path(data) if data else DEFAULT_DATA).resolve()
    if task in dev_lesions.LESION_TASKS:
        spec = dev_lesions.LESION_TASKS[task]
        ct, dist, spacing, ref = dev_lesions.load_lung(folder)

        make = dev_lesions.make_whole_lesion_case if whole else dev_lesions.make_lesion_case

        def draw(rng: np.random.Generator):
            return make(ct, dist, spacing, spec, rng)

        modality, extra = "CT", {"lesion_hu": list(spec.hu)}
        spacing_xy = (spacing[2], spacing[1]) if whole else (1.0, 1.0)
        fov = f"the lung1 chest CT: {ct.shape[2]} x {ct.shape[1]} x {ct.shape[0]} voxels"
    else:
        spec = TASKS[task]
        t1, aal, ref = _load(folder)
        mask = np.isin(aal, spec.values)
        if not mask.any():
            raise ValueError(f"task {task}: AAL values {spec.values} are not in the atlas")

        make = make_whole_case if whole else make_case

        def draw(rng: np.random.Generator):
            return make(t1, mask, spec, rng)

        modality, extra = "MR", {"atlas_values": list(spec.values), "box_mm_xyz": list(spec.box_mm)}
        spacing_xy = (1.0, 1.0)
        fov = f"the Colin27 head: {t1.shape[2]} x {t1.shape[1]} x {t1.shape[0]} mm"
    (dest / "imagesTr").mkdir(parents=True, exist_ok=True)
    (dest / "labelsTr").mkdir(parents=True, exist_ok=True)
    training, cases = [], {}
    for i in range(n_cases):
        case_id = f"{name}_{i:03d}"
        image, label, thick, start = draw(_rng(seed, task, i))
        sitk.WriteImage(
            _to_image(image, ref, start, thick, spacing_xy),
            str(dest / "imagesTr" / f"{case_id}.nii.gz"),
            True,
        )
        sitk.WriteImage(
            _to_image(label, ref, start, thick, spacing_xy),
            str(dest / "labelsTr" / f"{case_id}.nii.gz"),
            True,
        )
        training.append({"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"})
        cases[case_id] = {
            "shape_zyx": list(image.shape),
            "thickness_mm": thick,
            "fg_voxels": int(label.sum()),
        }
    if whole:  # only the whole-scan variant says so: the cropped task's dataset.json is as it was
        extra["grid"] = f"whole scan: {fov}; folder {task} (same seed) holds the same subjects cropped"
    meta = {
        "name": f"dev_{name}",
        "description": f"{task}, {n_cases} synthetic subjects (seed {seed})"
        + (", whole scans" if whole else "")
        + f"; {spec.note}",
        "tensorImageSize": "3D",
        "modality": {"0": modality},
        "labels": {"0": "background", "1": task},
        "numTraining": n_cases,
        "numTest": 0,
        "training": training,
        "test": [],
        "dev_dataset": {
            "task": task,
            **({"whole": True} if whole else {}),
            "seed": seed,
            "hard": spec.hard,
            **extra,
            "cases": cases,
        },
    }
    (dest / "dataset.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    log.info("built %s: %d cases in %.1f s -> %s", name, n_cases, time.perf_counter() - t0, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=[*ALL_TASKS, "all"])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--cases", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--whole",
        action="store_true",
        help="the same subjects on the whole scan (head or chest) instead of a box around the structure; "
        "the folder is TASK_whole",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"folder with ch2.nii.gz + aal_dev.nii.gz (default {DEFAULT_DATA})",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tasks = list(ALL_TASKS) if args.task == "all" else [args.task]
    out = {}
    for t in tasks:
        t0 = time.perf_counter()
        path = build(t, args.out_dir, args.cases, args.seed, args.data, whole=args.whole)
        out[t] = {"path": str(path), "cases": args.cases, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
