"""The prompts of a key slice: which box each click goes to, and how a slice without a box is anchored."""

from __future__ import annotations

import numpy as np

from semisam.propagation.key_prompts import MAX_ANCHORS, anchor_boxes, key_prompts, points_per_box

MARGIN = (2.0, 2.0)


def _discs(shape, *discs) -> np.ndarray:
    """``(H, W)`` bool mask of discs ``(row, column, radius)``."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    m = np.zeros(shape, bool)
    for r, c, rad in discs:
        m |= (yy - r) ** 2 + (xx - c) ** 2 <= rad**2
    return m


def test_every_part_is_anchored_and_parts_within_the_margin_share_a_box():
    apart = _discs((64, 96), (32, 20, 10), (32, 80, 2))  # the small one is 4 % of the large one
    assert sorted(anchor_boxes(apart, MARGIN)) == [(10, 22, 30, 42), (78, 30, 82, 34)]
    close = _discs((64, 96), (32, 20, 8), (32, 33, 4))  # 1 px of background between them
    assert anchor_boxes(close, MARGIN) == [(12, 24, 37, 40)]
    assert anchor_boxes(np.zeros((8, 8), bool), MARGIN) == []
    # scattered specks (a noisy hand-painted mask): a bounded number of boxes, the part first
    noisy = apart.copy()
    for r in range(0, 64, 6):
        for c in range(0, 96, 6):
            noisy[r : r + 2, c : c + 2] = True  # 4-px specks 4 px apart: 176 parts
    boxes = anchor_boxes(noisy, MARGIN)
    assert 1 <= len(boxes) <= MAX_ANCHORS and boxes[0][0] <= 10 <= 30 <= boxes[0][2]
    assert anchor_boxes(_discs((16, 16), (8, 8, 0)), MARGIN) == [(8, 8, 8, 8)]  # a speck alone: its box


def test_a_positive_click_goes_to_the_nearest_box_and_a_negative_one_to_every_box_holding_it():
    boxes = [(12.0, 22.0, 36.0, 38.0), (28.0, 22.0, 52.0, 38.0)]  # overlapping in columns 28-36
    points = np.array([[14, 30], [50, 30], [32, 30], [32, 31]], np.float32)
    labels = np.array([1, 1, 0, 1])
    (p0, l0), (p1, l1) = points_per_box(boxes, points, labels)
    assert p0 is not None and p1 is not None and l0 is not None and l1 is not None
    assert [tuple(p) for p in p0] == [(14, 30), (32, 30), (32, 31)] and list(l0) == [1, 0, 1]
    assert [tuple(p) for p in p1] == [(50, 30), (32, 30)] and list(l1) == [1, 0]
    # one box: every click, outside it too
    ((p, lab),) = points_per_box(boxes[:1], points, labels)
    assert p is not None and len(p) == 4 and lab is not None and list(lab) == [1, 1, 0, 1]
    assert points_per_box(boxes, None, None) == [(None, None), (None, None)]


def test_a_click_on_a_part_the_mask_missed_gets_a_box_of_its_own():
    held = _discs((64, 96), (32, 20, 8))
    far = key_prompts([], np.array([[70, 30]], np.float32), np.array([1]), held, MARGIN)
    assert [p.box for p in far] == [(12.0, 24.0, 28.0, 40.0), (62.0, 22.0, 78.0, 38.0)]
    assert far[0].points is None and far[1].points is not None  # the click goes to its own box
    near = key_prompts([], np.array([[29, 32]], np.float32), np.array([1]), held, MARGIN)
    assert [p.box for p in near] == [(12.0, 24.0, 28.0, 40.0)]  # within the margin: it extends the part
    assert near[0].points is not None
    # no mask to anchor on: the clicks alone; negative clicks alone on an empty slice: nothing to ask
    assert key_prompts([], np.array([[5, 5]], np.float32), np.array([1]), None, MARGIN)[0].box is None
    assert key_prompts([], np.array([[5, 5]], np.float32), np.array([0]), None, MARGIN) == []


def _clicking_model(clicks_alone: bool = True):
    """A scripted generalist: the bright pixels in the box, plus the bright part under a positive click,
    less the bright part under a negative click (score 0.9); with ``clicks_alone`` off, clicks without a
    box get nothing (as LiteMedSAM, trained on boxes)."""
    import torch
    from scipy import ndimage as ndi

    from semisam.generalists.base import SliceEmbedding, SlicePrediction

    class Clicking:
        name, image_size, device = "scripted", 64, torch.device("cpu")

        def encode(self, image):
            return SliceEmbedding(torch.zeros(1, 1, 4, 4), tuple(image.shape), {"image": np.array(image)})

        def predict(self, embedding, prompt):
            bright = embedding.extras["image"] > 0.5
            comp, _ = ndi.label(bright)
            m = np.zeros(bright.shape, bool)
            if prompt.box is None and not clicks_alone:
                return SlicePrediction(np.full(bright.shape, -5.0, np.float32), 0.1)
            if prompt.box is not None:
                x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
                m[y0 : y1 + 1, x0 : x1 + 1] = bright[y0 : y1 + 1, x0 : x1 + 1]
            for (x, y), positive in zip(
                np.asarray(prompt.points if prompt.points is not None else np.zeros((0, 2))).reshape(-1, 2),
                np.asarray(prompt.point_labels if prompt.point_labels is not None else [], int),
                strict=True,
            ):
                k = comp[int(round(y)), int(round(x))]
                if k:
                    m = m | (comp == k) if positive else m & (comp != k)
            return SlicePrediction(np.where(m, 5.0, -5.0).astype(np.float32), 0.9)

    return Clicking()


def _volume(*discs, n=20):
    """``(n, 64, 96)`` background 0.2, discs ``(row, column, radius)`` 0.7 on slices 5-15."""
    vol = np.full((n, 64, 96), 0.2, np.float32)
    for z in range(5, 16):
        vol[z][_discs((64, 96), *discs)] = 0.7
    return vol


def test_a_click_on_a_part_the_track_missed_adds_it_and_a_negative_click_in_two_boxes_leaves_both():
    from semisam.propagation import add_prompt, init_state, propagate
    from semisam.scan.volume import Volume

    vol = _volume((32, 20, 8), (32, 70, 8))
    state = init_state(_clicking_model(), Volume(vol, (1.0, 1.0, 3.0)), "axial", modality="MR")
    add_prompt(state, 10, box=(11, 23, 29, 41))  # the left disc only
    mask = np.asarray(propagate(state).mask) > 0
    assert mask[12, 32, 20] and not mask[12, 32, 70]
    add_prompt(state, 12, point=(70, 32), positive=True)  # a click on the right disc, no box
    mask = np.asarray(propagate(state).mask) > 0
    assert mask[12, 32, 20] and mask[12, 32, 70]

    # Two overlapping boxes with a speck in their overlap: a negative click there clears it from both.
    vol = _volume((32, 20, 6), (32, 44, 6))
    vol[5:16, 30:34, 30:34] = 0.7  # the speck, columns 30-33, inside both boxes
    state = init_state(_clicking_model(), Volume(vol, (1.0, 1.0, 3.0)), "axial", modality="MR")
    add_prompt(state, 10, box=(12, 24, 36, 40))
    add_prompt(state, 10, box=(28, 24, 52, 40))
    assert (np.asarray(propagate(state, across_slices=False).mask)[10, 30:34, 30:34] > 0).all()
    add_prompt(state, 10, point=(31, 31), positive=False)
    mask = np.asarray(propagate(state, across_slices=False).mask)[10] > 0
    assert not mask[30:34, 30:34].any() and mask[32, 20] and mask[32, 44]


def test_a_click_on_a_slice_of_two_parts_is_anchored_on_each_part_apart():
    """Two discs with a bright bar between them from slice 12 on, boxed apart on slice 10: after
    propagation a positive click on the left disc on slice 13 (no box) is anchored on a box around each
    part of that slice's mask (one box around both would take the bar in), and reaches the left box alone."""
    from semisam.propagation import add_prompt, init_state, propagate
    from semisam.scan.volume import Volume

    vol = _volume((32, 16, 6), (32, 48, 6))
    vol[12:16, 28:37, 27:38] = 0.7  # the bar: columns 27-37, the discs end at columns 22 and 42
    model = _clicking_model()
    asked = []
    answer = model.predict
    model.predict = lambda emb, prompt: (asked.append((emb.slice_shape, prompt)), answer(emb, prompt))[1]
    state = init_state(model, Volume(vol, (1.0, 1.0, 5.0)), "axial", modality="MR")
    add_prompt(state, 10, box=(9, 25, 23, 39))
    add_prompt(state, 10, box=(41, 25, 55, 39))
    propagate(state)
    asked.clear()
    add_prompt(state, 13, point=(16, 32), positive=True)
    mask = np.asarray(propagate(state).mask) > 0
    assert np.array_equal(mask[13], _discs((64, 96), (32, 16, 6), (32, 48, 6)))  # nothing of the bar
    clicked = [p for shape, p in asked if p.points is not None and shape == (64, 96)]  # on the whole slice
    assert len(clicked) == 1 and clicked[0].box is not None and clicked[0].box[2] < 27  # the left box alone


