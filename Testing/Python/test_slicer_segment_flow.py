"""SemiSAMSegment's Logic end to end against the real slicer-core MRML, the real LiteMedSAM weights, a real
specialist model folder and a real store: auto-segment -> markups -> propagate -> accept.

The expensive part (LiteMedSAM on a cropped lung1: 7 slices of 74 x 72 voxels) runs once per module; the
tests then check what it left in the scene and the store.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (Slicer's MRML in Python) is needed")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "SemiSAMSegment"))

from SemiSAMSegmentLib import autoseg, markup_prompts, mrml_io, review_table  # noqa: E402
from SemiSAMSegmentLib.selftest import lesion_crop, middle_roi, roi_around, tiny_model_dir  # noqa: E402

from semisam.metrics import dice  # noqa: E402
from semisam.propagation.simulate import middle_slice  # noqa: E402
from semisam.scan.volume import Volume, read_volume  # noqa: E402
from semisam.slices import box_from_mask  # noqa: E402
from semisam.store import LabeledStore  # noqa: E402
from SemiSAMLib.worker import Cancelled, WorkerState  # noqa: E402

segment_module = importlib.import_module("SemiSAMSegment")


def make_scene():
    """A real scene (one per module here so the expensive propagation runs once)."""
    return mrml_io.batch_scene()


# ---------------------------------------------------------------------------------- fast checks
def test_ras_to_voxel_agrees_with_the_node_rastoijk(mrml_scene):
    """The Logic converts markups with Volume.ras_to_voxel; Slicer's own RASToIJK gives the same voxel."""
    rng = np.random.default_rng(3)
    direction = np.linalg.qr(rng.normal(size=(3, 3)))[0]  # oblique, possibly left-handed
    scan = Volume(
        rng.normal(size=(5, 6, 7)).astype(np.float32), (0.7, 1.1, 2.5), (10.0, -5.0, 3.0), direction
    )
    node = mrml_io.node_from_volume(scan, mrml_scene)
    volume = mrml_io.volume_from_node(node)
    m = slicer.vtkMatrix4x4() if hasattr(slicer, "vtkMatrix4x4") else __import__("vtk").vtkMatrix4x4()
    node.GetRASToIJKMatrix(m)
    ras_to_ijk = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    ras = rng.uniform(-30, 30, size=(50, 3))
    expected = (np.c_[ras, np.ones(50)] @ ras_to_ijk.T)[:, :3]
    assert np.allclose(volume.ras_to_voxel(ras), expected, atol=1e-9)


def test_markups_become_prompts_with_signs_and_axis(mrml_scene):
    scan = Volume(
        np.zeros((10, 40, 30), np.int16), (0.8, 0.8, 5.0), (1.0, 2.0, 3.0), np.diag([-1.0, -1.0, 1.0])
    )
    node = mrml_io.node_from_volume(scan, mrml_scene)
    volume = mrml_io.volume_from_node(node)
    roi = roi_around(mrml_scene, volume, (5, 6, 20, 25), 4)
    points = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "clicks")
    points.AddControlPoint(*volume.voxel_to_ras([7, 8, 4]))
    points.AddControlPoint(*volume.voxel_to_ras([25, 30, 6]))
    assert markup_prompts.toggle_point_sign(points) == "-"  # the last point: now negative
    assert points.GetNthControlPointDescription(1) == "-"
    assert (
        markup_prompts.toggle_point_sign(points, 1) == "+" and markup_prompts.toggle_point_sign(points) == "-"
    )
    points.SetNthControlPointDescription(1, "Negative")
    got = markup_prompts.markups_to_prompts(volume, points, roi)
    assert got.prompts.axis == "axial"  # the ROI is one voxel thick across k
    assert [p.to_json() for p in got.prompts.prompts] == [
        {"slice": 4, "box": [5, 6, 20, 25]},
        {"slice": 4, "point": [7, 8], "positive": True},
        {"slice": 6, "point": [25, 30], "positive": False},
    ]
    assert got.kinds == {"box": 1, "point+": 1, "point-": 1}
    points.SetAttribute(markup_prompts.SIGN_ATTRIBUTE, "negative")  # the whole list is background
    assert not any(p.positive for p in markup_prompts.point_prompts(points, volume, "axial"))
    # An ROI thin across i is a sagittal box: columns j, rows k.
    thin = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "sagittal")
    c0, c1 = volume.voxel_to_ras([11.6, 3, 2]), volume.voxel_to_ras([12.4, 9, 5])
    thin.SetCenter(*((c0 + c1) / 2))
    thin.SetSize(*np.abs(c1 - c0))
    sag = markup_prompts.markups_to_prompts(volume, None, thin)
    assert sag.prompts.axis == "sagittal"
    assert sag.prompts.prompts[0].to_json() == {"slice": 12, "box": [3, 2, 9, 5]}


