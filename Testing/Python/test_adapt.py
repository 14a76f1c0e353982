"""``semisam adapt``: the generalist's decoder learns the store's structure (tiny real LiteMedSAM
architecture, random weights: the pipeline, the files and the refusals; quality is a benchmark's)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from tiny_generalists import tiny_litemedsam
from training_synth import child_env, make_store, synthetic_case

from semisam.adapt.decoder import bce_term, dice_term, empty_term, iou_term, sample_loss, trainable_parameters
from semisam.adapt.job import AdaptConfig, AdaptError, Embeddings, adapt, fine_tune, make_samples, open_cases
from semisam.adapt.samples import EMPTY_NEIGHBOURS, case_samples, jitter_box
from semisam.adapt.versions import GeneralistRegistry, GeneralistVersionError, apply_version, read_manifest
from semisam.generalists import SlicePrompt
from semisam.store import LabeledStore
from semisam.training.methods.semi.embedding_store import EmbeddingStore

FAST = AdaptConfig(steps_per_case=2, min_steps=2, max_steps=4, batch=2, device="cpu")


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return tiny_litemedsam(seed=0)


def test_samples_are_user_boxes_on_every_structure_slice_and_empty_neighbours():
    _, label = synthetic_case(1, (24, 160, 160))
    samples = case_samples(0, label, np.random.default_rng(0))
    on = {int(k) for k in np.flatnonzero(label.reshape(24, -1).any(1))}
    assert {s.slice for s in samples if not s.empty} == on
    empty = [s for s in samples if s.empty]
    assert {s.slice for s in empty} == {min(on) - d for d in range(1, EMPTY_NEIGHBOURS + 1)} | {
        max(on) + d for d in range(1, EMPTY_NEIGHBOURS + 1)
    }
    # small structure in a 160 px slice: every box is also taught through the product's view
    assert any(s.view is not None for s in samples) and any(s.view is None for s in samples)
    for s in samples:
        if not s.empty:
            ys, xs = np.nonzero(s.target)
            x0, y0, x1, y1 = s.box
            w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
            assert abs(x0 - xs.min()) <= max(1, round(0.1 * w)) and abs(y1 - ys.max()) <= max(
                1, round(0.1 * h)
            )


def test_lookalike_boxes_sit_off_the_structure_on_the_tissue_most_like_it():
    from semisam.adapt.samples import LOOKALIKE_EVERY, LOOKALIKE_MARGIN, lookalike_box

    image = np.full((80, 80), 0.1, np.float32)
    label = np.zeros((80, 80), bool)
    label[30:40, 30:40] = True
    image[30:40, 30:40] = 0.6  # the structure
    image[30:40, 52:62] = 0.62  # a look-alike, 12 px to its right
    image[10:20, 30:40] = 0.9  # a brighter neighbour above: not alike
    assert lookalike_box(image, label, (30, 30, 39, 39)) == (52, 30, 61, 39)
    image[30:40, 52:62] = 0.1  # without the look-alike: the brighter neighbour is nearest in intensity
    x0, y0, x1, y1 = lookalike_box(image, label, (30, 30, 39, 39))
    assert (x1 - x0, y1 - y0) == (9, 9)
    near = np.zeros_like(label)
    near[30 - LOOKALIKE_MARGIN : 40 + LOOKALIKE_MARGIN, 30 - LOOKALIKE_MARGIN : 40 + LOOKALIKE_MARGIN] = True
    assert not near[y0 : y1 + 1, x0 : x1 + 1].any()  # never over the structure or its margin
    assert lookalike_box(image, np.ones_like(label), (30, 30, 39, 39)) is None  # nowhere off it

    # In a case: on every LOOKALIKE_EVERY-th structure slice, an empty target, never overlapping the part.
    vol, lab = synthetic_case(1, (24, 160, 160))
    img = (vol.array - vol.array.min()) / np.ptp(vol.array)
    samples = case_samples(0, lab, np.random.default_rng(0), image=lambda k: img[k])
    alike = [s for s in samples if s.kind == "lookalike"]
    on = np.flatnonzero(lab.reshape(24, -1).any(1))
    assert alike and all(s.empty for s in alike)
    assert {s.slice for s in alike} <= set(on.tolist())
    assert len({s.slice for s in alike}) >= len(on) // LOOKALIKE_EVERY - 1
    for s in alike:
        x0, y0, x1, y1 = s.box
        assert not (lab[s.slice][y0 : y1 + 1, x0 : x1 + 1] > 0).all()
    # Without the slices: no look-alike, and every other box exactly as with them (the same jitter draws).
    plain = case_samples(0, lab, np.random.default_rng(0))
    assert not any(s.kind == "lookalike" for s in plain)
    assert [(s.slice, s.box, s.kind) for s in plain] == [
        (s.slice, s.box, s.kind) for s in samples if s.kind != "lookalike"
    ]
    # Another labeled structure as alike as can be is not "not here": avoid keeps the box off it too.
    image[30:40, 52:62] = 0.6
    other = np.zeros_like(label)
    other[30:40, 52:62] = True
    x0, y0, x1, y1 = lookalike_box(image, label | other, (30, 30, 39, 39))
    assert not other[y0 : y1 + 1, x0 : x1 + 1].any()
    two = np.stack([label, label])
    with_other = case_samples(
        0, two, np.random.default_rng(0), image=lambda k: image, avoid=np.stack([other, other])
    )
    assert any(s.kind == "lookalike" for s in with_other)
    for s in with_other:
        if s.kind == "lookalike":
            bx0, by0, bx1, by1 = s.box
            assert not other[by0 : by1 + 1, bx0 : bx1 + 1].any()


def test_track_boxes_are_a_neighbours_box_over_this_slices_structure():
    # Two parts that drift apart along Z; each slice's track box is a neighbour's part box grown by the
    # margin, and its target is the part(s) of this slice the box reaches: never empty, never the far part.
    label = np.zeros((6, 64, 64), bool)
    for k in range(1, 5):
        label[k, 20:30, 10 + k : 20 + k] = True  # drifts one column per slice
        label[k, 20:30, 40 : 42 + 4 * k] = True  # grows four columns per slice (more than the margin)
    plain = case_samples(0, label, np.random.default_rng(0))
    samples = case_samples(0, label, np.random.default_rng(0), track_margin_px=(2.0, 2.0))
    tracks = [s for s in samples if s.kind == "track"]
    assert not any(s.kind == "track" for s in plain)
    # every other box as without them (the same jitter draws come first)
    assert [(s.slice, s.box) for s in plain] == [(s.slice, s.box) for s in samples if s.kind != "track"]
    assert {s.slice for s in tracks} == {1, 2, 3, 4} and len(tracks) == 8  # one per neighbour part

    def near(box, g):  # within the jitter: up to 10 % of a side, at least 1 px
        jx, jy = max(1, round(0.1 * (g[2] - g[0] + 1))), max(1, round(0.1 * (g[3] - g[1] + 1)))
        return all(abs(u - v) <= t for u, v, t in zip(box, g, (jx, jy, jx, jy), strict=True))

    for s in tracks:
        assert s.view is None and not s.empty  # whole slice, as a track asks
        left = s.target[:, :32].any()
        assert left != s.target[:, 32:].any()  # one part: the box reaches this part only
        part = label[s.slice] & (np.arange(64)[None, :] < 32 if left else np.arange(64)[None, :] >= 32)
        assert (s.target == part).all()
        # a neighbour's part box grown by the margin (2 px), then jittered
        grown = []
        for j in (s.slice - 1, s.slice + 1):
            for half in (slice(0, 32), slice(32, 64)):
                ys, xs = np.nonzero(label[j][:, half])
                if len(xs):
                    xs = xs + half.start
                    grown.append((xs.min() - 2, ys.min() - 2, xs.max() + 2, ys.max() + 2))
        assert any(near(s.box, g) for g in grown)
    # where a part grows, some track box is narrower than the part it is asked for: what tracks must learn
    right = [s for s in tracks if s.target[:, 32:].any()]
    assert any(s.box[2] < np.nonzero(s.target)[1].max() for s in right)


def test_track_boxes_grow_by_the_engines_margin_in_each_axis_pixels():
    # 0.5 mm columns, 2 mm rows: the 2 mm margin is 4 px across and 1 px down, as a track grows its box.
    from semisam.adapt.job import Case
    from semisam.scan.intensity import IntensityWindow
    from semisam.scan.volume import Volume

    label = np.zeros((5, 40, 60), bool)
    label[1:4, 15:25, 20:30] = True  # 10 x 10 px on every slice: a neighbour's box is this slice's
    case = Case(
        "c", Volume(label.astype(np.float32), spacing=(0.5, 2.0, 3.0)), IntensityWindow(0.0, 1.0), label
    )
    tracks = [s for s in make_samples([case], 0, tracks=True)["c"] if s.kind == "track"]
    assert len(tracks) == 3 and not any(s.kind == "track" for s in make_samples([case], 0)["c"])
    for s in tracks:
        x0, y0, x1, y1 = s.box
        # grown by 2 x 4 px across and 2 x 1 px down, each side then jittered by up to 1 px
        assert 6 <= (x1 - x0 + 1) - 10 <= 10 and 0 <= (y1 - y0 + 1) - 10 <= 4


def test_jitter_stays_in_the_slice_and_keeps_a_box():
    rng = np.random.default_rng(0)
    for _ in range(200):
        x0, y0, x1, y1 = jitter_box((0, 0, 3, 2), (10, 12), rng)
        assert 0 <= x0 <= x1 <= 11 and 0 <= y0 <= y1 <= 9


def test_loss_terms():
    t = torch.zeros(8, 8)
    t[2:6, 2:6] = 1
    good, bad = (t * 20 - 10), -(t * 20 - 10)
    assert bce_term(good, t) < bce_term(bad, t)
    assert dice_term(good, t) < 0.05 < 0.9 < dice_term(bad, t)
    assert float(dice_term(bad, torch.zeros(8, 8))) == 0.0  # empty target: no overlap to score
    # an empty target: the box's mean foreground probability, whatever the frame's size
    assert float(empty_term(good, torch.zeros(8, 8), (2, 2, 5, 5))) > 0.99
    assert float(empty_term(bad, torch.zeros(8, 8), (2, 2, 5, 5))) < 0.01
    assert float(empty_term(good, t, (2, 2, 5, 5))) == 0.0  # not an empty target
    assert float(iou_term(torch.tensor(1.0), good, t)) == pytest.approx(0.0)
    assert float(iou_term(torch.tensor(1.0), bad, t)) == pytest.approx(1.0)
    # Nothing to find: the head is taught 0 (a track then refuses the answer and ends), empty answer or not.
    assert float(iou_term(torch.tensor(0.0), -torch.ones(8, 8), torch.zeros(8, 8))) == pytest.approx(0.0)
    assert float(iou_term(torch.tensor(1.0), torch.ones(8, 8), torch.zeros(8, 8))) == pytest.approx(1.0)


def test_only_the_decoder_learns_and_the_loss_falls(tmp_path, tiny):
    store = make_store(tmp_path / "s", n_train=1, n_val=0)
    _, train, _ = open_cases(store.root)
    samples = make_samples(train, 0)[train[0].case_id][:3]
    emb = Embeddings(tiny, train, EmbeddingStore(tmp_path / "cache"))
    before = {k: v.clone() for k, v in tiny.state_dict().items()}

    def loss() -> float:  # what it is taught: boxes, and boxes + a correction click
        return sum(float(sample_loss(tiny, emb(s), s, c)[0].detach()) for s in samples for c in (False, True))

    first = loss()
    cfg = AdaptConfig(steps_per_case=40, min_steps=40, max_steps=40, batch=3, lr=5e-3, device="cpu")
    fine_tune(tiny, samples, emb, cfg, 40, lambda e: None)
    last = loss()
    assert last < 0.8 * first, (first, last)  # 0.72 on this seed; 1.0 when nothing learns
    after = tiny.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("mask_decoder.") for k in changed)
    assert not any(p.requires_grad for p in tiny.parameters())


def test_a_correction_is_taught_on_the_box_and_the_annotators_click(tmp_path, tiny):
    """With ``correct``, the loss is that of the answer to the box plus the click the simulated annotator
    puts on the decoder's own box answer (one rule: :func:`semisam.clicks.error_point`)."""
    from semisam.adapt.decoder import correction_click, forward, seen_box, seen_target
    from semisam.clicks import error_point

    store = make_store(tmp_path / "s", n_train=1, n_val=0)
    _, train, _ = open_cases(store.root)
    samples = [s for s in make_samples(train, 0)[train[0].case_id] if not s.empty][:3]
    emb = Embeddings(tiny, train, EmbeddingStore(tmp_path / "cache"))
    changed = 0
    for s in samples:
        e, box, seen = emb(s), seen_box(s), seen_target(s)
        t = torch.as_tensor(seen, dtype=torch.float32)
        with torch.no_grad():
            box_only, _ = forward(tiny, e, box)
        click = correction_click(tiny, e, box, seen)
        assert click is not None and click == error_point(box_only.numpy() > 0, seen)
        with torch.no_grad():
            answered, _ = forward(tiny, e, box, click)
        _, terms = sample_loss(tiny, e, s, correct=True)
        assert terms["dice"] == pytest.approx(float(dice_term(answered, t)), abs=1e-5)
        assert sample_loss(tiny, e, s)[1]["dice"] == pytest.approx(float(dice_term(box_only, t)), abs=1e-5)
        changed += not torch.allclose(answered, box_only)
    assert changed == len(samples)  # the click reaches the decoder


