"""The prompts JSON form: parsing and validation against the image (no model)."""

from __future__ import annotations

import json

import pytest

from semisam.prompts import Prompt, PromptError, load_prompts, parse_prompts

SHAPE = (10, 40, 60)  # (Z, Y, X): 10 axial slices of 40 rows x 60 columns


def test_parse_issue_example():
    data = {
        "axis": "axial",
        "prompts": [{"slice": 3, "box": [5, 6, 20, 30]}, {"slice": 4, "point": [10, 12], "positive": False}],
    }
    ps = parse_prompts(data, SHAPE)
    assert ps.axis == "axial" and ps.axis_index == 0
    assert ps.prompts[0] == Prompt(slice=3, box=(5, 6, 20, 30))
    assert ps.prompts[1] == Prompt(slice=4, point=(10, 12), positive=False)
    assert ps.slices() == [3, 4]
    assert parse_prompts(ps.to_json(), SHAPE) == ps  # round trip


def test_defaults_axis_axial_and_points_positive():
    ps = parse_prompts({"prompts": [{"slice": 0, "point": [0, 0]}]}, SHAPE)
    assert ps.axis == "axial" and ps.prompts[0].positive is True


@pytest.mark.parametrize(
    "prompt, words",
    [
        ({"slice": 10, "box": [1, 1, 5, 5]}, ["prompt 1", "slice 10", "outside"]),
        ({"slice": -1, "box": [1, 1, 5, 5]}, ["prompt 1", "slice -1", "outside"]),
        ({"slice": 2, "box": [1, 1, 60, 5]}, ["prompt 1", "box", "outside", "columns 0..59"]),
        ({"slice": 2, "point": [3, 40]}, ["prompt 1", "point", "outside", "rows 0..39"]),
        ({"slice": 2, "box": [9, 1, 5, 5]}, ["prompt 1", "empty or inverted"]),
        ({"slice": 2, "box": [1, 8, 5, 5]}, ["prompt 1", "empty or inverted"]),
        ({"slice": 2, "box": [1, 1, 5]}, ["prompt 1", "4 integers"]),
        ({"slice": 2, "box": [1.5, 1, 5, 5]}, ["prompt 1", "integer"]),
        ({"slice": 2}, ["prompt 1", "exactly one of 'box' or 'point'"]),
        ({"slice": 2, "box": [1, 1, 5, 5], "point": [2, 2]}, ["prompt 1", "exactly one"]),
        ({"box": [1, 1, 5, 5]}, ["prompt 1", "'slice' is missing"]),
        ({"slice": 2, "point": [2, 2], "positive": "no"}, ["prompt 1", "true or false"]),
        ({"slice": 2, "point": [2, 2], "label": 1}, ["prompt 1", "unknown key"]),
        ({"slice": True, "point": [2, 2]}, ["prompt 1", "integer"]),
        ({"slice": 2, "box": [1, 1, 5, 5], "positive": False}, ["prompt 1", "points only"]),
    ],
)
def test_bad_prompt_names_index_and_problem(prompt, words):
    data = {"axis": "axial", "prompts": [{"slice": 0, "box": [0, 0, 3, 3]}, prompt]}
    with pytest.raises(PromptError) as exc:
        parse_prompts(data, SHAPE, source="p.json")
    msg = str(exc.value)
    assert msg.startswith("p.json: ")
    for w in words:
        assert w in msg, (w, msg)


def test_one_voxel_box_is_allowed():
    assert parse_prompts({"prompts": [{"slice": 0, "box": [4, 4, 4, 4]}]}, SHAPE).prompts[0].box == (
        4,
        4,
        4,
        4,
    )


@pytest.mark.parametrize(
    "data, words",
    [
        ({"axis": "oblique", "prompts": [{"slice": 0, "point": [0, 0]}]}, ["unknown axis", "'oblique'"]),
        ({"axis": "axial", "prompts": []}, ["non-empty"]),
        ({"axis": "axial"}, ["non-empty"]),
        ([1, 2], ["JSON object"]),
        ({"axis": "axial", "prompts": [{"slice": 0, "point": [0, 0]}], "extra": 1}, ["unknown key"]),
    ],
)
def test_bad_document(data, words):
    with pytest.raises(PromptError) as exc:
        parse_prompts(data, SHAPE)
    for w in words:
        assert w in str(exc.value)


def test_axes_bounds_follow_the_axis():
    # coronal: slice = j (0..39), columns = i (0..59), rows = k (0..9)
    ok = {"axis": "coronal", "prompts": [{"slice": 39, "box": [0, 0, 59, 9]}]}
    assert parse_prompts(ok, SHAPE).prompts[0].box == (0, 0, 59, 9)
    with pytest.raises(PromptError, match="rows 0..9"):
        parse_prompts({"axis": "coronal", "prompts": [{"slice": 3, "box": [0, 0, 5, 10]}]}, SHAPE)
    # sagittal: slice = i (0..59), columns = j (0..39), rows = k
    with pytest.raises(PromptError, match="columns 0..39"):
        parse_prompts({"axis": "sagittal", "prompts": [{"slice": 59, "point": [40, 0]}]}, SHAPE)


def test_load_prompts_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(PromptError, match="bad.json: not valid JSON"):
        load_prompts(bad, SHAPE)
    with pytest.raises(PromptError, match="not found"):
        load_prompts(tmp_path / "missing.json", SHAPE)
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps({"axis": "sagittal", "prompts": [{"slice": 5, "point": [3, 4]}]}), encoding="utf-8"
    )
    assert load_prompts(good, SHAPE).prompts[0].point == (3, 4)