def test_a_point_outside_the_volume_is_a_clear_error(mrml_scene):
    scan = Volume(np.zeros((4, 8, 8), np.int16), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0))
    node = mrml_io.node_from_volume(scan, mrml_scene)
    points = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "my clicks")
    points.AddControlPoint(2.0, 2.0, 3.0, "inside")
    points.AddControlPoint(2.0, 2.0, 30.0, "too far up")
    seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    logic = segment_module.SemiSAMSegmentLogic()
    with pytest.raises(
        markup_prompts.MarkupPromptError,
        match=r"markups 'my clicks' point 2 \('too far up'\) at RAS \(2\.0, 2\.0, 30\.0\) mm is outside the "
        r"volume: voxel \(i, j, k\) \(2\.0, 2\.0, 10\.0\), valid 0\.\.7, 0\.\.7, 0\.\.3",
    ):
        logic.propagate(node, seg, "lesion", pointsNode=points, device="cpu")
    assert mrml_io.segment_ids(seg) == []  # nothing written
    roi = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "far box")
    roi.SetCenter(100.0, 100.0, 3.0)
    roi.SetSize(4.0, 4.0, 1.0)
    with pytest.raises(
        markup_prompts.MarkupPromptError, match="markups 'far box'.*does not overlap the volume"
    ):
        logic.promptsFromMarkups(node, None, roi)
    edge = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "edge")
    edge.AddControlPoint(2.0, 2.0, 10.4)  # k = 3.47: inside the last voxel (k = 3 spans 2.5..3.5)
    assert logic.promptsFromMarkups(node, edge).prompts.prompts[0].slice == 3
    edge.SetNthControlPointPosition(0, 2.0, 2.0, 10.6)  # k = 3.53: past it
    with pytest.raises(markup_prompts.MarkupPromptError, match="markups 'edge' point 1"):
        logic.promptsFromMarkups(node, edge)
    with pytest.raises(markup_prompts.MarkupPromptError, match="no prompts: place an ROI box or points"):
        logic.promptsFromMarkups(node, mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "empty"))


def _matrix(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _matrix3(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(3)] for r in range(3)])