def test_a_run_registers_a_version_that_loads_back(tmp_path, tiny):
    store = make_store(tmp_path / "s", n_train=2, n_val=1)
    events = []
    done = adapt(store.root, FAST, emit=events.append, model=tiny)
    assert [e["event"] for e in events][0] == "start" and events[-1] is done and done["event"] == "done"
    assert done["version"] == "v0001" and isinstance(done["promoted"], bool) and done["reason"]
    assert set(done["validation"]) == {"frozen", "adapted"}
    assert {"dice", "empty_fp_px", "spearman"} <= set(done["validation"]["adapted"])
    reg = GeneralistRegistry(LabeledStore(store.root))
    rec = reg.get("v0001")
    man = read_manifest(rec.path)
    assert man["arch"] == "litemedsam" and man["trained_on"] == store.train_ids()
    assert rec.evaluated_on == store.validation_ids()
    # the caller's model is left answering as the frozen generalist
    fresh = tiny_litemedsam(seed=0)
    img = np.random.default_rng(2).random((48, 48), dtype=np.float32)
    p = SlicePrompt(box=(10, 10, 30, 30))
    np.testing.assert_allclose(
        tiny.predict(tiny.encode(img), p).logits, fresh.predict(fresh.encode(img), p).logits
    )
    # applying the version changes the answers, not the embeddings' identity
    ident = fresh.identity
    apply_version(fresh, rec.path)
    assert fresh.identity == ident and fresh.generalist_version == "v0001"
    assert not np.allclose(
        tiny.predict(tiny.encode(img), p).logits, fresh.predict(fresh.encode(img), p).logits
    )