def test_a_click_on_a_slice_with_nothing_to_anchor_it_gets_a_box_sized_on_the_nearest_slice():
    """A disc boxed on slice 10; a click (no box) on slice 14, which holds no mask: the model answers a
    click alone with nothing, so the click gets a box of the size of slice 10's box, centred on it."""
    from semisam.propagation import add_prompt, init_state, propagate
    from semisam.scan.volume import Volume

    vol = _volume((32, 20, 6))
    state = init_state(
        _clicking_model(clicks_alone=False), Volume(vol, (1.0, 1.0, 3.0)), "axial", modality="MR"
    )
    add_prompt(state, 10, box=(13, 25, 27, 39))
    add_prompt(state, 14, point=(22, 33), positive=True)
    mask = np.asarray(propagate(state, across_slices=False).mask) > 0
    assert np.array_equal(mask[14], _discs((64, 96), (32, 20, 6)))
    assert key_prompts(
        [], np.array([[22, 33]], np.float32), np.array([1]), None, MARGIN, [(13, 25, 27, 39)], (64, 96)
    )[0].box == (15.0, 26.0, 29.0, 40.0)


def test_a_slice_clicked_before_its_neighbour_is_boxed_is_answered_once_the_box_is_there():
    """Clicks on slice 14 with nothing near to size a box on get nothing from a model that answers clicks
    alone with nothing; boxing slice 10 afterwards answers slice 14 too, as boxing first would have."""
    from semisam.propagation import add_prompt, init_state, propagate
    from semisam.scan.volume import Volume

    disc = _discs((64, 96), (32, 20, 6))

    def session(order):
        state = init_state(
            _clicking_model(clicks_alone=False),
            Volume(_volume((32, 20, 6)), (1.0, 1.0, 3.0)),
            "axial",
            modality="MR",
        )
        for what in order:
            if what == "box":
                add_prompt(state, 10, box=(13, 25, 27, 39))
            else:
                add_prompt(state, 14, point=(22, 33), positive=True)
            mask = np.asarray(propagate(state).mask) > 0
        return mask

    first_click = session(["click", "box"])
    assert np.array_equal(first_click[14], disc)
    # from the box up to the clicked slice and beyond it, as with the box first (below the box the reach
    # of a track beyond the outermost key slice depends on which key slices existed when it ran)
    assert np.array_equal(first_click[10:], session(["box", "click"])[10:])