@pytest.mark.parametrize("acquisition", ["axial", "sagittal", "coronal", "oblique"])
def test_next_uncertain_slice_shows_the_volume_slice_k(mrml_scene, acquisition):
    """The Red view is axial; for a sagittal, coronal or oblique scan slice k lies in another plane.
    After showSlice the view's plane is that of slice k: its normal is the k axis and all four corners
    of slice k lie in it (0 mm off the plane), centred on the slice."""
    directions = {  # columns: the i, j, k axes in RAS
        "axial": np.eye(3),
        "sagittal": np.array([[0.0, 0, -1], [1, 0, 0], [0, -1, 0]]),  # k runs R->L, i to A, j to I
        "coronal": np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]),  # k runs along A
        "oblique": np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))[0],
    }
    scan = Volume(np.zeros((9, 6, 7), np.int16), (0.8, 1.2, 3.0), (4.0, -20.0, 11.0), directions[acquisition])
    node = mrml_io.node_from_volume(scan, mrml_scene)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(mrml_scene)  # as the application does
    red = mrml_scene.AddNewNodeByClass("vtkMRMLSliceNode")
    red.SetOrientation("Axial")
    k = 6
    centre = segment_module.SemiSAMSegmentLogic.showSlice(red, node, k)
    slice_to_ras = _matrix(red.GetSliceToRAS())
    normal = slice_to_ras[:3, 2]
    k_axis = scan.direction[:, 2]
    assert abs(abs(normal @ k_axis) - 1.0) < 1e-9, f"view normal {normal} is not the k axis {k_axis}"
    np.testing.assert_allclose(slice_to_ras[:3, 3], centre, atol=1e-9)
    corners = scan.voxel_to_ras([[i, j, k] for i in (0, 6) for j in (0, 5)])
    in_view = np.linalg.inv(slice_to_ras) @ np.c_[corners, np.ones(4)].T
    np.testing.assert_allclose(in_view[2], 0.0, atol=1e-6)  # every corner of slice k is in the view
    assert np.allclose(scan.ras_to_voxel(centre), [3.0, 2.5, k])
    if acquisition != "oblique":  # shown as Slicer's own sagittal / coronal view: not mirrored, S up
        preset = _matrix3(red.GetSliceOrientationPreset(acquisition.capitalize()))
        np.testing.assert_allclose(slice_to_ras[:3, :3], preset, atol=1e-12)
        assert red.GetOrientation() == acquisition.capitalize()
    else:
        assert red.GetOrientation() == "Reformat"


def test_accept_names_an_unknown_segment_id(mrml_scene, tmp_path):
    scan = Volume(np.zeros((4, 8, 8), np.int16), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0))
    node = mrml_io.node_from_volume(scan, mrml_scene)
    seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mine")
    mask = np.zeros(scan.shape, np.uint8)
    mask[1, 2:4, 2:4] = 1
    (sid,) = mrml_io.import_mask(mask, node, seg, names={1: "lesion"})
    logic = segment_module.SemiSAMSegmentLogic()
    with pytest.raises(ValueError, match=rf"'mine' has no segment with id nope \(it has {sid}\)"):
        logic.accept(node, seg, str(tmp_path / "store"), None, segmentIds=[sid, "nope"])
    assert not (tmp_path / "store").exists()  # nothing written


def test_the_case_before_a_validation_one_is_announced(mrml_scene, tmp_path):
    """After four accepted cases the fifth joins validation: the Logic says to draw it without a proposal."""
    scan = Volume(np.zeros((4, 8, 8), np.int16), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0))
    node = mrml_io.node_from_volume(scan, mrml_scene)
    mask = np.zeros(scan.shape, np.uint8)
    mask[1, 2:4, 2:4] = 1
    logic = segment_module.SemiSAMSegmentLogic()
    store = str(tmp_path / "store")
    assert logic.validationNotice(store) is None  # no store yet
    notices = []
    for n in range(5):
        seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"s{n}")
        mrml_io.import_mask(mask, node, seg, names={1: "lesion"})
        logic.accept(node, seg, store, None)
        notices.append(logic.validationNotice(store))
    assert [n is not None for n in notices] == [False, False, False, True, False]
    assert "validation" in notices[3] and "without Auto-segment" in notices[3]