def test_a_version_from_another_base_or_damaged_is_refused(tmp_path, tiny):
    store = make_store(tmp_path / "s", n_train=1, n_val=1)
    adapt(store.root, FAST, model=tiny)
    folder = GeneralistRegistry(LabeledStore(store.root)).get("v0001").path
    other = tiny_litemedsam(seed=1)
    with pytest.raises(GeneralistVersionError, match="another litemedsam checkpoint"):
        apply_version(other, folder)
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(folder, copy)
    with open(copy / "weights.safetensors", "r+b") as f:
        f.seek(100)
        f.write(b"\0\0\0\0")
    with pytest.raises(GeneralistVersionError, match="sha256 differs"):
        apply_version(tiny, copy)
    (copy / "manifest.json").write_text("{")
    with pytest.raises(GeneralistVersionError, match="manifest.json: unreadable"):
        apply_version(tiny, copy)


def test_a_store_without_labeled_cases_is_one_clear_error(tmp_path):
    store = LabeledStore.create(tmp_path / "s", {1: "x"}, modality="CT")
    with pytest.raises(AdaptError, match="no labeled training case") as err:
        adapt(store.root, FAST)
    assert err.value.code == "no_labeled_case"
    out = subprocess.run(
        [sys.executable, "-m", "semisam", "adapt", str(store.root)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert out.returncode == 1
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert (
        last["event"] == "error" and last["code"] == "no_labeled_case" and "accept a case" in last["message"]
    )


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"lr": 0.0}, "lr"),
        ({"batch": 0}, "batch"),
        ({"min_steps": 9, "max_steps": 3}, "min_steps"),
        ({"click_share": 1.5}, "click_share"),
        ({"lookalikes": "yes"}, "lookalikes"),
    ],
)
def test_bad_settings_are_named(kwargs, field):
    with pytest.raises(AdaptError, match=field):
        AdaptConfig(**kwargs)


