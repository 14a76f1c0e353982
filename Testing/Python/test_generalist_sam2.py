"""SAM 2 through the generalist protocol and its memory-bank volume propagation, on a tiny real
Hiera/SAM 2 architecture (random weights: shapes and plumbing, not quality)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_generalists import tiny_sam2

from semisam.generalists import CheckpointError, SlicePrompt, build_generalist
from semisam.generalists.sam2_model import (
    _package_config,
    build_sam2_module,
    init_state_from_frames,
    set_image_size,
)
from semisam.prompts import PromptError


@pytest.fixture(scope="module")
def model():
    return tiny_sam2()


def test_per_slice_protocol_shapes(model):
    img = np.random.default_rng(0).random((70, 110), dtype=np.float32)
    emb = model.encode(img)
    assert emb.slice_shape == (70, 110) and "high_res_0" in emb.extras
    for prompt in (
        SlicePrompt(box=(10, 10, 60, 50)),
        SlicePrompt(points=np.array([[30.0, 20.0]])),
        SlicePrompt(
            mask=np.zeros((70, 110), bool), points=np.array([[5.0, 5.0]]), point_labels=np.array([0])
        ),
    ):
        pred = model.predict(emb, prompt)
        assert pred.logits.shape == (70, 110) and 0.0 <= pred.score <= 1.0
    with pytest.raises(PromptError, match="outside the slice"):
        model.predict(emb, SlicePrompt(box=(200, 200, 300, 300)))


def test_in_memory_state_has_every_field_of_the_jpeg_init_state(model):
    frames = model.frames_to_model(np.zeros((3, 20, 30), np.float32))
    state = init_state_from_frames(model.predictor, frames, (20, 30))
    assert state["num_frames"] == 3 and state["video_height"] == 20 and state["video_width"] == 30
    assert tuple(state["images"].shape) == (3, 3, model.image_size, model.image_size)


def test_propagate_volume_covers_every_slice_both_ways(model):
    frames = np.random.default_rng(1).random((7, 48, 64), dtype=np.float32)
    logits, scores = model.propagate_volume(
        frames, {2: SlicePrompt(box=(10, 10, 40, 30)), 5: SlicePrompt(points=np.array([[20.0, 20.0]]))}
    )
    assert logits.shape == (7, 48, 64) and logits.dtype == np.float32
    assert scores.shape == (7,) and np.all((scores > 0) & (scores < 1))  # every slice got an output
    assert np.all(np.isfinite(logits))  # NaN would mark a slice neither pass produced
    # random weights: a slice is either "object absent" (SAM 2 writes -1024) or a real logit map
    flat = logits.reshape(7, -1)
    assert np.all((flat == -1024.0).all(1) | (flat.std(1) > 0))
    with pytest.raises(PromptError, match="outside 0..6"):
        model.propagate_volume(frames, {9: SlicePrompt(box=(1, 1, 5, 5))})


def test_release_style_file_of_unknown_size_is_a_clear_error(tmp_path, model):
    path = tmp_path / "odd_sam2.pt"
    torch.save({"model": model.predictor.state_dict()}, path)  # a .pt carries no config
    with pytest.raises(
        CheckpointError, match=r"odd_sam2\.pt: a Hiera trunk of width 8 .* matches no released"
    ):
        build_generalist("sam2", path)


@pytest.mark.parametrize(
    ("meta", "words"),
    [
        ("{not json", "metadata is not valid JSON"),
        ('["a list"]', "metadata is not a SAM 2 model config"),
        ('{"image_size": 128}', "its model config does not build a SAM 2 model"),
    ],
)
def test_bad_config_metadata_is_a_checkpoint_error_naming_the_file(tmp_path, model, meta, words):
    """Review 1g: the metadata's JSON was decoded unguarded (a JSONDecodeError escaped, naming no file)."""
    from safetensors.torch import save_file

    from semisam.generalists.sam2_model import METADATA_KEY

    path = tmp_path / "bad_meta.safetensors"
    state = {k: v.contiguous() for k, v in model.predictor.state_dict().items()}
    save_file(state, str(path), metadata={METADATA_KEY: meta})
    with pytest.raises(CheckpointError, match=rf"bad_meta\.safetensors: .*{words}"):
        build_generalist("sam2", path)


@pytest.mark.slow
def test_released_hiera_t_layout_is_recognised(tmp_path):
    """A full-size SAM 2.1 Hiera-T (random weights, 39 M parameters) saved like the release .pt files."""
    torch.manual_seed(0)
    ref = build_sam2_module(set_image_size(_package_config("hiera_t", v21=True), 1024))
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": ref.predictor.state_dict()}, path)
    sam2 = build_generalist("sam2", path)
    assert sam2.image_size == 1024
    medsam2 = build_generalist("medsam2", path)
    assert medsam2.image_size == 512  # MedSAM2 is a SAM 2.1 Hiera-T at 512 px
    img = np.random.default_rng(0).random((60, 80), dtype=np.float32)
    assert medsam2.predict(medsam2.encode(img), SlicePrompt(box=(10, 10, 50, 40))).logits.shape == (60, 80)
