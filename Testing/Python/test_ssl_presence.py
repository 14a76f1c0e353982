"""The presence probe: a linear probe on real LiteMedSAM embeddings, fitted on a labeled case, tells the
slices of an unlabeled scan that hold the structure from those that hold only neighbouring tissue; the
pseudo-labeler then refuses to prompt the latter even where the specialist predicts the structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from training_synth import ThresholdStudent

from semisam.training.methods.base import CaseData
from semisam.training.methods.semi.embedding_store import EmbeddingStore
from semisam.training.methods.semi.presence import PresenceConfig, PresenceProbe
from semisam.training.methods.semi.prompting import PromptConfig
from semisam.training.methods.semi.pseudo_labels import ConfidenceConfig, PseudoLabeler

SIZE = 64


def _scan(seed: int, first: int, last: int, depth: int = 10, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(Z, Y, X)`` image in [0, 1] and mask: a bright ellipse on slices ``first..last``; every other
    slice holds a neighbour of similar brightness and size but another shape (a thin bar) elsewhere."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image = np.empty((depth, SIZE, SIZE), dtype=np.float32)
    mask = np.zeros((depth, SIZE, SIZE), dtype=np.uint8)
    for z in range(depth):
        on = first <= z <= last
        ellipse = ((yy - 30 - shift) / 11.0) ** 2 + ((xx - 32 - shift) / 8.0) ** 2 <= 1.0
        bar = (np.abs(yy - 44 - shift) <= 2) & (np.abs(xx - 32) <= 20)
        image[z] = np.where(ellipse if on else bar, 0.8, 0.3) + rng.normal(0, 0.03, (SIZE, SIZE))
        mask[z] = ellipse if on else 0
    return np.clip(image, 0, 1), mask


@pytest.fixture(scope="module")
def litemedsam():
    from semisam.generalists import build_generalist

    return build_generalist("litemedsam", device="cpu")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, litemedsam):
    store = EmbeddingStore(tmp_path_factory.mktemp("emb"))
    image, mask = _scan(0, 3, 6)
    probe = PresenceProbe(litemedsam, store)
    probe.fit([CaseData("l0", torch.from_numpy(image), torch.from_numpy(mask))], n_classes=2)
    return probe, store


def test_probe_tells_slices_with_the_structure_from_slices_without(fitted):
    probe, store = fitted
    assert np.isfinite(probe.threshold).all() and len(probe.digest) == 64
    image, mask = _scan(1, 1, 4, shift=3)  # another scan: the structure on other slices, moved in-plane
    present = mask.reshape(len(mask), -1).any(1)
    absent = np.array([probe.absent(store.get_or_encode(probe.generalist, s))[0] for s in image])
    assert (absent == ~present).all(), (absent, present)


def test_a_class_never_absent_in_the_labeled_cases_gets_no_threshold(tmp_path, litemedsam):
    image, mask = _scan(0, 0, 9)  # on every slice: no confuser slice to calibrate against
    probe = PresenceProbe(litemedsam, EmbeddingStore(tmp_path / "emb"))
    probe.fit([CaseData("l0", torch.from_numpy(image), torch.from_numpy(mask))], n_classes=2)
    assert probe.threshold[0] == -np.inf
    one = [CaseData("l1", torch.from_numpy(image[4:5]), torch.from_numpy(mask[4:5]))]
    probe.fit(one, n_classes=2)  # one slice: nothing to cross-fit
    assert probe.threshold[0] == -np.inf
    with pytest.raises(ValueError, match="none was given"):
        probe.fit([], n_classes=2)


def test_a_backwards_threshold_is_dropped():
    # Slices that hold the class and slices near it that do not have the same cells: held-out presence is
    # equal, so a threshold would refuse the structure as often as its neighbours; there is none.
    probe = PresenceProbe.__new__(PresenceProbe)
    probe.config = PresenceConfig(steps=50)
    cell = torch.nn.functional.normalize(torch.arange(1.0, 9.0), dim=0)
    feats = cell.expand(16, 8).clone()
    cover = torch.zeros(16, 1)
    cover[:4] = 1.0
    slices = [(feats, cover if z in (2, 3, 4, 5) else torch.zeros(16, 1)) for z in range(8)]
    present = np.array([[z in (2, 3, 4, 5)] for z in range(8)])
    assert probe._calibrate(slices, present, np.ones_like(present))[0] == -np.inf


def test_only_sam_style_generalists_are_probed(tmp_path):
    with pytest.raises(ValueError, match="SAM-style"):
        PresenceProbe(object(), EmbeddingStore(tmp_path / "emb"))  # type: ignore[arg-type]


def test_pseudo_labeler_refuses_slices_the_probe_calls_empty(tmp_path, fitted):
    probe, store = fitted
    image, mask = _scan(2, 2, 5)
    # A specialist that predicts the structure on every slice (z-mislocalised above and below it).
    prob = np.zeros((2, *image.shape), dtype=np.float32)
    prob[1, :, 20:41, 25:40] = 0.95
    prob[0] = 1 - prob[1]
    labeler = PseudoLabeler(
        [probe.generalist], store, tmp_path, PromptConfig(rounds=1), ConfidenceConfig(absent_weight=0.5)
    )
    without = labeler.label_case("u0", "sha", image, prob, "spec")
    before = labeler.cache_path("u0", "sha", "spec")
    labeler.set_presence(probe)
    assert labeler.cache_path("u0", "sha", "spec") != before  # the probe is part of the cache key
    with_probe = labeler.label_case("u0", "sha", image, prob, "spec")
    present = mask.reshape(len(mask), -1).any(1)
    assert without.prompted.all() and without.stats["refused_slices"] == 0
    assert (with_probe.prompted == present).all()
    assert with_probe.stats["refused_slices"] == int((~present).sum())
    # Refused slices teach background at absent_weight where the specialist put the class, nothing
    # elsewhere; prompted ones keep the generalist's answer.
    assert (with_probe.label[~present] == 0).all()
    predicted = prob[1] >= 0.5
    assert np.allclose(with_probe.weight[~present][predicted[~present]], 0.5)
    assert (with_probe.weight[~present][~predicted[~present]] == 0).all()
    assert (with_probe.label[present] == without.label[present]).all()
    assert not with_probe.from_cache


def test_semisam_plus_fits_the_probe_on_the_labeled_cases_when_asked(tmp_path, litemedsam):
    import types

    from semisam.model_folder import new_manifest
    from semisam.training.methods.base import TrainContext
    from semisam.training.methods.semisam_plus import SemiSAMPlus

    image, mask = _scan(0, 3, 6)
    uimage, umask = _scan(3, 2, 5)
    labeled = [CaseData("l0", torch.from_numpy(image), torch.from_numpy(mask), sha256="sha-l0")]
    unlabeled = [CaseData("u0", torch.from_numpy(uimage), None, sha256="sha-u0")]
    for presence in (False, True):
        ctx = TrainContext(
            config=types.SimpleNamespace(iterations=100, seed=0, refresh_every=50, parts={}),  # type: ignore[arg-type]
            device=torch.device("cpu"),
            student=ThresholdStudent(),  # calls the bar bright too: predicted on every slice
            manifest=new_manifest("mamba_unet", ["object"], "MR"),
            store=None,
            cache=tmp_path / "cache",
            labeled=labeled,
            unlabeled=unlabeled,
            generalists=[("litemedsam", None)],
        )
        ctx._generalist_objects["litemedsam:"] = litemedsam
        part = SemiSAMPlus({"start": 0, "rounds": 1, "presence": presence})
        part.setup(ctx)
        part.refresh(ctx, 0)
        assert (part.labeler.presence is not None) == presence
        teaching = part.pseudo[0].weight.reshape(len(uimage), -1).max(1) > 0
        bar_slices = ~umask.reshape(len(umask), -1).any(1)
        # Without the probe the bar teaches as the structure; with it, it does not.
        assert (teaching & bar_slices).any() != presence
        assert (part.history[-1]["refused_slices"] == int(bar_slices.sum())) == presence


def test_linear_probe_fits_the_same_inside_inference_mode():
    from semisam.generalists.cells import fit_linear_probe

    gen = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(200, 8, generator=gen), dim=1)
    cover = (feats[:, :1] > 0).float()  # separable along the first feature
    w, b = fit_linear_probe(feats, cover, steps=100)
    with torch.inference_mode():
        wi, bi = fit_linear_probe(feats.clone(), cover.clone(), steps=100)
    assert torch.equal(w, wi) and torch.equal(b, bi)
    assert float((((feats @ w.T + b) > 0).float() == cover).float().mean()) > 0.75