# --------------------------------------------------------------------------- auto-segment on a grid
def test_auto_segment_lands_on_the_volume_grid(mrml_scene, breast1, tmp_path):
    """An untrained specialist on breast1 (oblique-free but anisotropic, non-zero origin): the segments
    equal the core's own result on the file, voxel for voxel, and the ranking is stored."""
    from semisam.inference import segment
    from semisam.model_folder import load_model

    model_dir = tiny_model_dir(tmp_path / "model", modality="MR")
    node = mrml_io.load_volume(mrml_scene, breast1.image)
    seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "proposal")
    logic = segment_module.SemiSAMSegmentLogic()
    fractions = []
    out = logic.autoSegment(node, model_dir, seg, "cpu", lambda f, stage: fractions.append(f))
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert [seg.GetSegmentation().GetSegment(s).GetName() for s in out.segment_ids] == ["lesion"]
    expected = segment(read_volume(breast1.image), *load_model(model_dir), device="cpu")
    got = mrml_io.export_mask(seg, node)
    assert got.shape == read_volume(breast1.image).shape
    assert np.array_equal(got, expected.labels), "segment voxels differ from the core's labels"
    assert expected.labels.any(), "an all-empty proposal would not test the grid"
    assert out.review_order == [int(k) for k in expected.review_order]
    table = out.table_node.GetTable()
    assert table.GetNumberOfRows() == node.GetImageData().GetDimensions()[2]
    assert [table.GetValueByName(r, "slice").ToInt() for r in range(3)] == out.review_order[:3]
    assert logic.reviewOrder(seg) == out.review_order
    assert f"most uncertain slices {out.review_order[0]}, " in out.describe()
    assert logic.nextUncertainSlice(seg) == out.review_order[0]
    assert logic.nextUncertainSlice(seg, out.review_order[0]) == out.review_order[1]
    assert logic.nextUncertainSlice(seg, out.review_order[-1]) == out.review_order[0]
    ras = logic.sliceCentreRAS(node, out.review_order[0])
    assert abs(read_volume(breast1.image).ras_to_voxel(ras)[2] - out.review_order[0]) < 1e-6


def test_the_stores_active_model_is_the_one_auto_segment_uses(tmp_path):
    picked = tiny_model_dir(tmp_path / "picked")
    resolve = segment_module.SemiSAMSegmentLogic.resolveModelFolder
    assert resolve("", str(picked)) == (picked, f"folder:{picked.resolve()}")
    store = LabeledStore.create(tmp_path / "store", {1: "lesion"})
    with pytest.raises(autoseg.ModelChoiceError, match="has no active model version yet"):
        resolve(str(store.root), "")
    assert resolve(str(store.root), str(picked))[0] == picked  # no active version: the picked folder
    version = store.models.add(picked)
    store.models.promote(version.version)
    assert resolve(str(store.root), str(picked)) == (version.path, "v0001")
    with pytest.raises(autoseg.ModelChoiceError, match="no such folder"):
        resolve("", str(tmp_path / "missing"))


# ---------------------------------------------------------------- propagate and accept, lung1 crop
@pytest.fixture(scope="module")
def lung_flow(lung1, tmp_path_factory):
    """The whole flow on one case, once: auto-segment (untrained model) -> paint marks far from the nodule
    -> one ROI box -> propagate -> one more point -> that point moved -> accept (twice). Every step that
    changes the case happens here and its result is kept, so the tests below only look at results and
    pass alone and in any order."""
    tmp = tmp_path_factory.mktemp("lung_flow")
    crop, label = lesion_crop(lung1)
    scene = make_scene()
    node = mrml_io.node_from_volume(crop, scene, "lung1 crop")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
    logic = segment_module.SemiSAMSegmentLogic()
    model_dir = tiny_model_dir(tmp / "model")
    auto = logic.autoSegment(node, model_dir, seg, "cpu")
    proposal = mrml_io.export_mask(seg, node)
    before = proposal.copy()
    before[0, :5, :5] = 1  # user marks on slices the nodule is not on: must survive propagation
    before[-1, -5:, -5:] = 1
    key = middle_slice(label)
    before[key, :3, -3:] = 1  # ... and one on the key slice, which propagation replaces
    mrml_io.import_mask(before, node, seg, {1: "lesion"})
    other = np.zeros_like(before)
    other[1:3, 10:12, 10:12] = 1
    mrml_io.import_mask(other, node, seg, {1: "vessel"})
    roi = roi_around(scene, crop, box_from_mask(label[key] > 0), key)
    # Background encoding of the slices the propagation will visit (key +-2), as the Widget starts it
    # after auto-segment: the propagation then encodes nothing itself.
    job = logic.precomputeEmbeddings(node, range(key - 2, key + 3), device="cpu")
    assert job.wait(timeout=600) and job.error is None and job.done == 5
    stages = []
    out = logic.propagate(
        node, seg, "lesion", roiNode=roi, device="cpu", progress=lambda f, s: stages.append((f, s))
    )
    after = mrml_io.export_mask(seg, node, [out.segment_id])
    review = review_table.read_review(seg)  # re-ranked by this propagation
    # A positive point on the nodule one slice up, then the same point moved by one voxel.
    encoded_before_point = out.slices_encoded
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "corrections")
    j, i = np.argwhere(label[key + 1] > 0).mean(axis=0).round().astype(int)
    points.AddControlPoint(*crop.voxel_to_ras([i, j, key + 1]))
    again = logic.propagate(node, seg, "lesion", pointsNode=points, roiNode=roi, device="cpu")
    again_mask = mrml_io.export_mask(seg, node, [again.segment_id])
    points.SetNthControlPointPosition(0, *crop.voxel_to_ras([i + 1, j, key + 1]))
    moved = logic.propagate(node, seg, "lesion", pointsNode=points, roiNode=roi, device="cpu")
    # Accept (the case ends), then accept again: a new case without the first one's prompts or proposal.
    store_dir = tmp / "store"
    accepted = mrml_io.export_mask(seg, node)  # label n = n-th segment: lesion 1, vessel 2
    case_id = logic.accept(node, seg, str(store_dir), {"annotator": "JD", "notes": "test"})
    second_id = logic.accept(node, seg, str(store_dir), None)
    return dict(
        encoded_before_point=encoded_before_point,
        again=again,
        again_mask=again_mask,
        moved=moved,
        store_dir=store_dir,
        accepted=accepted,
        case_id=case_id,
        second_id=second_id,
        scene=scene,
        node=node,
        seg=seg,
        logic=logic,
        label=label,
        key=key,
        roi=roi,
        out=out,
        review=review,
        auto=auto,
        proposal=proposal,
        before=before,
        other=other,
        after=after,
        stages=stages,
        tmp=tmp,
        crop=crop,
    )


