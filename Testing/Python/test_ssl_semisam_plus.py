"""semisam_plus: prompts from the specialist's own prediction, real LiteMedSAM answers, cached pseudo-labels,
and a confidence-weighted loss that sends gradient into the student's weights."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from training_synth import ThresholdStudent

from semisam.model_folder import new_manifest
from semisam.training.methods.base import Batch, CaseData, StudentOutput, TrainContext
from semisam.training.methods.semi.embedding_store import EmbeddingStore
from semisam.training.methods.semi.prompting import PromptConfig, prompts_from_prediction
from semisam.training.methods.semi.pseudo_labels import PseudoLabeler, label_cases, weights_sha
from semisam.training.methods.semisam_plus import SemiSAMPlus, crop_targets


def _volume(seed: int = 0, depth: int = 2, size: int = 64) -> np.ndarray:
    """A bright ellipse (radius ~12 x 9 px) on a noisy darker background, ``(Z, Y, X)`` in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    vol = np.empty((depth, size, size), dtype=np.float32)
    for z in range(depth):
        inside = ((yy - 30) / 12.0) ** 2 + ((xx - 34) / 9.0) ** 2 <= 1.0
        vol[z] = np.where(inside, 0.8, 0.25) + rng.normal(0, 0.03, (size, size))
    return np.clip(vol, 0, 1)


@pytest.fixture(scope="module")
def litemedsam():
    from semisam.generalists import build_generalist

    return build_generalist("litemedsam", device="cpu")


def _ctx(tmp_path, student, cases, generalist, seed=0) -> TrainContext:
    cfg = types.SimpleNamespace(iterations=100, seed=seed, refresh_every=50, parts={})
    ctx = TrainContext(
        config=cfg,  # type: ignore[arg-type]
        device=torch.device("cpu"),
        student=student,
        manifest=new_manifest("mamba_unet", ["object"], "MR"),
        store=None,
        cache=tmp_path / "cache",
        unlabeled=cases,
        generalists=[("litemedsam", None)],
    )
    ctx._generalist_objects["litemedsam:"] = generalist  # built once per module (the same real model)
    return ctx


@pytest.fixture(scope="module")
def unlabeled_cases():
    # Unlabeled scans carry no mask at all: nothing can read a ground truth.
    return [CaseData(f"u{i}", torch.from_numpy(_volume(i)), None, sha256=f"sha-u{i}") for i in range(2)]


def test_prompts_follow_the_prediction_not_a_label():
    prob = np.zeros((48, 48), dtype=np.float32)
    prob[10:20, 12:30] = 0.97  # the specialist's component
    prob[9, 12:30] = 0.3  # an uncertain rim
    rounds = prompts_from_prediction(prob, PromptConfig(rounds=3), np.random.default_rng(0))
    assert len(rounds) == 3 and all(len(r) == 1 for r in rounds)
    x0, y0, x1, y1 = rounds[0][0].box
    assert x0 < 12 and y0 < 10 and x1 > 29 and y1 > 19  # box with a margin around the component
    assert rounds[0][0].points is None  # round 0: box only
    for r in rounds[1:]:
        p = r[0]
        assert p.mask is None  # never a mask prompt: nothing leaks between samples
        for (x, y), lab in zip(p.points, p.point_labels, strict=True):
            assert (prob[int(y), int(x)] >= 0.9) == bool(lab)  # positives on confident foreground only
    moved = np.roll(prob, 15, axis=1)  # another prediction -> other prompts
    assert (
        prompts_from_prediction(moved, PromptConfig(), np.random.default_rng(0))[0][0].box != rounds[0][0].box
    )
    assert prompts_from_prediction(np.zeros_like(prob), PromptConfig(), np.random.default_rng(0)) == []
    assert (
        prompts_from_prediction(np.ones_like(prob), PromptConfig(), np.random.default_rng(0)) == []
    )  # flooded