def test_only_sam_family_generalists_adapt(tmp_path):
    store = make_store(tmp_path / "s", n_train=1, n_val=1)

    class Opaque:
        name = "other"

    with pytest.raises(AdaptError, match="no SAM mask decoder"):
        adapt(store.root, FAST, model=Opaque())
    # No validation case: nothing could promote a version, so nothing is encoded or trained.
    bare = make_store(tmp_path / "b", n_train=2, n_val=0)
    with pytest.raises(AdaptError, match="no validation case") as err:
        adapt(bare.root, FAST, model=Opaque())
    assert err.value.code == "no_validation_case" and not (bare.root / "generalists").exists()
    assert trainable_parameters  # imported for the decoder tests above


def _cli(*argv, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "semisam", *argv],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout,
    )


def test_store_list_promote_and_rollback_of_generalist_versions(tmp_path, tiny):
    store = make_store(tmp_path / "s", n_train=1, n_val=1)
    adapt(store.root, FAST, model=tiny)
    adapt(store.root, FAST, model=tiny)
    out = _cli("store", "list", str(store.root))
    assert out.returncode == 0, out.stderr
    assert "generalist  v0001: adapted litemedsam decoder dice=" in out.stdout.replace("*", " ")
    listed = json.loads(_cli("store", "list", str(store.root), "--json").stdout)
    assert [v["version"] for v in listed["generalists"]] == ["v0001", "v0002"]
    for v in ("v0001", "v0002"):
        out = _cli("store", "promote", str(store.root), v, "--generalist", "--force")
        assert out.returncode == 0 and f"active generalist: {v}" in out.stdout, out.stderr
    out = _cli("store", "rollback", str(store.root), "--generalist")
    assert out.returncode == 0 and "active generalist: v0001 (rolled back)" in out.stdout
    assert GeneralistRegistry(LabeledStore(store.root)).active().version == "v0001"
    assert LabeledStore(store.root).models.active() is None  # the specialist's registry is untouched
    # Promotion off (semisam train --no-promote --adapt-generalist): registered, never made active.
    done = adapt(store.root, FAST, model=tiny, promote=False)
    assert not done["promoted"] and done["reason"].startswith("registered only")
    assert GeneralistRegistry(LabeledStore(store.root)).active().version == "v0001"
    assert done["version"] == "v0003"