def test_propagate_from_an_roi_segments_the_nodule(lung_flow):
    out, label, after = lung_flow["out"], lung_flow["label"], lung_flow["after"]
    assert out.axis == "axial" and out.key_slices == [lung_flow["key"]]
    lo, hi = out.slice_range
    # The whole nodule lies in the range, so this is the Dice against the full label (the marks outside
    # the range are the user's, checked in the next test).
    assert not label[:lo].any() and not label[hi + 1 :].any()
    d = dice(after[lo : hi + 1], label[lo : hi + 1])
    assert d > 0.6, (d, out)
    assert out.slices == [lung_flow["key"] - 1, lung_flow["key"], lung_flow["key"] + 1], out.stops
    assert lung_flow["stages"][-1] == (1.0, "writing the segment")
    assert out.slices_encoded == 0  # all five came from the background precompute
    lo, hi = out.slice_range
    assert f"segment 'lesion' replaced in {len(out.replaced)} of slices {lo}..{hi}" in out.describe("lesion")


def test_next_uncertain_slice_goes_first_to_the_least_confident_propagated_slice(lung_flow):
    """After an axial Propagate the review order starts with the slices it answered (key slices aside),
    lowest predicted IoU first, then the specialist's ranking of the other slices, in its order."""
    out, auto, review, seg = (lung_flow[k] for k in ("out", "auto", "review", "seg"))
    answered = sorted((s for s in out.slices if s not in out.key_slices), key=lambda s: out.confidence[s])
    assert len(answered) == 2
    assert review.slices == answered + [k for k in auto.review_order if k not in answered]
    assert review.source[:2] == ["generalist", "generalist"] and set(review.source[2:]) == {"specialist"}
    assert review.uncertainty[:2] == pytest.approx([1 - out.confidence[s] for s in answered], abs=1e-6)
    assert review.uncertainty[0] >= review.uncertainty[1]
    assert np.isfinite(review.uncertainty).all()  # the specialist's values were read back from the table
    table = seg.GetNodeReference(review_table.REVIEW_TABLE_ROLE).GetTable()
    assert table.GetValueByName(0, "source").ToString() == "generalist"


