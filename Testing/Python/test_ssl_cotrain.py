"""``cotrain``: which unlabeled slices teach the generalist's decoder, and a real co-training run."""

from __future__ import annotations

import numpy as np
import pytest
from training_synth import one_thread, semi_store_and_config  # noqa: F401

from semisam.training.methods.cotrain import confident_samples
from semisam.training.methods.semi.pseudo_labels import PseudoLabel


def _pseudo(weight: np.ndarray) -> PseudoLabel:
    z = weight.shape[0]
    return PseudoLabel(
        label=(weight > 0).astype(np.uint8),
        weight=weight,
        score=np.zeros(z),
        agreement=np.zeros(z),
        prompted=np.zeros(z, bool),
    )


def test_only_slices_both_models_are_sure_of_teach_the_decoder():
    prob = np.zeros((8, 20, 20), np.float32)
    prob[2:6, 5:12, 5:12] = 0.97  # the specialist is sure on slices 2-5 ...
    prob[4, 5:12, 5:12] = 0.6  # ... except slice 4
    prob[7, 0, 0] = 0.3  # slice 7 (two beyond the end) is not surely empty
    main = prob >= 0.5
    weight = np.zeros_like(prob)
    weight[2:5] = 1.0  # the generalist's answer taught on slices 2-4, not on 5
    samples = confident_samples(0, prob, _pseudo(weight), 1, 0.9, np.random.default_rng(0), main)
    full = sorted({s.slice for s in samples if not s.empty})
    empty = sorted({s.slice for s in samples if s.empty})
    assert full == [2, 3]  # 4: the specialist is unsure; 5: the generalist's answer did not teach
    assert empty == [0, 1, 6]  # the neighbours beyond both ends, except slice 7
    for s in samples:
        if not s.empty:
            assert np.array_equal(s.target, main[s.slice])


@pytest.mark.slow  # ~2 min: real LiteMedSAM encodes the unlabeled slices and their views; run with -m slow
def test_cotrain_teaches_the_decoder_and_a_resumed_run_continues_from_it(tmp_path, one_thread):  # noqa: F811
    import threading

    import torch

    from semisam.generalists import build_generalist
    from semisam.training import train

    parts = {
        "semisam_plus": {"start": 40, "rampup": 0, "rounds": 1},
        "cotrain": {"steps": 3, "batch": 2, "min_confidence": 0.6},
    }
    store, cfg = semi_store_and_config(
        tmp_path / "store", "semisam_plus+cotrain", 60, parts, checkpoint_every=50
    )
    stop = threading.Event()
    events: list[dict] = []

    def on_event(e: dict) -> None:
        events.append(e)
        if e["event"] == "iteration" and e["iteration"] == 45:
            stop.set()  # after the first round of co-training: the cancel writes a checkpoint

    cut = train(store.root, cfg, events=on_event, cancel=stop, promote=False)
    assert cut.status == "cancelled", cut.message
    rounds = [e for e in events if e["event"] == "phase" and e["phase"] == "cotrain" and "samples" in e]
    assert [e["iteration"] for e in rounds] == [40]
    assert rounds[0]["unlabeled_samples"] > 0 and rounds[0]["steps"] == 3, rounds
    # The checkpoint holds the trained decoder, different from the bundled one.
    ckpts = sorted((store.root / "training").rglob("state.pt"))
    assert ckpts, "no checkpoint was written"
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
    decoder = state["parts"]["cotrain"]["decoder"]
    frozen = build_generalist("litemedsam", device="cpu").mask_decoder.state_dict()
    assert any(not torch.equal(decoder[k], frozen[k]) for k in frozen)
    # Resumed from it: pseudo-labels are remade at iterations 45 and 55, each by another decoder (the
    # restored one, then the one trained at 45): three cache folders with the bundled one's of iteration
    # 40. Resumed with the bundled decoder instead, iteration 45 would reuse that first folder: two.
    events.clear()
    resumed = train(store.root, cfg, events=events.append, resume=True, promote=False)
    assert resumed.status == "done", resumed.message
    assert any(e["event"] == "phase" and e["phase"] == "cotrain" and e.get("steps") for e in events)
    folders = [p for p in (store.root / "cache" / "pseudo_labels").iterdir() if p.is_dir()]
    assert len(folders) == 3, sorted(p.name for p in folders)


@pytest.mark.slow  # ~1-2 min: real LiteMedSAM; run with -m slow
def test_a_cancel_during_a_round_ends_it_and_keeps_no_half_trained_decoder(tmp_path, one_thread):  # noqa: F811
    import threading

    import torch

    from semisam.training import train

    parts = {
        "semisam_plus": {"start": 40, "rampup": 0, "rounds": 1},
        "cotrain": {"steps": 50, "batch": 2, "min_confidence": 0.6},
    }
    store, cfg = semi_store_and_config(tmp_path / "store", "semisam_plus+cotrain", 60, parts)
    stop = threading.Event()
    events: list[dict] = []

    def on_event(e: dict) -> None:
        events.append(e)
        if e["event"] == "phase" and e["phase"] == "cotrain" and "samples" not in e:
            stop.set()  # the round starts: cancel it

    cut = train(store.root, cfg, events=on_event, cancel=stop, promote=False)
    assert cut.status == "cancelled", cut.message
    rounds = [e for e in events if e["event"] == "phase" and e["phase"] == "cotrain" and "samples" in e]
    assert len(rounds) == 1 and rounds[0].get("cancelled") and "steps" not in rounds[0], rounds
    ckpts = sorted((store.root / "training").rglob("state.pt"))
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)["parts"]["cotrain"]
    assert "decoder" not in state and state["rounds"] == 0 and state["trained_at"] == -1, state


def test_the_trained_decoder_is_the_one_that_answers():
    """LiteMedSAM on CPU answers through an exported decoder graph holding the bundled weights; cotrain
    sets it aside, so the decoder it trains is the one that answers the next pseudo-labels."""
    from types import SimpleNamespace

    from semisam.generalists import build_generalist
    from semisam.training.methods.cotrain import CoTrain

    model = build_generalist("litemedsam", device="cpu")
    if getattr(model, "_fast_decoder", None) is None:
        pytest.skip("no exported decoder on this machine (onnxruntime missing): nothing to set aside")
    plus = SimpleNamespace(labeler=SimpleNamespace(generalists=[model]))
    ctx = SimpleNamespace(extra={"semisam_plus": plus})
    CoTrain({}).setup(ctx)
    assert model._fast_decoder is None and ctx.extra["cotrain"].model is model
    with pytest.raises(ValueError, match="semisam_plus\\+cotrain"):
        CoTrain({}).setup(SimpleNamespace(extra={}))