def test_propagate_refuses_a_version_made_for_another_checkpoint(tmp_path, tiny, lung1):
    store = make_store(tmp_path / "s", n_train=1, n_val=1)
    adapt(store.root, FAST, model=tiny)
    folder = GeneralistRegistry(LabeledStore(store.root)).get("v0001").path
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"axis": "axial", "prompts": [{"slice": 33, "box": [206, 347, 229, 368]}]}))
    out = _cli(
        "propagate",
        str(lung1.image),
        "--prompts",
        str(prompts),
        "--output",
        str(tmp_path / "m.nii.gz"),
        "--generalist-version",
        str(folder),
        "--device",
        "cpu",
    )
    assert out.returncode == 1 and not (tmp_path / "m.nii.gz").exists()
    errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "made for another litemedsam checkpoint" in errors[0], out.stderr
    assert "Traceback" not in out.stderr


def test_view_samples_are_answered_in_slice_pixels(tmp_path, tiny):
    from semisam.adapt.evaluate import evaluate
    from semisam.adapt.job import Case
    from semisam.scan.intensity import IntensityWindow

    vol, label = synthetic_case(3, (24, 160, 160))
    case = Case("c", vol, IntensityWindow(-500.0, 300.0), label > 0)
    samples = make_samples([case], 0)["c"]
    assert any(s.view is not None for s in samples)
    emb = Embeddings(tiny, [case], EmbeddingStore(tmp_path / "cache"))
    scores = evaluate(tiny, {"c": (case.label, samples)}, emb)
    assert 0.0 <= scores["dice"] <= 1.0 and scores["empty_fp_px"] is not None
    # The empty neighbours are the 1st and 2nd slices beyond each end; their mean is the overall mean.
    by = scores["empty_fp_px_by_distance"]
    n = sum(1 for s in samples if s.kind == "beyond" and s.view is None)
    assert set(by) == {"1", "2"} and n == 4
    # The look-alike boxes (the case's slices are given) are scored apart from the ends.
    assert any(s.kind == "lookalike" for s in samples) and scores["lookalike_fp_px"] is not None
    assert not any(s.kind == "lookalike" for s in make_samples([case], 0, lookalikes=False)["c"])
    assert scores["empty_fp_px"] == pytest.approx((by["1"] + by["2"]) / 2, abs=0.06)
    # What a track keeps of it: answers with a predicted IoU under the engine's min_score count 0.
    assert 0.0 <= scores["empty_fp_px_kept"] <= scores["empty_fp_px"]
    # One correction click on each part's answer: scored, and never counted for a right answer.
    assert 0.0 <= scores["part_dice"] <= 1.0 and 0.0 <= scores["click_dice"] <= 1.0
    # Track boxes teach; they are scored by the propagations, never box by box.
    with_tracks = make_samples([case], 0, tracks=True)["c"]
    assert any(s.kind == "track" for s in with_tracks)
    assert evaluate(tiny, {"c": (case.label, with_tracks)}, emb) == scores
    assert scores["click_dice"] != scores["part_dice"]


