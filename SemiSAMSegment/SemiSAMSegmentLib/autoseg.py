"""Auto-segment for SemiSAMSegment's Logic: which specialist to run, running it, and where slice ``k`` is.

The specialist is the store's *active* model version when a store folder is set and has one, otherwise
the model folder the user picked. Its per-slice uncertainty ranking is kept on the segmentation node by
:mod:`SemiSAMSegmentLib.review_table`. No qt, no ``slicer.app``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import mrml_io
from .texts import _

log = logging.getLogger(__name__)


class ModelChoiceError(ValueError):
    """No usable specialist: the message says what to choose or fix."""


@dataclass
class AutoSegmentResult:
    """What :meth:`SemiSAMSegmentLogic.autoSegment` returns.

    Attributes:
        segment_ids: one segment per label of the model (manifest order).
        review_order: slice indices ``k`` of the volume, most uncertain first.
        slice_uncertainty: ``(Z,)`` mean normalised entropy per slice ``k``, in [0, 1].
        table_node: the ``vtkMRMLTableNode`` holding the ranking.
        model_version: store version (``v0003``) or ``folder:<path>`` of the model that ran.
        seconds: wall-clock seconds per stage of the core's inference.
    """

    segment_ids: list[str]
    review_order: list[int]
    slice_uncertainty: np.ndarray
    table_node: object
    model_version: str
    seconds: dict[str, float]

    def describe(self) -> str:
        """One line for the module's status label."""
        return _(
            "Auto-segment ({version}): {n} segment(s) in {seconds:.1f} s; most uncertain slices {slices}."
        ).format(
            version=self.model_version,
            n=len(self.segment_ids),
            seconds=sum(self.seconds.values()),
            slices=", ".join(str(k) for k in self.review_order[:5]),
        )


def resolve_model_folder(store_folder: str, model_folder: str) -> tuple[Path, str]:
    """``(model directory, version label)``: the store's active version, else ``model_folder``.

    Raises:
        ModelChoiceError: neither is usable (the message names the folder and what is missing).
    """
    if store_folder:
        from semisam.store import LabeledStore, StoreError
        from semisam.store.labeled import STORE_FILE

        root = Path(store_folder).expanduser()
        if (root / STORE_FILE).is_file():
            try:
                active = LabeledStore(root).models.active()
            except StoreError as exc:
                raise ModelChoiceError(f"store {root}: {exc}") from exc
            if active is not None:
                return active.path, active.version
            if not model_folder:
                raise ModelChoiceError(
                    f"store {root} has no active model version yet: promote one in SemiSAM Train, "
                    "or choose a model folder (e.g. made by `semisam model init`)"
                )
    if not model_folder:
        raise ModelChoiceError("choose a model folder (or a store folder with an active model version)")
    path = Path(model_folder).expanduser()
    if not path.is_dir():
        raise ModelChoiceError(f"model folder {path}: no such folder")
    return path, f"folder:{path.resolve()}"


def run_specialist(
    volume, model_dir: Path, device, progress: Callable[[float, str], None] | None, cache: dict
):
    """Load (once per folder content and device) and run the specialist; returns ``(result, manifest)``.

    ``cache`` maps ``(folder, weights sha256, device)`` to the loaded ``(model, manifest)``
    (:func:`semisam.store.active.load_specialist`, which the loop's simulated proposals run too).
    """
    from semisam.inference import segment
    from semisam.store.active import load_specialist

    model, manifest = load_specialist(model_dir, device, cache)
    return segment(volume, model, manifest, device=device, progress=progress), manifest


@dataclass
class AutoSegmentRequest:
    """One auto-segmentation: gathered on the main thread, computed anywhere, written on the main thread
    (see :meth:`CaseLogic.prepareAutoSegment`).

    Attributes:
        session: the case in progress (its volume is the input).
        model_dir, device, model_version: the specialist folder, the resolved torch device, provenance label.
        volume_node, segmentation_node: where the result goes.
        result, manifest: the core's ``SegmentationResult`` and the model's manifest, once computed.
    """

    session: object
    model_dir: Path
    device: object
    model_version: str
    volume_node: object
    segmentation_node: object
    result: object = None
    manifest: object = None


def slice_centre_ras(volume_node, k: int) -> tuple[float, float, float]:
    """RAS (mm) of the centre of slice ``k`` of a volume node (for jumping a slice view to it)."""
    nx, ny, nz = volume_node.GetImageData().GetDimensions()
    if not 0 <= k < nz:
        raise ValueError(f"slice {k} is outside {volume_node.GetName()!r} (0..{nz - 1})")
    m = mrml_io.ijk_to_ras(volume_node)
    ras = m @ np.array([(nx - 1) / 2.0, (ny - 1) / 2.0, float(k), 1.0])
    return (float(ras[0]), float(ras[1]), float(ras[2]))


#: Slicer's default slice orientation presets (``vtkMRMLSliceNode.AddDefaultSliceOrientationPresets``) as
#: (screen right, screen up, normal) in RAS: radiological convention, patient left on screen right,
#: anterior / superior up.
STANDARD_VIEWS = {
    "Axial": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "Sagittal": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0), (-1.0, 0.0, 0.0)),
    "Coronal": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
}


def slice_view_axes(volume_node) -> np.ndarray:
    """``(3, 3)`` RAS unit columns (screen right, screen up, normal) that show the volume's slices ``k``.

    The normal is the ``k`` axis; screen right and up are the ``i`` and ``j`` axes (either order, either
    sign), picked to be closest to Slicer's standard view with the nearest normal, so a sagittal scan
    looks as in Slicer's sagittal view (not mirrored or upside down; the same matrix when it is not oblique,
    and Slicer then names the view "Sagittal").
    """
    m = mrml_io.ijk_to_ras(volume_node)[:3, :3]
    i, j, k = (m[:, c] / np.linalg.norm(m[:, c]) for c in range(3))
    right, up, normal = (np.array(v) for v in max(STANDARD_VIEWS.values(), key=lambda v: abs(k @ v[2])))
    pairs = ((i, j), (j, i))  # which voxel axis runs along screen right
    a, b = max(pairs, key=lambda ab: abs(ab[0] @ right) + abs(ab[1] @ up))
    return np.column_stack([np.sign(a @ right or 1) * a, np.sign(b @ up or 1) * b, np.sign(k @ normal) * k])


def show_slice(slice_node, volume_node, k: int) -> tuple[float, float, float]:
    """Make ``slice_node`` show slice ``k`` of ``volume_node``; returns the slice centre (RAS mm).

    ``k`` indexes the volume's third voxel axis, which is the patient's S axis only for axial
    acquisitions: a sagittal or coronal scan (or an oblique one) has its slices ``k`` in another plane,
    so only moving the view along its own normal (the Red view is RAS-axial) would show a different
    plane. The view is therefore turned to the volume's slice plane (:func:`slice_view_axes`) and
    centred on slice ``k``.
    """
    centre = slice_centre_ras(volume_node, k)
    slice_to_ras = np.eye(4)
    slice_to_ras[:3, :3] = slice_view_axes(volume_node)
    slice_to_ras[:3, 3] = centre
    matrix = slice_node.GetSliceToRAS()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, slice_to_ras[r, c])
    slice_node.UpdateMatrices()
    return centre
