"""Synthetic lung lesions in the real lung1 chest CT: multi-subject lesion tasks for development.

The background is real anatomy (``lung1_image.nrrd``, 512 x 512 x 48, 0.57 x 0.57 x 5 mm, in HU) with
its own nodule filled with lung parenchyma, so no unlabeled lesion is left in the scans. Each case is
drawn independently from its own seed:

1. a lesion centre inside the lungs, at least ``0.3 r`` from the lung's edge (so some lesions touch the
   pleura, a vessel or the mediastinum, as real ones do) and away from the real nodule's site;
2. a box of :data:`BOX_MM` around it (the lesion lies up to ``OFFSET_MM`` from the box centre), sampled
   trilinearly at 1 mm with a random in-plane rotation (up to ``ROT_DEG``), scale (1 +- ``SCALE``) and a
   smooth displacement field (``ELASTIC_MM``), so backgrounds differ between subjects;
3. the lesion: a sphere of radius ``r`` (``RADIUS_MM``) whose surface is lobulated by a smooth random
   field (``LOBULATION`` x r), soft-edged over ``EDGE_MM`` (partial volume), with its own HU level and a
   smooth texture; it is blended as ``max(background, lesion)`` so vessels brighter than the lesion stay
   visible through it (as in a ground-glass nodule);
4. slice thickness ``t`` from ``THICKNESS_MM`` (:func:`dev_synth.thick_slices`; the label is
   averaged the same way and thresholded at 0.5), Gaussian noise of ``NOISE_HU``; int16 HU.

Tasks (one foreground label each):

============= ============================ ============================================================
task          lesion level (HU)            what makes it hard
============= ============================ ============================================================
lung_solid    -80 .. +60 (solid nodule)    size 6-24 mm, anywhere in the lung, next to vessels
lung_subsolid -700 .. -450 (ground glass)  HARD: 150-400 HU above parenchyma (-850), vessels show
                                           through it, soft edges; low contrast in a -1000..1000 window
============= ============================ ============================================================

The background's Z resolution is lung1's 5 mm (interpolated): the lesion is sharper along Z than the
anatomy around it. Used through :func:`dev_datasets.build` (same command line, same MSD layout).

Whole scans (:func:`make_whole_lesion_case`, ``--whole``): the same subject on lung1's whole field of view,
its 512 x 512 pixels at 0.57 mm in-plane and its Z extent (235 mm) at the case's slice thickness; the
rotation and scale still turn about the lesion, so what they bring in from beyond the scan is air
(-1000 HU). About 7-9 s and 33 MB a case (a 512 x 512 x 79..157 int16 volume).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from dev_synth import require_files, sample_separable, smooth_field, taper, thick_axis0, thick_slices
from scipy import ndimage as ndi

BOX_MM = (80, 80, 48)  # (X, Y, Z)
OFFSET_MM = (16.0, 16.0, 6.0)  # (X, Y, Z): the lesion's largest distance from the box centre
ROT_DEG = 15.0
SCALE = 0.08
ELASTIC_MM = 1.5
RADIUS_MM = (3.0, 12.0)
LOBULATION = 0.25
EDGE_MM = 0.7
THICKNESS_MM = (1.5, 2.0, 2.5, 3.0)
NOISE_HU = (10.0, 40.0)
LUNG_HU = -850.0


@dataclass(frozen=True)
class LesionTask:
    """A lung-lesion task: the lesion's HU range; ``hard`` marks a low-contrast one."""

    name: str
    hu: tuple[float, float]
    hard: bool = False
    note: str = ""


LESION_TASKS: dict[str, LesionTask] = {
    "lung_solid": LesionTask("lung_solid", (-80.0, 60.0), note="solid nodules in real chest CT"),
    "lung_subsolid": LesionTask(
        "lung_subsolid",
        (-700.0, -450.0),
        hard=True,
        note="ground-glass nodules in real chest CT: 150-400 HU above the parenchyma",
    ),
}