def test_an_exported_decoder_is_set_aside_while_adapting_and_comes_back(tmp_path, tiny):
    """The onnxruntime decoder holds the frozen weights: validating through it would score the frozen
    generalist as the adapted one."""
    calls = []

    def exported(*args):  # stands in for the exported graph; must not answer during the run
        calls.append(args)
        raise AssertionError("the exported decoder answered while adapting")

    tiny.set_fast_decoder(exported, "onnxruntime")
    store = make_store(tmp_path / "s", n_train=1, n_val=1)
    done = adapt(store.root, FAST, model=tiny)
    assert done["event"] == "done" and calls == []
    assert tiny._fast_decoder is exported and tiny.decoder_backend == "onnxruntime"


def test_training_teaches_with_the_active_version_and_keys_pseudo_labels_on_it(tmp_path, tiny, caplog):
    from semisam.training.methods.base import _with_active_version
    from semisam.training.methods.semi.pseudo_labels import PseudoLabeler

    store = make_store(tmp_path / "s", n_train=1, n_val=1)
    frozen_key = PseudoLabeler([tiny_litemedsam(seed=0)], EmbeddingStore(tmp_path / "e"), None).settings_sha
    assert (
        _with_active_version(tiny_litemedsam(seed=0), LabeledStore(store.root)).__dict__.get(
            "generalist_version"
        )
        is None
    )  # nothing promoted: the frozen generalist teaches
    adapt(store.root, FAST, model=tiny)
    reg = GeneralistRegistry(LabeledStore(store.root))
    reg.promote("v0001", require_better=False)
    from semisam.adapt.versions import active_version_path

    # a LiteMedSAM version is not another generalist's: SAM keeps answering as it is
    assert active_version_path(store.root, "sam") is None
    assert (
        active_version_path(store.root, "litemedsam")
        == reg.get("v0001").path
        == active_version_path(store.root)
    )
    taught = _with_active_version(tiny_litemedsam(seed=0), LabeledStore(store.root))
    assert taught.generalist_version == "v0001"
    # its pseudo-labels are cached apart from the frozen generalist's (same encoder, other decoder)
    assert PseudoLabeler([taught], EmbeddingStore(tmp_path / "e"), None).settings_sha != frozen_key
    other = _with_active_version(tiny_litemedsam(seed=1), LabeledStore(store.root))
    assert (
        getattr(other, "generalist_version", None) is None and "the frozen generalist teaches" in caplog.text
    )


