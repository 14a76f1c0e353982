"""The flows of SemiSAMSegment's self-test (``SemiSAMSegmentTest``, run inside Slicer), kept here so the
module file stays small. Each mirrors a pytest test of ``Testing/Python/test_slicer_segment_flow.py``
exactly: same data (the sample cases), same checks, but on the application's scene.

Every function takes the running ``unittest.TestCase`` (for its asserts and ``skipTest``), the scene and
a temporary folder. No qt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semisam.metrics import dice

from . import markup_prompts, mrml_io


def sample_or_skip(test, name: str):
    from semisam import samples

    case = samples.find_case(name)
    if case is None:
        test.skipTest(f"sample case {name} not found locally; run `semisam samples fetch` to get it")
    return case


def tiny_model_dir(path: Path, modality: str = "CT") -> Path:
    """An untrained specialist folder, as ``semisam model init`` writes it (small and coarse)."""
    import torch

    from semisam.model_folder import new_manifest, save_model
    from semisam.specialists import build_specialist

    manifest = new_manifest(
        "mamba_unet", ["lesion"], modality, kwargs={"channels": [8, 16, 16, 32, 32]}, target_spacing=(2, 2, 3)
    )
    torch.manual_seed(0)
    save_model(path, build_specialist(manifest.arch, **manifest.kwargs), manifest)
    return path


def roi_around(scene, volume, box, k: int, name: str = "box"):
    """An ROI node (RAS) around voxel box ``(i0, j0, i1, j1)`` on slice ``k``, 0.8 voxel thick."""
    x0, y0, x1, y1 = box
    c0 = volume.voxel_to_ras([x0 - 0.5, y0 - 0.5, k - 0.4])
    c1 = volume.voxel_to_ras([x1 + 0.5, y1 + 0.5, k + 0.4])
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    roi.SetCenter(*((c0 + c1) / 2))
    roi.SetSize(*np.abs(c1 - c0))
    return roi


def lesion_crop(case):
    """``(crop, label)``: the sample ``case``'s scan cropped around its lesion (2 slices, 24 px of margin)
    and its ``(Z, Y, X)`` label on the crop, the small scene the flows and their pytest twins run on."""
    from semisam.propagation.simulate import crop_around
    from semisam.scan.volume import read_mask, read_volume

    full = read_volume(case.image)
    return crop_around(full, read_mask(case.label, reference=full).array, (2, 24, 24))


def middle_roi(scene, crop, label) -> tuple[int, object]:
    """``(k, ROI node)``: the label's middle slice and an ROI around its box there, as a user draws it."""
    from semisam.propagation.simulate import middle_slice
    from semisam.slices import box_from_mask

    key = middle_slice(label)
    return key, roi_around(scene, crop, box_from_mask(label[key] > 0), key)


def mask_round_trip_flow(test, scene, logic, tmp: Path) -> None:
    """test_mask_file_round_trip_through_segment_logic (test_slicer_logic.py): lung1's label -> segment ->
    file -> the same voxels."""
    from semisam.scan.volume import read_mask

    case = sample_or_skip(test, "lung1")
    volume_node = mrml_io.load_volume(scene, case.image)
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    ids = logic.importMaskFile(case.label, volume_node, segmentation_node, "lesion")
    test.assertEqual(len(ids), 1)
    out = logic.exportMaskFile(segmentation_node, volume_node, tmp / "mask.nii.gz")
    test.assertTrue(np.array_equal(read_mask(out).array, read_mask(case.label).array))


def auto_segment_flow(test, scene, logic, tmp: Path) -> None:
    """test_auto_segment_lands_on_the_volume_grid: breast1, untrained model, segments == core labels."""
    from semisam.inference import segment
    from semisam.model_folder import load_model
    from semisam.scan.volume import read_volume

    case = sample_or_skip(test, "breast1")
    model_dir = tiny_model_dir(tmp / "model", modality="MR")
    node = mrml_io.load_volume(scene, case.image)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "proposal")
    out = logic.autoSegment(node, model_dir, seg, "cpu")
    expected = segment(read_volume(case.image), *load_model(model_dir), device="cpu")
    test.assertTrue(np.array_equal(mrml_io.export_mask(seg, node), expected.labels))
    test.assertEqual(out.review_order, [int(k) for k in expected.review_order])
    test.assertEqual(logic.nextUncertainSlice(seg), out.review_order[0])


