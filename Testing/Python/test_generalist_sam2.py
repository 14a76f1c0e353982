"""SAM 2 through the generalist protocol and its memory-bank volume propagation, on a tiny real
Hiera/SAM 2 architecture (random weights: shapes and plumbing, not quality)."""

from __future__ import annotations

import numpy as np
import pytest

from semisam.generalists import SlicePrompt
from semisam.generalists.sam2_model import init_state_from_frames
from semisam.generalists.sam_family import PromptError
from semisam.generalists.testing import tiny_sam2


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
