"""Benchmark what SemiSAMSegment's Logic adds on top of the core engines (slicer-core's real MRML, CPU).

Each engine is timed twice in the same process, alternately, on the same data and model: called directly
through the core (the reference) and through ``SemiSAMSegmentLogic`` (volume node -> Volume, markups -> prompts,
result -> segment, review table). Prints one JSON object with medians of repeats and the ratio
Logic / core, so the noise of a shared machine mostly cancels.

* propagate: one ROI box on the middle slice of the lung1 nodule, on a crop (7 x 74 x 72 voxels),
  LiteMedSAM, cold embedding cache each repeat; plus the Logic's re-propagation after one more point
  (kept state, warm cache);
* auto-segment: an untrained ``mamba_unet`` (as ``semisam model init`` makes it, channels 8..32, target
  spacing 2 x 2 x 3 mm) on the full lung1 (512 x 512 x 48).

    python Testing/benchmarks/slicer_logic.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "SemiSAMSegment"))

from bench_common import machine_info  # noqa: E402
from SemiSAMSegmentLib import mrml_io  # noqa: E402

from semisam.metrics import dice  # noqa: E402
from semisam.prompts import box_from_mask  # noqa: E402
from semisam.propagation.simulate import crop_around, middle_slice  # noqa: E402
from semisam.samples import find_case  # noqa: E402
from semisam.volume import read_mask, read_volume  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def _interleaved(core, logic, repeats: int) -> tuple[float, float, object, object]:
    """Median seconds of ``core()`` and ``logic()`` run alternately (load changes on a shared machine hit
    both alike), and the last result of each."""
    t_core, t_logic, a, b = [], [], None, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        a = core()
        t1 = time.perf_counter()
        b = logic()
        t2 = time.perf_counter()
        t_core.append(t1 - t0)
        t_logic.append(t2 - t1)
    return statistics.median(t_core), statistics.median(t_logic), a, b


def _scene():
    return mrml_io.batch_scene()


def bench_propagate(case, repeats: int) -> dict:
    from semisam.generalists import build_generalist
    from semisam.generalists.cache import EmbeddingCache
    from semisam.propagation import add_prompt, init_state, propagate

    segment_module = importlib.import_module("SemiSAMSegment")
    full = read_volume(case.image)
    crop, label = crop_around(full, read_mask(case.label, reference=full).array, (2, 24, 24))
    key = middle_slice(label)
    box = box_from_mask(label[key] > 0)
    model = build_generalist("litemedsam", device="cpu")

    def core():
        state = init_state(
            model, crop, "axial", cache=EmbeddingCache(), scan_id=f"core-{time.perf_counter()}"
        )
        add_prompt(state, key, box=box)
        return propagate(state).mask

    scene = _scene()
    node = mrml_io.node_from_volume(crop, scene, "crop")
    x0, y0, x1, y1 = box
    c0, c1 = (
        crop.voxel_to_ras([x0 - 0.5, y0 - 0.5, key - 0.4]),
        crop.voxel_to_ras([x1 + 0.5, y1 + 0.5, key + 0.4]),
    )
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    roi.SetCenter(*((c0 + c1) / 2))
    roi.SetSize(*np.abs(c1 - c0))
    logics = []

    def through_logic():
        logic = segment_module.SemiSAMSegmentLogic()  # fresh session and embedding cache: cold like core()
        logic._generalists[("litemedsam", "", "cpu")] = model  # same model object as the reference
        seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        out = logic.propagate(node, seg, "lesion", roiNode=roi, device="cpu")
        logics.append((logic, seg, out))

    core()  # warm-up: ONNX sessions, first-call allocations
    t_core, t_logic, core_mask, _ = _interleaved(core, through_logic, repeats)
    logic, seg, first = logics[-1]
    logic_mask = mrml_io.export_mask(seg, node, [first.segment_id])
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "more")
    j, i = np.argwhere(label[key + 1] > 0).mean(axis=0).round().astype(int)
    points.AddControlPoint(*crop.voxel_to_ras([i, j, key + 1]))
    t0 = time.perf_counter()
    again = logic.propagate(node, seg, "lesion", pointsNode=points, roiNode=roi, device="cpu")
    t_again = time.perf_counter() - t0
    return {
        "volume_zyx": list(crop.shape),
        "core_s": round(t_core, 3),
        "logic_s": round(t_logic, 3),
        "logic_over_core": round(t_logic / t_core, 3),
        "logic_overhead_s": round(t_logic - t_core, 3),
        "same_mask": bool(np.array_equal(core_mask, logic_mask)),
        "dice_vs_label": round(dice(logic_mask, label), 4),
        "add_point_repropagate_s": round(t_again, 3),
        "add_point_slices_encoded_total": again.slices_encoded,
    }


def bench_autosegment(case, repeats: int) -> dict:
    import torch

    from semisam.checkpoints import load_model, new_manifest, save_model
    from semisam.inference import segment
    from semisam.specialists import build_specialist

    segment_module = importlib.import_module("SemiSAMSegment")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = new_manifest(
            "mamba_unet", ["lesion"], "CT", kwargs={"channels": [8, 16, 16, 32, 32]}, target_spacing=(2, 2, 3)
        )
        torch.manual_seed(0)
        model_dir = Path(tmp) / "model"
        save_model(model_dir, build_specialist(manifest.arch, **manifest.kwargs), manifest)
        volume = read_volume(case.image)
        model, man = load_model(model_dir)
        scene = _scene()
        node = mrml_io.load_volume(scene, case.image)
        logic = segment_module.SemiSAMSegmentLogic()

        def core():
            return segment(volume, model, man, device="cpu").labels

        def through_logic():
            seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
            logic.autoSegment(node, model_dir, seg, "cpu")
            return seg

        core()
        t_core, t_logic, core_labels, seg = _interleaved(core, through_logic, repeats)
        logic_labels = mrml_io.export_mask(seg, node)
    return {
        "volume_zyx": list(volume.shape),
        "core_s": round(t_core, 3),
        "logic_s": round(t_logic, 3),
        "logic_over_core": round(t_logic / t_core, 3),
        "logic_overhead_s": round(t_logic - t_core, 3),
        "same_labels": bool(np.array_equal(core_labels, logic_labels)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    case = find_case("lung1", extra=[SHARED])
    if case is None:
        raise SystemExit("sample case lung1 not found; run `semisam samples fetch`")
    out = {
        "machine": machine_info(),
        "repeats": args.repeats,
        "propagate": bench_propagate(case, args.repeats),
        "autosegment": bench_autosegment(case, args.repeats),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