def test_pseudo_label_from_real_litemedsam_and_cache_hit(tmp_path, unlabeled_cases, litemedsam):
    g = litemedsam
    student = ThresholdStudent()
    emb = EmbeddingStore(tmp_path / "emb")
    lab = PseudoLabeler([g], emb, tmp_path / "pl", PromptConfig(rounds=2))
    pls = label_cases(lab, student, unlabeled_cases[:1], torch.device("cpu"))
    pl = pls[0]
    assert not pl.from_cache and pl.prompted.all()
    truth = _volume(0) > 0.5
    dice = 2 * np.logical_and(pl.label > 0, truth).sum() / ((pl.label > 0).sum() + truth.sum())
    assert dice > 0.8, dice  # the generalist found the object the specialist pointed at
    assert 0 < pl.weight.max() <= 1 and pl.weight[pl.label > 0].mean() > 0.3
    assert emb.encoded == 2 and lab.decoder_calls > 0

    # Second run, same specialist weights: pseudo-labels come from disk, nothing is encoded or decoded.
    emb2 = EmbeddingStore(tmp_path / "emb")
    lab2 = PseudoLabeler([g], emb2, tmp_path / "pl", PromptConfig(rounds=2))
    again = label_cases(lab2, student, unlabeled_cases[:1], torch.device("cpu"))[0]
    assert again.from_cache and emb2.encoded == 0 and lab2.decoder_calls == 0
    np.testing.assert_array_equal(again.label, pl.label)

    # A changed specialist is another key: new pseudo-labels, but the slice embeddings are reused.
    with torch.no_grad():
        student.conv.bias[1] = -9.0
    lab3 = PseudoLabeler([g], emb2, tmp_path / "pl", PromptConfig(rounds=2))
    third = label_cases(lab3, student, unlabeled_cases[:1], torch.device("cpu"))[0]
    assert not third.from_cache and lab3.decoder_calls > 0 and emb2.encoded == 0 and emb2.hits >= 2


