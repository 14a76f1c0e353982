"""The output guard: no command overwrites its inputs or its other outputs (by real path and inode, not
by spelling), bad outputs are refused before any work, and a failed call leaves existing files intact."""

from __future__ import annotations

import os
import time

import pytest
from robust_helpers import assert_one_line_error, prompts_file, run_cli, sha, small_scan

from semisam.outputs import OutputError, commit_outputs, plan_outputs


@pytest.fixture
def scan(tmp_path):
    return small_scan(tmp_path, "x.nii.gz")


@pytest.fixture
def prompts(tmp_path):
    return prompts_file(tmp_path)


def _same_input_cases(tmp_path, scan):
    os.symlink(scan.name, tmp_path / "link.nii.gz")
    os.link(scan, tmp_path / "hard.nii.gz")
    return {
        "same spelling": str(scan),
        "other spelling": str(tmp_path / "sub" / ".." / "x.nii.gz"),
        "symlink": str(tmp_path / "link.nii.gz"),
        "hard link": str(tmp_path / "hard.nii.gz"),
    }


def test_propagate_never_writes_over_its_scan(tmp_path, scan, prompts, capsys):
    (tmp_path / "sub").mkdir()
    before = sha(scan)
    for how, out in _same_input_cases(tmp_path, scan).items():
        code, _, err = run_cli(capsys, ["propagate", scan, "--prompts", prompts, "--output", out])
        assert_one_line_error(code, err, "--output", "is the input IMAGE"), how
        assert sha(scan) == before, how


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--output", "m.nii.gz", "--confidence", "{scan}"], "--confidence"),
        (["--output", "m.nii.gz", "--confidence", "{prompts}"], "is the input --prompts"),
        (["--output", "m.nii.gz", "--confidence", "m.nii.gz"], "same file as --output"),
        (["--output", "m.xyz"], "cannot write this file type"),
        (["--output", "{tmp}"], "is a folder"),
    ],
)
def test_propagate_bad_outputs_refused_before_any_work(
    tmp_path, scan, prompts, capsys, monkeypatch, extra, needle
):
    monkeypatch.chdir(tmp_path)
    argv = ["propagate", scan, "--prompts", prompts] + [
        a.format(scan=scan, prompts=prompts, tmp=tmp_path) for a in extra
    ]
    digests = {p: sha(p) for p in (scan, prompts)}
    t0 = time.perf_counter()
    code, _, err = run_cli(capsys, argv)
    assert_one_line_error(code, err, needle)
    assert time.perf_counter() - t0 < 5  # refused before the model is built
    assert {p: sha(p) for p in digests} == digests
    assert not (tmp_path / "m.nii.gz").exists()


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--output", "{scan}"], "is the input IMAGE"),
        (["--output", "k.nii.gz", "--uncertainty", "k.nii.gz"], "same file as --output"),
        (["--output", "k.nii.gz", "--uncertainty", "u.xyz"], "--uncertainty u.xyz: cannot write"),
        (["--output", "m.xyz"], "--output m.xyz: cannot write"),
        (["--output", "{model}/out.nii.gz"], "lies inside the input folder --model"),
    ],
)
def test_segment_bad_outputs_refused_before_the_model_loads(
    tmp_path, scan, capsys, monkeypatch, extra, needle
):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    keep = tmp_path / "k.nii.gz"
    keep.write_bytes(b"an earlier result that must survive")
    argv = ["segment", scan, "--model", model] + [a.format(scan=scan, model=model) for a in extra]
    before = {p: sha(p) for p in (scan, keep)}
    code, _, err = run_cli(capsys, argv)
    assert_one_line_error(code, err, needle)
    assert {p: sha(p) for p in before} == before


def test_model_init_refuses_an_existing_path(tmp_path, scan, capsys):
    before = sha(scan)
    code, _, err = run_cli(capsys, ["model", "init", "--labels", "a", "--modality", "CT", "--output", scan])
    assert_one_line_error(code, err, "already exists")
    assert sha(scan) == before


def test_commit_outputs_is_all_or_nothing(tmp_path):
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.json"
    a.write_bytes(b"old a")
    plan = plan_outputs({}, {"--a": (a, "image"), "--b": (b, "json")})
    with pytest.raises(RuntimeError), commit_outputs(plan) as tmp:
        tmp["--a"].write_bytes(b"new a")
        raise RuntimeError("the second writer failed")
    assert a.read_bytes() == b"old a" and not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz"]  # no temporaries left
    with commit_outputs(plan) as tmp:
        tmp["--a"].write_bytes(b"new a")
        tmp["--b"].write_text("{}")
    assert a.read_bytes() == b"new a" and b.read_text() == "{}"


def test_output_inside_an_input_folder_and_unwritable_folder(tmp_path):
    dicom = tmp_path / "series"
    dicom.mkdir()
    with pytest.raises(OutputError, match="lies inside the input folder IMAGE"):
        plan_outputs({"IMAGE": dicom}, {"--output": (dicom / "m.nii.gz", "image")})
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(OutputError, match="is not a writable folder"):
        plan_outputs({}, {"--output": (afile / "m.nii.gz", "image")})
