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
* propagate_preencoded: what the user waits for after pressing *Propagate* on a 10-slice structure (an AAL
  atlas region on Colin27, cropped with a 24-voxel margin), from the press (``startPropagate``: markups ->
  prompts, worker thread) to the mask in the scene (``applyPropagate`` after polling), as the Widget runs
  it: cold (nothing encoded yet) vs after the background encoding the Widget starts when the scan is shown
  (the viewed slice +- ``PRECOMPUTE_RADIUS``, finished while the user places the box). Both on fresh Logics, alternately.

    python Testing/benchmarks/slicer_logic.py [--repeats 3] [--only propagate_preencoded]
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
from semisam.propagation.simulate import crop_around, middle_slice  # noqa: E402
from semisam.samples import find_case  # noqa: E402
from semisam.scan.volume import read_mask, read_volume  # noqa: E402
from semisam.slices import box_from_mask  # noqa: E402

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

    from semisam.inference import segment
    from semisam.model_folder import load_model, new_manifest, save_model
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


def atlas_structure(slices: int = 10, margin: tuple[int, int, int] = (2, 24, 24)):
    """``(crop, label mask, region name)``: the AAL region of Colin27 spanning ``slices`` axial slices whose
    mean slice area is largest (a compact structure), cropped with ``margin`` voxels (Z, Y, X)."""
    from semisam.propagation.simulate import crop_around

    image = read_volume(SHARED / "ch2.nii.gz")
    atlas = read_mask(SHARED / "aal_dev.nii.gz", reference=image).array
    names = {}
    for line in (SHARED / "aal_dev.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    best = None
    for value in np.unique(atlas)[1:]:
        region = atlas == value
        extent = np.flatnonzero(region.reshape(region.shape[0], -1).any(axis=1))
        if len(extent) == slices and extent[-1] - extent[0] + 1 == slices:
            area = region.sum() / slices
            best = max(best or (0, 0), (area, int(value)))
    if best is None:
        raise SystemExit(f"no AAL region spans exactly {slices} contiguous axial slices")
    crop, label = crop_around(image, (atlas == best[1]).astype(np.uint8), margin)
    return crop, label, names.get(best[1], str(best[1]))


def bench_propagate_preencoded(repeats: int) -> dict:
    """Press-to-scene time of Propagate, cold vs with the background encoding (see the module docstring)."""
    from semisam.generalists import build_generalist

    segment_module = importlib.import_module("SemiSAMSegment")
    radius = segment_module.PRECOMPUTE_RADIUS  # what the Widget encodes around the viewed slice
    crop, label, name = atlas_structure()
    key = middle_slice(label)
    box = box_from_mask(label[key] > 0)
    model = build_generalist("litemedsam", device="cpu")
    scene = _scene()
    x0, y0, x1, y1 = box
    c0 = crop.voxel_to_ras([x0 - 0.5, y0 - 0.5, key - 0.4])
    c1 = crop.voxel_to_ras([x1 + 0.5, y1 + 0.5, key + 0.4])
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    roi.SetCenter(*((c0 + c1) / 2))
    roi.SetSize(*np.abs(c1 - c0))
    results = {}

    def press(preencode: bool):
        logic = segment_module.SemiSAMSegmentLogic()  # fresh session and embedding cache
        logic._generalists[("litemedsam", "", "cpu")] = model  # the model is loaded once, like in Slicer
        node = mrml_io.node_from_volume(crop, scene, "structure")
        seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        encode_s = 0.0
        if preencode:  # the scan is shown with the key slice in view: the Widget encodes key +- radius
            t = time.perf_counter()
            job = logic.precomputeEmbeddings(node, logic.slicesAround(node, [key], radius), device="cpu")
            job.wait()
            encode_s = time.perf_counter() - t
        t0 = time.perf_counter()
        worker = logic.startPropagate(node, seg, "structure", None, roi, device="cpu")
        while not worker.poll().finished:
            time.sleep(0.005)
        out = logic.applyPropagate(worker.result)
        seconds = time.perf_counter() - t0
        mask = mrml_io.export_mask(seg, node, [out.segment_id])
        results[preencode] = (out, mask, encode_s)
        return seconds

    press(True)  # warm-up: ONNX sessions, first-call allocations
    cold_s, warm_s = [], []
    for _ in range(repeats):  # alternately, so load changes on a shared machine hit both alike
        cold_s.append(press(False))
        warm_s.append(press(True))
    t_cold, t_warm = statistics.median(cold_s), statistics.median(warm_s)
    (cold, cold_mask, _), (warm, warm_mask, encode_s) = results[False], results[True]
    return {
        "structure": name,
        "volume_zyx": list(crop.shape),
        "structure_slices": int(label.reshape(label.shape[0], -1).any(axis=1).sum()),
        "propagated_slices": len(warm.slices),
        "preencoded_slices": len(range(max(0, key - radius), min(crop.shape[0], key + radius + 1))),
        "background_encode_s": round(encode_s, 3),
        "cold_press_to_scene_s": round(t_cold, 3),
        "preencoded_press_to_scene_s": round(t_warm, 3),
        "speedup": round(t_cold / t_warm, 2),
        "slices_encoded_cold": cold.slices_encoded,
        "slices_encoded_preencoded": warm.slices_encoded,
        "same_mask": bool(np.array_equal(cold_mask, warm_mask)),
        "dice_vs_atlas": round(dice(warm_mask, label), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--only", choices=("propagate", "autosegment", "propagate_preencoded"), action="append"
    )
    args = parser.parse_args()
    only = set(args.only or ("propagate", "autosegment", "propagate_preencoded"))

    out = {"machine": machine_info(), "repeats": args.repeats}
    if only & {"propagate", "autosegment"}:
        case = find_case("lung1", extra=[SHARED])
        if case is None:
            raise SystemExit("sample case lung1 not found; run `semisam samples fetch`")
        if "propagate" in only:
            out["propagate"] = bench_propagate(case, args.repeats)
        if "autosegment" in only:
            out["autosegment"] = bench_autosegment(case, args.repeats)
    if "propagate_preencoded" in only:
        out["propagate_preencoded"] = bench_propagate_preencoded(args.repeats)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