def test_a_small_structure_is_answered_through_a_closer_view(tmp_path, litemedsam):
    """On a 256 px slice a 14 x 10 px structure is a few cells of the whole slice's embedding: with
    ``views`` (the default) the specialist's box is also answered through a view around it, as
    Propagate's key slices are, and the answer that fills the box better is the pseudo-label."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:256, :256]
    inside = ((yy - 120) / 7.0) ** 2 + ((xx - 140) / 5.0) ** 2 <= 1.0
    image = np.stack(
        [np.clip(np.where(inside, 0.8, 0.3) + rng.normal(0, 0.03, (256, 256)), 0, 1) for _ in "ab"]
    )
    prob = np.zeros((2, 2, 256, 256), dtype=np.float32)
    prob[1][:, inside] = 0.95
    prob[0] = 1 - prob[1]
    out = {}
    for views in (False, True):
        emb = EmbeddingStore(tmp_path / f"emb{views}")
        lab = PseudoLabeler([litemedsam], emb, None, PromptConfig(rounds=1, views=views))
        pl = lab.label_case("u0", "sha", image.astype(np.float32), prob, "spec")
        d = 2 * np.logical_and(pl.label[0] > 0, inside).sum() / ((pl.label[0] > 0).sum() + inside.sum())
        out[views] = (float(d), emb.encoded, lab.decoder_calls)
    assert out[False][1] == 2 and out[True][1] == 4, out  # one view per slice, encoded once
    assert out[True][2] == 2 * out[False][2], out  # the view's answer is a second decoder call
    assert out[True][0] >= out[False][0] and out[True][0] > 0.8, out


def test_semisam_plus_loss_sends_gradient_into_the_student(tmp_path, unlabeled_cases, litemedsam):
    student = ThresholdStudent()
    ctx = _ctx(tmp_path, student, unlabeled_cases, litemedsam)
    part = SemiSAMPlus({"start": 0, "rampup": 0, "rounds": 2})
    part.setup(ctx)
    # Batch rows: crops of the unlabeled cases' centre slices; the student's logits for them.
    u_index = [(0, (1, 8, 8)), (1, (0, 0, 0))]
    xu = torch.stack([unlabeled_cases[c].image[z, y : y + 48, x : x + 48] for c, (z, y, x) in u_index])[
        :, None
    ]
    with torch.no_grad():  # make the student disagree with the pseudo-label a little, so there is a loss
        student.conv.bias[1] = -12.0
    logits_u = student(xu)
    batch = Batch(x=xu[:0], y=torch.zeros(0, 48, 48, dtype=torch.long), xu=xu, u_index=u_index)
    terms = part.losses(ctx, batch, StudentOutput(logits=logits_u[:0], logits_u=logits_u), iteration=0)
    assert set(terms) == {"pseudo"} and terms["pseudo"].item() > 0
    terms["pseudo"].backward()
    # A real gradient, not the ~1e-16 that a loss divided by itself (L / (L + 1e-16)) would leave.
    assert student.conv.weight.grad is not None and student.conv.weight.grad.abs().sum() > 1e-4
    assert part.history[0]["teaching_slices"] > 0

    # The targets are exactly the cached pseudo-label crops.
    target, weight = crop_targets(part.pseudo, u_index, (48, 48))
    np.testing.assert_array_equal(target[0].numpy(), part.pseudo[0].label[1, 8:56, 8:56])

    # Before `start` the part teaches nothing and makes no pseudo-labels (an untrained specialist).
    late = SemiSAMPlus({"start": 50})
    late.setup(_ctx(tmp_path, ThresholdStudent(), unlabeled_cases, litemedsam))
    t = late.losses(ctx, batch, StudentOutput(logits=logits_u[:0], logits_u=logits_u.detach()), iteration=10)
    assert late.pseudo is None and float(t["pseudo"]) == 0.0


def test_weights_sha_tracks_the_weights():
    a, b = ThresholdStudent(), ThresholdStudent()
    assert weights_sha(a) == weights_sha(b)
    with torch.no_grad():
        b.conv.weight[1, 0] += 1e-3
    assert weights_sha(a) != weights_sha(b)


def test_prompts_come_from_coherent_3d_components_only():
    from semisam.training.methods.semi.prompting import coherence, main_components_mask

    cfg = PromptConfig()
    prob = np.zeros((12, 40, 60), dtype=np.float32)
    prob[3:9, 10:20, 5:15] = 0.95  # left structure: 600 voxels over 6 slices
    prob[3:9, 10:20, 40:49] = 0.95  # its mirror image: 540 voxels
    prob[5, 30:37, 25:32] = 0.95  # a 49-voxel blob on one slice only
    prob[1:4, 32:36, 52:56] = 0.95  # a 48-voxel blob over 3 slices (< 25 % of the largest)
    keep = main_components_mask(prob, cfg)
    assert keep[4, 12, 8] and keep[4, 12, 45]  # both parts of a bilateral structure
    assert not keep[5, 33, 28] and not keep[2, 34, 54]  # one-slice speck and small blob dropped
    assert coherence(prob, cfg) == pytest.approx(1140 / (1140 + 49 + 48))
    specks = np.zeros_like(prob)
    specks[::2, ::6, ::6] = 0.95  # what an untrained specialist predicts: scattered single voxels
    assert coherence(specks, cfg) == 0.0
    assert coherence(np.zeros_like(prob), cfg) == 1.0


class _Generalist:
    """A real stand-in for a promptable model whose answer is a fixed disc, whatever the prompt (so the
    case-agreement gate is tested without depending on what LiteMedSAM answers)."""

    name = "disc"

    def __init__(self, centre: tuple[int, int], radius: float, shape=(64, 64)) -> None:
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        self.disc = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) <= radius**2
        self.identity = f"disc|{centre}|{radius}"
        self.encodes = 0

    def predict(self, emb, prompt):
        return types.SimpleNamespace(logits=np.where(self.disc, 8.0, -8.0).astype(np.float32), score=0.9)


class _Encoder:
    """The labeler's embedding source for :class:`_Generalist` (nothing to cache: it has no encoder)."""

    encoded = hits = 0

    def get_or_encode(self, g, image):
        g.encodes += 1
        return types.SimpleNamespace(extras={})  # an embedding with nothing in it: the stub ignores it

    def predict(self, emb, prompt):
        return types.SimpleNamespace(logits=np.where(self.disc, 8.0, -8.0).astype(np.float32), score=0.9)


def _labeler(tmp_path, g, **conf):
    from semisam.training.methods.semi.pseudo_labels import ConfidenceConfig

    return PseudoLabeler([g], _Encoder(), None, PromptConfig(rounds=2), ConfidenceConfig(**conf))


