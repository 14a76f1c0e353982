"""Resize-longest-side + pad geometry: prompts to the model frame and logits back to exact slice pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semisam.generalists.geometry import ResizeLongestSide


@pytest.mark.parametrize("shape", [(512, 512), (90, 150), (150, 90), (45, 120), (257, 31)])
def test_logits_come_back_at_slice_shape(shape):
    tf = ResizeLongestSide(shape, 256)
    h, w = tf.resized_shape
    assert max(h, w) == 256
    img = tf.image_to_model(torch.rand(shape))
    assert img.shape == (1, 256, 256)
    assert torch.all(img[:, h:, :] == 0) and torch.all(img[:, :, w:] == 0)
    out = tf.logits_to_slice(torch.zeros(1, 1, 256, 256))
    assert tuple(out.shape[-2:]) == shape


def test_object_round_trip_lands_in_place():
    shape = (90, 150)  # non-square: scale 256/150, padded rows at the bottom
    tf = ResizeLongestSide(shape, 256)
    mask = np.zeros(shape, np.float32)
    mask[20:40, 100:130] = 1.0
    framed = tf.image_to_model(torch.from_numpy(mask))
    # the box maps onto the object in the model frame
    x0, y0, x1, y1 = tf.coords_to_model(np.array([100, 20, 129, 39]))
    ys, xs = np.nonzero(framed[0].numpy() > 0.5)
    assert abs(xs.min() - x0) <= 1.5 and abs(ys.min() - y0) <= 1.5
    assert abs(xs.max() - x1) <= 2 and abs(ys.max() - y1) <= 2
    # model-frame logits map back onto the same pixels
    logits = torch.where(framed > 0.5, 10.0, -10.0)[None]
    back = tf.logits_to_slice(logits)[0, 0].numpy() > 0
    inter = np.logical_and(back, mask > 0).sum()
    assert 2 * inter / (back.sum() + mask.sum()) > 0.95


def test_low_res_decoder_logits_are_upscaled_first():
    tf = ResizeLongestSide((100, 200), 1024)  # SAM: decoder logits are 256 for a 1024 frame
    out = tf.logits_to_slice(torch.zeros(1, 3, 256, 256))
    assert out.shape == (1, 3, 100, 200)