def test_a_decoder_that_propagates_worse_is_not_promoted(tmp_path, tiny):
    """Better on every slice's box is not enough: a version whose 1-box propagation Dice on validation
    falls below the generalist answering today stays registered, not active."""
    from semisam.adapt.job import PROPAGATION_TOLERANCE, RANKING_TOLERANCE, register
    from semisam.adapt.versions import base_digest

    store = LabeledStore(make_store(tmp_path / "s", n_train=1, n_val=1).root)
    val = store.validation_ids()

    def scores(box: float, prop: float) -> dict:
        return {"dice": box, "per_case": {val[0]: box}, "propagation_1box": prop}

    worse = {"frozen": scores(0.75, 0.49), "adapted": scores(0.84, 0.10)}
    version, promoted, reason = register(store, tiny, store.train_ids(), val, worse, base_digest(tiny))
    assert not promoted and "1-box propagation Dice 0.49 -> 0.1" in reason
    assert GeneralistRegistry(store).active() is None and GeneralistRegistry(store).get(version)
    # Nor when corrections get worse: the one-click Dice of the box + the annotator's point.
    clicks = {
        "frozen": {**scores(0.75, 0.49), "click_dice": 0.80},
        "adapted": {**scores(0.84, 0.5), "click_dice": 0.7},
    }
    version, promoted, reason = register(store, tiny, store.train_ids(), val, clicks, base_digest(tiny))
    assert not promoted and "one-click Dice 0.8 -> 0.7" in reason
    # Nor when its predicted IoU ranks the answers worse: tracks end on it, the review is ordered by it.
    ranks = {
        "frozen": {**scores(0.75, 0.49), "spearman": 0.41},
        "adapted": {**scores(0.84, 0.55), "spearman": 0.25},
    }
    version, promoted, reason = register(store, tiny, store.train_ids(), val, ranks, base_digest(tiny))
    assert not promoted and "Spearman 0.41 -> 0.25" in reason and 0.25 < 0.41 - RANKING_TOLERANCE
    within = {
        "frozen": {**scores(0.75, 0.49), "spearman": 0.41},
        "adapted": {
            **scores(0.84, 0.49 - PROPAGATION_TOLERANCE / 2),
            "spearman": 0.41 - RANKING_TOLERANCE / 2,
        },
    }
    version, promoted, _ = register(store, tiny, store.train_ids(), val, within, base_digest(tiny))
    assert promoted and GeneralistRegistry(store).active().version == version