def test_clicks_are_sized_on_what_the_user_drew_whatever_the_order_of_the_slices():
    """A box on slice 20; clicks alone on slices 14 and 16: both are sized on slice 20's box (not slice 14
    on slice 16's answer, made first or not)."""
    from semisam.propagation import add_prompt, init_state, propagate
    from semisam.propagation.engine import _nearest_sizes
    from semisam.scan.volume import Volume

    vol = np.full((24, 64, 96), 0.2, np.float32)
    vol[:, _discs((64, 96), (32, 20, 3))] = 0.7  # smaller than the box: an answer's box is not the user's
    state = init_state(_clicking_model(), Volume(vol, (1.0, 1.0, 3.0)), "axial", modality="MR")
    add_prompt(state, 20, box=(13, 25, 27, 39))
    add_prompt(state, 14, point=(20, 32), positive=True)
    add_prompt(state, 16, point=(20, 32), positive=True)
    propagate(state, across_slices=False)  # slice 14 is answered before slice 16
    assert state.keys[14].result is not None
    assert _nearest_sizes(state, 14, None) == _nearest_sizes(state, 16, None) == [(13.0, 25.0, 27.0, 39.0)]


def test_many_clicks_make_a_bounded_number_of_boxes():
    """Clicks on one part join the box the first one made; clicks all over a slice make at most
    MAX_ANCHORS boxes."""
    sizes = [(13.0, 25.0, 27.0, 39.0)]
    same_part = np.array([[40, 30], [42, 31], [44, 33]], np.float32)
    prompts = key_prompts([], same_part, np.ones(3, int), None, MARGIN, sizes, (64, 96))
    assert len(prompts) == 1 and prompts[0].points is not None and len(prompts[0].points) == 3
    everywhere = np.array([[x, y] for y in range(0, 64, 4) for x in range(0, 96, 4)], np.float32)  # 384
    assert (
        len(key_prompts([], everywhere, np.ones(len(everywhere), int), None, MARGIN, sizes, (64, 96)))
        == MAX_ANCHORS
    )
    held = _discs((64, 96), (32, 20, 8))
    assert len(key_prompts([], everywhere, np.ones(len(everywhere), int), held, MARGIN)) == MAX_ANCHORS


def test_clicks_are_sized_on_a_segment_whatever_value_marks_it():
    """A segment held as a label map (the structure is 2, another label 255 elsewhere): the slice nearest
    the clicked one that holds anything non-zero sizes its boxes, one box per part of that slice."""
    from semisam.propagation import init_state
    from semisam.propagation.engine import _nearest_sizes
    from semisam.scan.volume import Volume

    state = init_state(
        _clicking_model(), Volume(_volume((32, 20, 6)), (1.0, 1.0, 3.0)), "axial", modality="MR"
    )
    current = np.zeros((20, 64, 96), np.uint8)
    current[17][_discs((64, 96), (32, 20, 6))] = 2
    current[19][_discs((64, 96), (32, 70, 6))] = 255
    assert _nearest_sizes(state, 14, current) == [(14.0, 26.0, 26.0, 38.0)]
    assert _nearest_sizes(state, 19, current) == [(14.0, 26.0, 26.0, 38.0)]  # not its own slice
    assert _nearest_sizes(state, 19, np.zeros_like(current)) == []