def test_a_specialist_that_has_not_localised_prompts_nothing(tmp_path):
    g = _Generalist((30, 34), 10)
    image = _volume(0, depth=4)
    prob = np.zeros((2, 4, 64, 64), dtype=np.float32)
    for i in range(10):  # ten similar blobs scattered over the slab: only 4 are main components
        y, x = 4 + 6 * (i % 5) + 20 * (i // 5), 4 + 12 * (i % 5)
        prob[1, 1:3, y : y + 4, x : x + 4] = 0.95
    prob[0] = 1 - prob[1]
    pl = _labeler(tmp_path, g).label_case("u0", "sha", image, prob, "spec")
    assert not pl.prompted.any() and pl.weight.max() == 0 and g.encodes == 0
    assert pl.stats["coherence"] == [pytest.approx(0.4)]
    # The same specks plus a solid structure: localised (coherence >= 0.6), prompted.
    prob[1, :, 22:38, 26:42] = 0.95
    prob[0] = 1 - prob[1]
    pl = _labeler(tmp_path, g).label_case("u0", "sha", image, prob, "spec2")
    assert pl.prompted.any() and pl.weight.max() > 0 and pl.stats["coherence"][0] >= 0.6


def test_a_generalist_answer_that_disagrees_with_the_prompt_does_not_teach(tmp_path):
    image = _volume(0, depth=4)
    prob = np.zeros((2, 4, 64, 64), dtype=np.float32)
    prob[1, :, 22:38, 26:42] = 0.95  # the specialist's structure: a 16 x 16 square at (30, 34)
    prob[0] = 1 - prob[1]
    agree = _labeler(tmp_path, _Generalist((30, 34), 9)).label_case("u0", "sha", image, prob, "s")
    assert agree.weight.max() > 0 and not agree.stats["gated"]
    # An answer elsewhere (what a prompt made from noise gets): the whole case gets weight 0.
    off = _labeler(tmp_path, _Generalist((30, 50), 9), min_agreement=0.0).label_case(
        "u0", "sha", image, prob, "s"
    )
    assert off.stats["gated"] and off.weight.max() == 0
    assert off.stats["case_agreement"][0] < 0.5


def test_rampup_starts_when_the_first_pseudo_label_teaches(tmp_path, unlabeled_cases, litemedsam):
    from semisam.training.losses import sigmoid_rampup

    student = ThresholdStudent()
    with torch.no_grad():
        student.conv.bias[1] = -30.0  # predicts nothing yet: no prompt, no pseudo-label teaches
    ctx = _ctx(tmp_path, student, unlabeled_cases, litemedsam)
    part = SemiSAMPlus({"start": 0, "rampup": 100, "rounds": 2, "refresh_every": 10})
    part.setup(ctx)
    u_index = [(0, (1, 8, 8))]
    xu = unlabeled_cases[0].image[1, 8:56, 8:56][None, None]
    logits_u = torch.stack([torch.zeros(48, 48), torch.full((48, 48), -1.0)])[None]  # a fixed answer
    batch = Batch(x=xu[:0], y=torch.zeros(0, 48, 48, dtype=torch.long), xu=xu, u_index=u_index)
    out = StudentOutput(logits=logits_u[:0], logits_u=logits_u)
    assert float(part.losses(ctx, batch, out, iteration=0)["pseudo"]) == 0.0
    assert part.teach_start is None and part.history[-1]["teaching_slices"] == 0
    with torch.no_grad():
        student.conv.bias[1] = -10.0  # now it localises the object
    first = float(part.losses(ctx, batch, out, iteration=30)["pseudo"])
    assert part.teach_start == 30
    full = float(part.losses(ctx, batch, out, iteration=500)["pseudo"])
    # The ramp runs from the first teaching refresh (30), not from `start` (0).
    assert first / full == pytest.approx(sigmoid_rampup(0, 100), rel=1e-3)
    assert part.state_dict()["teach_start"] == 30


def test_consensus_teaches_only_where_generalist_and_specialist_agree(tmp_path):
    image = _volume(0, depth=4)
    prob = np.zeros((2, 4, 64, 64), dtype=np.float32)
    prob[1, :, 22:38, 26:42] = 0.95  # the specialist's square
    prob[0] = 1 - prob[1]
    g = _Generalist((30, 34), 9)  # the generalist's disc: inside the square but not filling it
    plain = _labeler(tmp_path, g).label_case("u0", "sha", image, prob, "s")
    both = _labeler(tmp_path, g, consensus=True).label_case("u0", "sha", image, prob, "s")
    square = prob[1] >= 0.5
    disagree = (plain.label > 0) != square
    assert disagree[plain.prompted].any() and (plain.weight[disagree] > 0).any()
    assert (both.weight[disagree] == 0).all()
    agree = ~disagree & plain.prompted[:, None, None]
    assert np.array_equal(both.weight[agree], plain.weight[agree])