@functools.lru_cache(maxsize=1)
def load_lung(data: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], sitk.Image]:
    """``(ct float32 (Z, Y, X) HU with the real nodule filled, distance to the lung's edge in mm (0 outside
    the lungs and near the real nodule), spacing (z, y, x) mm, the scan as read (its geometry places the
    cases))``, read once per folder (callers do not modify them)."""
    img_path, lab_path = data / "lung1_image.nrrd", data / "lung1_label.nrrd"
    require_files(img_path, lab_path, what="the lung1 chest CT")
    img = sitk.ReadImage(str(img_path))
    ct = sitk.GetArrayFromImage(img).astype(np.float32)
    nodule = sitk.GetArrayFromImage(sitk.ReadImage(str(lab_path))) > 0
    sx, sy, sz = img.GetSpacing()
    spacing = (float(sz), float(sy), float(sx))
    # fill the real nodule (dilated 3 mm in-plane) with parenchyma so it is not an unlabeled lesion
    grown = ndi.binary_dilation(nodule, structure=np.ones((1, 11, 11), bool))
    rng = np.random.default_rng(0)
    ct[grown] = LUNG_HU + rng.normal(0.0, 25.0, int(grown.sum())).astype(np.float32)
    # lungs: air inside the body (air components that do not touch the in-plane border)
    air = ct < -400.0
    comp, n = ndi.label(air)
    border = np.unique(np.concatenate([comp[:, 0], comp[:, -1], comp[:, :, 0], comp[:, :, -1]], axis=None))
    sizes = ndi.sum(air, comp, index=np.arange(1, n + 1))
    touching = set(border.tolist())
    # large ones only (lungs are millions of voxels here): small air pockets are not placed in
    keep = [i + 1 for i, s in enumerate(sizes) if (i + 1) not in touching and s > 20_000]
    lung = np.isin(comp, keep)
    # vessels inside the lungs count as lung for placement (a lesion may sit on them)
    lung = ndi.binary_closing(lung, structure=np.ones((1, 7, 7), bool)) & (ct < 200.0)
    dist = ndi.distance_transform_edt(lung, sampling=spacing).astype(np.float32)
    dist[ndi.binary_dilation(nodule, iterations=6)] = 0.0  # keep away from the real nodule's site
    return ct, dist, spacing, img


def _field(rng: np.random.Generator, shape: tuple[int, int, int], ctrl_mm: float, std: float) -> np.ndarray:
    return smooth_field(rng, shape, ctrl_mm, std).astype(np.float32)


@dataclass
class _Draw:
    """Everything one lesion case drew from its seed, kept so the whole-scan variant can reuse it."""

    image: np.ndarray  # int16 HU (Z, Y, X), the cropped case
    label: np.ndarray  # uint8
    thickness: float
    start: np.ndarray  # (Z, Y, X) continuous index in the CT of the crop's first voxel
    c_src: np.ndarray  # the lesion centre, CT voxel (Z, Y, X)
    centre_out: np.ndarray  # the lesion centre, crop voxel (1 mm)
    rot: np.ndarray  # in-plane rotation @ scale (Y, X)
    disp: list[np.ndarray]  # displacement (mm) per axis on the crop, float32
    radius: float
    lobulation: np.ndarray  # on the crop
    level: float
    texture: np.ndarray  # on the crop, around ``level``
    sigma: float  # noise (HU)