def test_slices_outside_the_propagated_range_keep_what_they_had(lung_flow):
    out, before, after = lung_flow["out"], lung_flow["before"], lung_flow["after"]
    lo, hi = out.slice_range
    assert 0 < lo and hi < before.shape[0] - 1, out.slice_range  # there are slices outside to check
    assert np.array_equal(after[:lo], before[:lo]) and np.array_equal(after[hi + 1 :], before[hi + 1 :])
    assert after[0, :5, :5].all() and after[-1, -5:, -5:].all()
    # Inside the range the propagated mask replaced the mark.
    assert not after[lung_flow["key"], :3, -3:].any()
    seg, node = lung_flow["seg"], lung_flow["node"]
    vessel = seg.GetSegmentation().GetSegmentIdBySegmentName("vessel")
    assert np.array_equal(mrml_io.export_mask(seg, node, [vessel]), lung_flow["other"])  # other segment kept


def test_a_new_point_adds_one_prompt_to_the_kept_state(lung_flow):
    """A positive point on the nodule one slice up: the propagation state is kept (one prompt added, no
    slice encoded again); moving the point rebuilds the state but reuses the cached embeddings."""
    again, moved, key, label = (lung_flow[k] for k in ("again", "moved", "key", "label"))
    assert again.added_prompts == 1 and not again.rebuilt
    assert again.key_slices == [key, key + 1] and again.slices_encoded == lung_flow["encoded_before_point"]
    lo, hi = again.slice_range
    assert dice(lung_flow["again_mask"][lo : hi + 1], label[lo : hi + 1]) > 0.6
    assert np.array_equal(lung_flow["again_mask"][0], lung_flow["before"][0])
    assert moved.rebuilt and moved.added_prompts == 2
    # a new state: every whole slice from the Logic's embedding cache; at most a key slice's closer view
    # is new (its box comes from the segment, which the last propagation changed)
    assert moved.slices_encoded <= len(moved.key_slices)


@pytest.mark.parametrize("at", ["propagating", "writing"])
def test_a_cancelled_propagation_changes_nothing_and_the_next_one_completes(lung_flow, at):
    """Cancel in the progress dialog (its ``report`` raises) at the first propagated slice, or at the last
    report: the segment is untouched; pressing Propagate again gives what an uncancelled run gave."""
    logic, scene, crop, roi, before = (lung_flow[k] for k in ("logic", "scene", "crop", "roi", "before"))
    node = mrml_io.node_from_volume(crop, scene, f"lung1 crop, cancelled at {at}")  # its own case
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"cancelled at {at}")
    mrml_io.import_mask(before, node, seg, {1: "lesion"})
    stages = []

    def cancel(fraction, stage):
        stages.append(stage)
        if stage.startswith(at):
            raise Cancelled("Propagate")

    with pytest.raises(Cancelled):
        logic.propagate(node, seg, "lesion", roiNode=roi, device="cpu", progress=cancel)
    assert stages[-1].startswith(at) and len(stages) == (1 if at == "propagating" else 5), stages
    assert np.array_equal(mrml_io.export_mask(seg, node), before)
    out = logic.propagate(node, seg, "lesion", roiNode=roi, device="cpu")
    # slices_encoded counts over both calls: each of the 5 slices visited (key, 2 neighbours, 2 where the
    # tracks stopped) was encoded once; what the cancelled call encoded was kept, not encoded again.
    assert out.slices == lung_flow["out"].slices and out.slices_encoded == 5
    assert np.array_equal(mrml_io.export_mask(seg, node, [out.segment_id]), lung_flow["after"])


def test_a_failed_background_encoding_is_reported(lung_flow):
    """The Widget shows ``precomputeProblem`` of its background job (when it ends, or at the next
    Propagate): a real job of the real LiteMedSAM that fails at a slice beyond the volume."""
    from semisam.generalists.cache import SliceEncoder

    logic = lung_flow["logic"]
    assert logic.precomputeProblem(None) is None
    n = lung_flow["crop"].shape[0]
    model = logic.generalistModel("litemedsam", "", "cpu")
    job = SliceEncoder(model, lung_flow["crop"].array, "axial", None).precompute([n])
    assert job.wait(timeout=60) and job.error is not None
    assert logic.precomputeProblem(job) == (
        f"Background slice encoding stopped after 0 of 1 slices (IndexError: {job.error}); Propagate "
        "encodes the slices it needs."
    )
    ok = logic.precomputeEmbeddings(lung_flow["node"], [lung_flow["key"]], device="cpu")
    assert ok.wait(timeout=600) and logic.precomputeProblem(ok) is None