def test_validation_scores_the_one_box_propagation_of_each_decoder(tmp_path, tiny):
    store = make_store(tmp_path / "s", n_train=1, n_val=1)
    done = adapt(store.root, AdaptConfig(min_steps=2, max_steps=2, batch=2, device="cpu"), model=tiny)
    for which in ("frozen", "adapted"):
        p = done["validation"][which]["propagation_1box"]
        assert p is not None and 0.0 <= p <= 1.0, done["validation"]
    man = read_manifest(GeneralistRegistry(LabeledStore(store.root)).get(done["version"]).path)
    assert json.dumps(man)  # the scores it records stay plain JSON


def test_k_box_propagation_prompts_the_products_key_slices(tmp_path, tiny):
    """3 boxes on the key slices the product's rule picks, propagated; the per-case Dice is a real Dice
    of the propagated mask (a perfect model would score 1)."""
    from semisam.adapt.evaluate import propagation_dice
    from semisam.adapt.job import Case
    from semisam.generalists.cache import EmbeddingCache
    from semisam.scan.intensity import IntensityWindow

    vol, label = synthetic_case(3, (24, 96, 96))
    case = Case("c", vol, IntensityWindow(-500.0, 300.0), label > 0)
    caches = {"c": EmbeddingCache()}
    one = propagation_dice(tiny, {"c": case}, 0, caches, k=1)
    three = propagation_dice(tiny, {"c": case}, 0, caches, k=3)
    for p in (one, three):
        assert set(p["per_case"]) == {"c"} and 0.0 <= p["dice"] <= 1.0
    assert (
        propagation_dice(tiny, {"c": Case("c", vol, case.window, np.zeros_like(label, bool))})["per_case"]
        == {}
    )


def test_the_guards_propagation_score_averages_several_prompts(tiny):
    """Several draws: each case's score is the mean of its draws, draw 0 is the one-draw score, the odd
    draws box the middle slice (their Dice equals a one-draw score from the middle slice at that seed)."""
    from semisam.adapt.evaluate import part_box_rng, propagate_from_part_boxes, propagation_dice
    from semisam.adapt.job import PROPAGATION_DRAWS, Case
    from semisam.generalists.cache import EmbeddingCache
    from semisam.metrics import dice
    from semisam.propagation.simulate import key_slices, middle_slice
    from semisam.scan.intensity import IntensityWindow

    vol, label = synthetic_case(3, (24, 96, 96))
    # a structure whose largest slice is not its middle one: the two kinds of draw differ
    label[: key_slices(label > 0, 1)[0]] = 0  # the largest slice becomes the first
    truth = label > 0
    assert key_slices(truth, 1) != [middle_slice(truth)]
    case = Case("c", vol, IntensityWindow(-500.0, 300.0), truth)
    caches = {"c": EmbeddingCache()}
    many = propagation_dice(tiny, {"c": case}, 5, caches, draws=PROPAGATION_DRAWS)
    assert PROPAGATION_DRAWS >= 2 and len(many["per_draw"]["c"]) == PROPAGATION_DRAWS
    assert many["per_case"]["c"] == pytest.approx(np.mean(many["per_draw"]["c"]), abs=1e-4)
    assert many["per_draw"]["c"][0] == propagation_dice(tiny, {"c": case}, 5, caches)["per_case"]["c"]
    middle = propagate_from_part_boxes(
        tiny, vol, truth, [middle_slice(truth)], part_box_rng("c", 6), window=case.window, cache=caches["c"]
    )
    assert many["per_draw"]["c"][1] == round(float(dice(np.asarray(middle.mask) > 0, truth)), 4)
    with pytest.raises(ValueError, match="draws"):
        propagation_dice(tiny, {"c": case}, draws=0)
    stop = threading.Event()  # a cancel between two propagations ends the scoring there
    stop.set()
    assert (
        propagation_dice(tiny, {"c": case}, 5, caches, draws=PROPAGATION_DRAWS, cancel=stop)["per_draw"] == {}
    )