def _draw(
    ct: np.ndarray,
    dist: np.ndarray,
    spacing: tuple[float, float, float],
    task: LesionTask,
    rng: np.random.Generator,
) -> _Draw:
    bx, by, bz = BOX_MM
    shape = (bz, by, bx)
    for _ in range(100):
        r = float(rng.uniform(*RADIUS_MM))
        ok = np.argwhere(dist >= 0.3 * r + 1.0)
        if len(ok) == 0:
            raise ValueError("no lung voxel is deep enough for a lesion")
        c_src = ok[rng.integers(len(ok))].astype(np.float32)  # lesion centre, source voxel (z, y, x)
        off = np.array(
            [rng.uniform(-OFFSET_MM[2], OFFSET_MM[2]), *rng.uniform(-OFFSET_MM[0], OFFSET_MM[0], 2)]
        )
        centre_out = (np.array(shape, np.float32) - 1) / 2.0 + off.astype(np.float32)  # lesion, output voxel
        z0 = c_src[0] - centre_out[0] / spacing[0]
        z1 = c_src[0] + (shape[0] - 1 - centre_out[0]) / spacing[0]
        if z0 >= 0.0 and z1 <= ct.shape[0] - 1:
            break
    else:
        raise ValueError(f"no lesion box of {bz} mm fits between the scan's first and last slices")
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    rel = grid - centre_out[:, None, None, None]  # mm from the lesion centre (1 mm output voxels)
    a = np.deg2rad(rng.uniform(-ROT_DEG, ROT_DEG))
    s = 1.0 + rng.uniform(-SCALE, SCALE, size=2)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.diag(s)
    mm = np.empty_like(rel)
    mm[0] = rel[0]
    mm[1:] = np.einsum("ij,j...->i...", rot.astype(np.float32), rel[1:])
    disp = []
    for ax in range(3):
        disp.append(_field(rng, shape, 16.0, ELASTIC_MM))
        mm[ax] += disp[-1]
    src = mm / np.array(spacing, np.float32)[:, None, None, None] + c_src[:, None, None, None]
    bg = ndi.map_coordinates(ct, src, order=1, mode="constant", cval=-1000.0)

    # lesion: lobulated soft sphere with its own level and texture, blended as max(background, lesion)
    radius = np.sqrt((rel**2).sum(0))
    lobulation = _field(rng, shape, max(3.0, r), 1.0)
    level = float(rng.uniform(*task.hu))
    texture = _field(rng, shape, 3.0, 0.15 * abs(task.hu[1] - task.hu[0]))
    img, lab = _lesion(bg, radius, r, lobulation, level, texture)

    t = float(rng.choice(THICKNESS_MM))
    img, lab = thick_slices(img, lab, t)
    label = (lab >= 0.5).astype(np.uint8)
    sigma = rng.uniform(*NOISE_HU)
    img = img + rng.normal(0.0, sigma, img.shape)
    image = np.clip(np.round(img), -1024, 3071).astype(np.int16)
    start = c_src - centre_out / np.array(spacing, np.float32)
    return _Draw(image, label, t, start, c_src, centre_out, rot, disp, r, lobulation, level, texture, sigma)