def test_accept_stores_the_case_with_its_provenance(lung_flow):
    store = LabeledStore(lung_flow["store_dir"])
    case_id, accepted = lung_flow["case_id"], lung_flow["accepted"]
    assert store.labels == {0: "background", 1: "lesion", 2: "vessel"}
    case = store.read_case(case_id)
    assert np.array_equal(case.mask.array, accepted)
    assert case.image.same_grid(lung_flow["crop"]) and np.array_equal(
        case.image.array, lung_flow["crop"].array
    )
    prov = case.record.provenance
    assert prov.annotator == "JD" and prov.notes == "test" and prov.tool == "SemiSAMSegment"
    assert prov.prompts == {"box": 1, "point+": 2}  # the moved point counts as a second one
    assert prov.model_version == lung_flow["auto"].model_version
    assert prov.model_version.startswith("folder:")
    assert prov.proposal_dice == pytest.approx(dice(lung_flow["proposal"], accepted), abs=1e-6)
    assert prov.seconds is not None and prov.seconds >= 0
    on_disk = json.loads((store.case_dir(case_id) / "case.json").read_text())
    assert on_disk["provenance"]["n_prompts"] == 3
    # The case ended: the second accept is a new case without the first one's prompts or proposal.
    second = lung_flow["second_id"]
    assert second != case_id and store.record(second).provenance.prompts == {}
    assert store.record(second).provenance.proposal_dice is None


# ------------------------------------------------------------------------ off the GUI thread
def test_the_worker_path_of_propagate_gives_the_synchronous_mask(lung_flow):
    """Propagate as the Widget runs it (prepare on the main thread, compute on a worker thread, write on
    the main thread after polling) writes exactly the mask of the synchronous call; meanwhile the main
    thread is free (it keeps polling) and nothing reaches the scene before the apply step."""
    import time

    logic, node, roi, scene = (lung_flow[k] for k in ("logic", "node", "roi", "scene"))
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "worker vs sync")
    worker = logic.startPropagate(node, seg, "lesion worker", None, roi, device="cpu")
    polls = 0
    while not worker.poll().finished:  # what the Widget's QTimer does every 100 ms
        polls += 1
        assert mrml_io.segment_ids(seg) == []  # the worker never writes to MRML
        time.sleep(0.01)
    status = worker.poll()
    assert status.state is WorkerState.done, worker.error
    assert status.fraction == 1.0 and status.stage == "writing the segment"
    threaded = logic.applyPropagate(worker.result)
    synchronous = logic.propagate(node, seg, "lesion sync", roiNode=roi, device="cpu")
    got = mrml_io.export_mask(seg, node, [threaded.segment_id])
    expected = mrml_io.export_mask(seg, node, [synchronous.segment_id])
    assert got.any() and np.array_equal(got, expected)
    assert threaded.slice_range == synchronous.slice_range and threaded.slices == synchronous.slices
    assert polls > 0


def test_cancel_stops_a_worker_at_its_next_progress_report_and_writes_nothing(lung_flow):
    """Cancel while slices are being encoded (a new case: nothing cached): the worker ends at its next
    progress report, before the computation completes, and the segmentation is untouched. (How long that
    takes is a speed, measured against one encoder call by ``Testing/benchmarks/cancel_latency.py``, not
    asserted here: one LiteMedSAM encode is ~1 s on a free core and several times that on a loaded one.)"""
    import time

    logic, scene, crop, roi = (lung_flow[k] for k in ("logic", "scene", "crop", "roi"))
    node = mrml_io.node_from_volume(crop, scene, "lung1 crop, cancelled worker")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "cancelled worker")
    worker = logic.startPropagate(node, seg, "lesion", None, roi, device="cpu")
    while worker.poll().stage == "starting" and not worker.poll().finished:
        time.sleep(0.01)
    at_cancel = worker.poll()
    worker.cancel()
    status = worker.wait(timeout=120)
    assert not at_cancel.finished, "the worker finished before Cancel: nothing was tested"
    assert status.state is WorkerState.cancelled and worker.result is None
    assert status.fraction < 1.0, "the computation ran to the end instead of stopping"
    assert mrml_io.segment_ids(seg) == []