def propagate_and_accept_flow(test, scene, logic, tmp: Path) -> None:
    """test_propagate_from_an_roi_segments_the_nodule, test_slices_outside_the_propagated_range_keep_what_
    they_had, the review order after it (test_next_uncertain_slice_goes_first_to_the_least_confident_
    propagated_slice) (and, with Propagate across slices off, every slice but the prompted one),
    test_a_point_outside_the_volume_is_a_clear_error and test_accept_stores_the_case_with_its_provenance,
    on a lung1 crop with the bundled LiteMedSAM."""
    from semisam.store import LabeledStore

    case = sample_or_skip(test, "lung1")
    crop, label = lesion_crop(case)
    node = mrml_io.node_from_volume(crop, scene, "lung1 crop")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
    before = np.zeros(crop.shape, np.uint8)
    before[0, :5, :5] = before[-1, -5:, -5:] = 1  # marks on slices the nodule is not on
    mrml_io.import_mask(before, node, seg, {1: "lesion"})
    key, roi = middle_roi(scene, crop, label)
    out = logic.propagate(node, seg, "lesion", roiNode=roi, device="cpu")
    after = mrml_io.export_mask(seg, node, [out.segment_id])
    lo, hi = out.slice_range
    test.assertGreater(dice(after[lo : hi + 1], label[lo : hi + 1]), 0.6)
    test.assertTrue(
        np.array_equal(after[:lo], before[:lo]) and np.array_equal(after[hi + 1 :], before[hi + 1 :])
    )
    # Next uncertain slice: the propagated slices, least confident (predicted IoU) first.
    answered = sorted((s for s in out.slices if s not in out.key_slices), key=lambda s: out.confidence[s])
    test.assertEqual(logic.reviewOrder(seg), answered)
    test.assertEqual(logic.nextUncertainSlice(seg), answered[0])
    # Propagate across slices off: the prompted slice alone is answered; an edit elsewhere stays.
    edited = after.copy()
    edited[key] = 0
    edited[0, 10:12, 10:12] = 1
    mrml_io.import_mask(edited, node, seg, {1: "lesion"})
    only = logic.propagate(node, seg, "lesion", roiNode=roi, device="cpu", propagateAcrossSlices=False)
    test.assertEqual(only.replaced, [key])
    again = mrml_io.export_mask(seg, node, [only.segment_id])
    test.assertTrue(np.array_equal(again[key], after[key]))
    test.assertTrue(np.array_equal(np.delete(again, key, 0), np.delete(edited, key, 0)))
    test.assertEqual(logic.reviewOrder(seg), answered)  # a slice-only answer does not re-rank
    mrml_io.import_mask(after, node, seg, {1: "lesion"})

    far = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "far")
    far.AddControlPoint(*crop.voxel_to_ras([1, 1, crop.shape[0] + 5]))
    with test.assertRaises(markup_prompts.MarkupPromptError) as raised:
        logic.propagate(node, seg, "lesion", pointsNode=far, device="cpu")
    test.assertIn("markups 'far' point 1", str(raised.exception))

    accepted = mrml_io.export_mask(seg, node)
    case_id = logic.accept(node, seg, str(tmp / "store"), {"annotator": "self-test"})
    stored = LabeledStore(tmp / "store").read_case(case_id)
    test.assertTrue(np.array_equal(stored.mask.array, accepted))
    test.assertEqual(stored.record.provenance.prompts, {"box": 1})
    test.assertEqual(stored.record.provenance.annotator, "self-test")


def worker_propagate_flow(test, scene, logic, tmp: Path, idle=None) -> None:
    """test_the_worker_path_of_propagate_gives_the_synchronous_mask: Propagate as the Widget runs it
    (worker thread, polled; written on the main thread) gives the mask of the synchronous call, and the
    worker writes nothing to the scene itself. ``idle`` runs between polls (``slicer.app.processEvents``)."""
    import time

    from SemiSAMLib.worker import WorkerState

    case = sample_or_skip(test, "lung1")
    crop, label = lesion_crop(case)
    node = mrml_io.node_from_volume(crop, scene, "lung1 crop")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "worker vs sync")
    key, roi = middle_roi(scene, crop, label)
    worker = logic.startPropagate(node, seg, "lesion worker", None, roi, device="cpu")
    while not worker.poll().finished:
        test.assertEqual(mrml_io.segment_ids(seg), [])
        (idle or (lambda: time.sleep(0.01)))()
    test.assertIs(worker.poll().state, WorkerState.done, worker.error)
    threaded = logic.applyPropagate(worker.result)
    synchronous = logic.propagate(node, seg, "lesion sync", roiNode=roi, device="cpu")
    got = mrml_io.export_mask(seg, node, [threaded.segment_id])
    test.assertTrue(got.any())
    test.assertTrue(np.array_equal(got, mrml_io.export_mask(seg, node, [synchronous.segment_id])))