def _lesion(
    bg: np.ndarray, radius: np.ndarray, r: float, lobulation: np.ndarray, level: float, texture: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(image, occupancy)``: the lesion of radius ``r`` (lobulated) blended into ``bg`` at ``radius`` mm."""
    d = radius - r * (1.0 + LOBULATION * lobulation)
    occ = 1.0 / (1.0 + np.exp(np.clip(d / EDGE_MM, -30.0, 30.0)))
    return np.maximum(bg, bg * (1.0 - occ) + (level + texture) * occ), occ


def make_lesion_case(
    ct: np.ndarray,
    dist: np.ndarray,
    spacing: tuple[float, float, float],
    task: LesionTask,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """One subject: ``(image int16 HU (Z, Y, X), label uint8 (Z, Y, X), thickness mm, box start)``.

    ``ct``, ``dist``, ``spacing``: from :func:`load_lung`. ``box start``: the (Z, Y, X) continuous index
    in ``ct`` of the output's first voxel (before the deformation), for the output's origin. A draw whose
    box would run past the scan's first or last slice is drawn again (lung1's lungs reach both).
    """
    d = _draw(ct, dist, spacing, task, rng)
    return d.image, d.label, d.thickness, d.start


#: Voxels (before slice thickness) one step of a whole-scan case samples at once: bounds its memory.
SLAB_VOXELS = 2_000_000


def make_whole_lesion_case(
    ct: np.ndarray,
    dist: np.ndarray,
    spacing: tuple[float, float, float],
    task: LesionTask,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """The subject :func:`make_lesion_case` draws from ``rng``, sampled on the whole CT's field of view.

    Returns ``(image, label, thickness, origin)``: the CT's in-plane grid (its pixels, its spacing), and
    along Z slices ``thickness`` mm apart from within ``thickness`` + 1 mm of the CT's first slice to its
    last, placed so the cropped case's slices are slices of this one; ``origin`` is the continuous CT index of the
    first voxel. The rotation and scale turn about the lesion as in the crop; the crop's displacement
    field reaches beyond its box by its edge values, fading out over 16 mm (Gaussian); the noise is new
    (same level).
    """
    d = _draw(ct, dist, spacing, task, rng)
    extra = np.random.default_rng(int(rng.integers(2**63)))  # drawn after the case's own numbers
    sz, sy, sx = spacing
    box = np.array(d.disp[0].shape)
    t = d.thickness
    k = int(np.floor(d.start[0] * sz))  # crop plane p is 1 mm plane p + k here
    planes = int(np.floor((ct.shape[0] - 1 - d.start[0]) * sz + k + 1e-6)) + 1
    z0 = float(k % t)
    n = int((planes - 1 - z0) // t) + 1
    # crop coordinates (1 mm voxels = mm) of each whole voxel, per axis
    p = (
        np.arange(planes, dtype=np.float32) - k,
        ((np.arange(ct.shape[1]) - d.start[1]) * sy).astype(np.float32),
        ((np.arange(ct.shape[2]) - d.start[2]) * sx).astype(np.float32),
    )
    w = [taper(p[a], 0.0, box[a] - 1.0, 16.0) for a in range(3)]
    rel_axes = [p[a] - d.centre_out[a] for a in range(3)]
    # the lesion's reach: beyond it the occupancy is under 1 / (1 + e^10)
    reach = d.radius * (1.0 + LOBULATION * float(d.lobulation.max())) + 10.0 * EDGE_MM
    near = [np.flatnonzero(np.abs(rel_axes[a]) <= reach) for a in range(3)]
    lz, ly, lx = (slice(int(i[0]), int(i[-1]) + 1) if len(i) else slice(0, 0) for i in near)
    occ = np.zeros((planes, ly.stop - ly.start, lx.stop - lx.start), np.float32)
    image = np.empty((n, ct.shape[1], ct.shape[2]), np.int16)
    inv = (1.0 / np.array(spacing, np.float32))[:, None, None, None]
    rot = d.rot.astype(np.float32)
    rows = max(1, SLAB_VOXELS // int(planes * ct.shape[2]))
    for y0 in range(0, ct.shape[1], rows):
        ys = slice(y0, min(ct.shape[1], y0 + rows))
        rel = np.stack(np.meshgrid(rel_axes[0], rel_axes[1][ys], rel_axes[2], indexing="ij"))
        mm = np.empty_like(rel)
        mm[0] = rel[0]
        mm[1:] = np.einsum("ij,j...->i...", rot, rel[1:])
        weight = w[0][:, None, None] * w[1][ys][None, :, None] * w[2][None, None, :]
        for ax in range(3):
            mm[ax] += weight * sample_separable(d.disp[ax], (p[0], p[1][ys], p[2]))
        del weight
        mm *= inv
        mm += d.c_src[:, None, None, None]
        bg = ndi.map_coordinates(ct, mm, order=1, mode="constant", cval=-1000.0)
        del mm
        # the lesion where it reaches into this slab
        oy = slice(max(ly.start, ys.start), min(ly.stop, ys.stop))
        if oy.start < oy.stop and lz.start < lz.stop:
            part = (lz, slice(oy.start - ys.start, oy.stop - ys.start), lx)
            at = (p[0][lz], p[1][oy], p[2][lx])
            radius = np.sqrt((rel[(slice(None), *part)] ** 2).sum(0))
            bg[part], occ[lz, oy.start - ly.start : oy.stop - ly.start] = _lesion(
                bg[part],
                radius,
                d.radius,
                sample_separable(d.lobulation, at),
                d.level,
                sample_separable(d.texture, at),
            )
        del rel
        img = thick_axis0(bg, t, z0, n)
        img = img + extra.normal(0.0, d.sigma, img.shape)
        image[:, ys] = np.clip(np.round(img), -1024, 3071).astype(np.int16)
    label = np.zeros(image.shape, np.uint8)
    label[:, ly, lx] = thick_axis0(occ, t, z0, n) >= 0.5
    origin = np.array([d.start[0] + (z0 - k) / sz, 0.0, 0.0])
    return image, label, t, origin