def test_background_slices_are_the_nearest_first(lung_flow):
    logic, node = lung_flow["logic"], lung_flow["node"]
    n = lung_flow["crop"].shape[0]
    assert logic.slicesAround(node, [3], 2) == [3, 2, 4, 1, 5]
    assert logic.slicesAround(node, [0], 2) == [0, 1, 2]
    assert set(logic.slicesAround(node, [n - 1], 50)) == set(range(n))
    assert logic.sliceIndexAt(node) == n // 2


# ------------------------------------------------------------------------ the module's self-test
@pytest.mark.slow
def test_the_modules_self_test_flows_pass_on_the_real_scene(tmp_path):
    """The flows SemiSAMSegmentTest runs inside Slicer, here on a slicer-core scene (slow: a second
    LiteMedSAM propagation). Run with ``pytest -m slow Testing/Python/test_slicer_segment_flow.py``."""
    import unittest

    from SemiSAMSegmentLib import selftest

    case = unittest.TestCase()
    scene = make_scene()
    logic = segment_module.SemiSAMSegmentLogic()
    (tmp_path / "mask").mkdir()
    selftest.mask_round_trip_flow(case, scene, logic, tmp_path / "mask")
    selftest.auto_segment_flow(case, scene, logic, tmp_path / "auto")
    selftest.propagate_and_accept_flow(case, scene, logic, tmp_path / "prop")
    selftest.worker_propagate_flow(case, scene, logic, tmp_path / "worker")


@pytest.mark.cuda
def test_the_logic_runs_on_cuda(lung1, tmp_path):
    """device="cuda" reaches both engines: the CUDA proposal matches the CPU one and the propagation is as
    good. Run with ``pytest -m cuda`` on a machine with a GPU."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    crop, label = lesion_crop(lung1)
    scene = make_scene()
    node = mrml_io.node_from_volume(crop, scene, "lung1 crop")
    model_dir = tiny_model_dir(tmp_path / "model")
    logic = segment_module.SemiSAMSegmentLogic()
    masks = {}
    for device in ("cpu", "cuda"):
        seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", device)
        logic.autoSegment(node, model_dir, seg, device)
        masks[device] = mrml_io.export_mask(seg, node)
    assert dice(masks["cpu"], masks["cuda"]) > 0.99
    key, roi = middle_roi(scene, crop, label)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "propagated")
    out = logic.propagate(node, seg, "lesion", roiNode=roi, device="cuda")
    assert dice(mrml_io.export_mask(seg, node, [out.segment_id]), label) > 0.6


def test_engine_buttons_are_enabled_only_when_they_can_run():
    from types import SimpleNamespace

    from SemiSAMSegmentLib.texts import ENABLED_TIPS, WHY_DISABLED, disabled_reasons

    p = SimpleNamespace(
        inputVolume=object(), outputSegmentation=object(), modelFolder="", storeFolder="",
        promptPoints=None, promptROI=None,
    )  # fmt: skip
    assert disabled_reasons(p, True, False) == {
        "autoSegmentButton": "model",
        "propagateButton": "prompts",
        "acceptButton": "store",
        "nextUncertainButton": "review",
    }
    p.storeFolder, p.promptROI = "/data/store", object()
    assert set(disabled_reasons(p, True, True).values()) == {None}
    assert disabled_reasons(p, False, True)["propagateButton"] == "packages"
    p.inputVolume = None
    assert disabled_reasons(p, True, True)["acceptButton"] == "inputs"
    assert set(ENABLED_TIPS) == set(disabled_reasons(p, True, True))
    assert all(WHY_DISABLED[r] for r in ("inputs", "packages", "model", "prompts", "store", "review"))
