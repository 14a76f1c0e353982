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

Usage::

    python Testing/benchmarks/dev_datasets.py pallidum|lung_subsolid|... OUT_DIR [--cases 24] [--seed 0] [--data DIR]
    semisam store import OUT_DIR/pallidum STORE

or from Python: ``build("pallidum", out_dir, n_cases=24, seed=0) -> out_dir/pallidum``.
A task takes about 0.3 s per case here (2 cores); the same (task, n_cases, seed) gives the same files.
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
from dev_synth import require_files, smooth_field, thick_slices  # noqa: E402

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


def make_case(
    t1: np.ndarray, mask: np.ndarray, task: Task, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """One synthetic subject: ``(image int16 (Z, Y, X), label uint8 (Z, Y, X), thickness mm, box start)``.

    ``t1``/``mask``: the atlas grid (Z, Y, X) at 1 mm. ``box start`` is the (Z, Y, X) index in the atlas of
    the output's first voxel centre (before deformation), for the output's origin.
    """
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
    for ax in range(3):
        coords[ax] += smooth_field(rng, shape, CTRL_MM, ELASTIC_MM).astype(np.float32)
    img = ndi.map_coordinates(t1, coords, order=1, mode="constant", cval=0.0)
    lab = ndi.map_coordinates(mask.astype(np.float32), coords, order=1, mode="constant", cval=0.0)

    t = float(rng.choice(THICKNESS_MM))
    img, lab = thick_slices(img, lab, t)
    label = (lab >= 0.5).astype(np.uint8)

    # intensity: gamma, smooth bias, Rician noise
    top = float(np.percentile(img, 99.5)) or 1.0
    img = np.clip(img / top, 0.0, None) ** rng.uniform(*GAMMA)
    bias_shape = img.shape
    bias = np.exp(smooth_field(rng, bias_shape, 32.0, BIAS))
    img = img * bias
    sigma = rng.uniform(*NOISE)
    img = np.sqrt((img + rng.normal(0, sigma, img.shape)) ** 2 + rng.normal(0, sigma, img.shape) ** 2)
    image = np.clip(img * 1000.0, 0, 32767).astype(np.int16)
    return image, label, t, start


def _to_image(arr: np.ndarray, ref: sitk.Image, start_zyx: np.ndarray, thickness: float) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetDirection(ref.GetDirection())
    img.SetSpacing((1.0, 1.0, thickness))
    idx = [float(start_zyx[2]), float(start_zyx[1]), float(start_zyx[0])]
    img.SetOrigin(ref.TransformContinuousIndexToPhysicalPoint(idx))
    return img


def build(
    task: str, out_dir: str | Path, n_cases: int = 24, seed: int = 0, data: str | Path | None = None
) -> Path:
    """Write ``out_dir/<task>/`` (imagesTr/, labelsTr/, dataset.json, MSD layout) and return that folder.

    Raises:
        KeyError: unknown task (the known ones are :data:`ALL_TASKS`).
        FileExistsError: the task folder exists and is not empty.
        FileNotFoundError: the task's source scans (atlas, or lung1 CT) are not in ``data``.
    """
    if task not in ALL_TASKS:
        raise KeyError(f"unknown task {task!r}; choose one of {', '.join(ALL_TASKS)}")
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    dest = Path(out_dir) / task
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest}: exists and is not empty; choose another folder")
    t0 = time.perf_counter()
    folder = (Path(data) if data else DEFAULT_DATA).resolve()
    if task in dev_lesions.LESION_TASKS:
        spec = dev_lesions.LESION_TASKS[task]
        ct, dist, spacing, ref = dev_lesions.load_lung(folder)

        def draw(rng: np.random.Generator):
            return dev_lesions.make_lesion_case(ct, dist, spacing, spec, rng)

        modality, extra = "CT", {"lesion_hu": list(spec.hu)}
    else:
        spec = TASKS[task]
        t1, aal, ref = _load(folder)
        mask = np.isin(aal, spec.values)
        if not mask.any():
            raise ValueError(f"task {task}: AAL values {spec.values} are not in the atlas")

        def draw(rng: np.random.Generator):
            return make_case(t1, mask, spec, rng)

        modality, extra = "MR", {"atlas_values": list(spec.values), "box_mm_xyz": list(spec.box_mm)}
    (dest / "imagesTr").mkdir(parents=True, exist_ok=True)
    (dest / "labelsTr").mkdir(parents=True, exist_ok=True)
    training, cases = [], {}
    for i in range(n_cases):
        case_id = f"{task}_{i:03d}"
        image, label, thick, start = draw(_rng(seed, task, i))
        sitk.WriteImage(
            _to_image(image, ref, start, thick), str(dest / "imagesTr" / f"{case_id}.nii.gz"), True
        )
        sitk.WriteImage(
            _to_image(label, ref, start, thick), str(dest / "labelsTr" / f"{case_id}.nii.gz"), True
        )
        training.append({"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"})
        cases[case_id] = {
            "shape_zyx": list(image.shape),
            "thickness_mm": thick,
            "fg_voxels": int(label.sum()),
        }
    meta = {
        "name": f"dev_{task}",
        "description": f"{task}, {n_cases} synthetic subjects (seed {seed}); {spec.note}",
        "tensorImageSize": "3D",
        "modality": {"0": modality},
        "labels": {"0": "background", "1": task},
        "numTraining": n_cases,
        "numTest": 0,
        "training": training,
        "test": [],
        "dev_dataset": {
            "task": task,
            "seed": seed,
            "hard": spec.hard,
            **extra,
            "cases": cases,
        },
    }
    (dest / "dataset.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    log.info("built %s: %d cases in %.1f s -> %s", task, n_cases, time.perf_counter() - t0, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=[*ALL_TASKS, "all"])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--cases", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
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
        path = build(t, args.out_dir, args.cases, args.seed, args.data)
        out[t] = {"path": str(path), "cases": args.cases, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
