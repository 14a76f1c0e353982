"""Damaged store files (edited by hand, by another tool, half-synced) give one line and exit 1 in every
command that reads them; imports are all-or-nothing; export never silently drops a case; promote and
rollback re-verify the weights; registration refuses unknown architectures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from robust_helpers import (
    assert_one_line_error,
    copy_store,
    make_store,
    nifti_pair,
    run_cli,
    small_scan,
    tree_digest,
)

from semisam.store import LabeledStore, drill


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    work = tmp_path_factory.mktemp("robust-store")
    return make_store(work / "store", work)


@pytest.fixture
def store(template, tmp_path):
    return copy_store(template, tmp_path / "store")


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    data = edit(data)
    path.write_text(json.dumps(data))


def _case_json(root: Path) -> Path:
    return root / "cases" / "case_0001" / "case.json"


def _set(key_path, value):
    def edit(d):
        target = d
        for k in key_path[:-1]:
            target = target[k]
        target[key_path[-1]] = value
        return d

    return edit


CASE_DAMAGE = {
    "provenance.prompts": (_set(["provenance", "prompts"], "abc"), "provenance.prompts"),
    "provenance.started": (_set(["provenance", "started"], 5), "provenance.started"),
    "image": (_set(["image"], 5), "image"),
    "added": (_set(["added"], 5), "added"),
    "image outside": (_set(["image"], "../case_0002/image.nii.gz"), "a file name inside the case folder"),
}


@pytest.mark.parametrize("damage", sorted(CASE_DAMAGE))
@pytest.mark.parametrize("command", ["list", "check", "export"])
def test_damaged_case_record(store, tmp_path, capsys, damage, command):
    edit, needle = CASE_DAMAGE[damage]
    _edit_json(_case_json(store), edit)
    before = tree_digest(store)
    argv = ["store", command, store] + ([tmp_path / "exported"] if command == "export" else [])
    code, out, err = run_cli(capsys, argv)
    assert code == 1 and "Traceback" not in err
    text = out + err
    assert "case_0001" in text and needle in text, text
    if command != "check":
        assert_one_line_error(code, err, "case.json", needle)
    else:
        problems = [ln for ln in out.splitlines() if ln.startswith("problem:")]
        assert len(problems) == 1 and "case.json" in problems[0] and needle in problems[0], out
    assert tree_digest(store) == before
    assert not (tmp_path / "exported").exists()


@pytest.mark.parametrize("command", ["list", "check", "export"])
def test_damaged_scan_record(template, tmp_path, capsys, command):
    root = copy_store(template, tmp_path / "store")
    LabeledStore(root).add_unlabeled(small_scan(tmp_path), scan_id="scan_0001")
    _edit_json(root / "unlabeled" / "scan_0001" / "scan.json", _set(["shape_zyx"], "big"))
    before = tree_digest(root)
    argv = ["store", command, root] + ([tmp_path / "exported"] if command == "export" else [])
    code, out, err = run_cli(capsys, argv)
    assert code == 1 and "Traceback" not in err
    text = out if command == "check" else err
    lines = [ln for ln in text.splitlines() if "scan.json" in ln]
    assert len(lines) == 1 and "shape_zyx" in lines[0], out + err
    assert tree_digest(root) == before and not (tmp_path / "exported").exists()


def test_export_skip_damaged_is_explicit(store, tmp_path, capsys):
    _edit_json(_case_json(store), _set(["image"], 5))
    code, out, err = run_cli(capsys, ["store", "export", store, tmp_path / "ex", "--skip-damaged"])
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "ex" / "labelsTr").iterdir()) == ["case_0002.nii.gz"]


DAMAGED_FILES = {
    "semisam_store.json labels": ("semisam_store.json", _set(["labels"], "x"), "labels"),
    "active.json list": ("models/active.json", lambda d: [], "active-version pointer is not a JSON object"),
    "active.json bad version": ("models/active.json", _set(["active"], 5), "active"),
    "registry.json list": (
        "models/versions/v0001/registry.json",
        lambda d: [],
        "registry record is not a JSON object",
    ),
    "registry.json metrics": (
        "models/versions/v0001/registry.json",
        _set(["metrics"], {"dice": "high"}),
        "metrics.dice",
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGED_FILES))
@pytest.mark.parametrize("command", ["list", "check", "export", "promote", "rollback"])
def test_damaged_store_and_registry_files(store, tmp_path, capsys, damage, command):
    rel, edit, needle = DAMAGED_FILES[damage]
    _edit_json(store / rel, edit)
    before = tree_digest(store)
    extra = {"export": [tmp_path / "ex"], "promote": ["v0001", "--force"]}.get(command, [])
    code, out, err = run_cli(capsys, ["store", command, store, *extra])
    if command == "export" and rel.startswith("models/"):
        # the export does not read the registry: a correct result, nothing damaged is used
        assert code == 0, err
    elif command == "check" and rel.startswith("models/"):
        assert code == 1 and "Traceback" not in err
        assert any(needle in ln and Path(rel).name in ln for ln in out.splitlines()), out
    else:
        assert_one_line_error(code, err, Path(rel).name, needle)
    if command != "export" or code != 0:
        assert tree_digest(store) == before


@pytest.mark.parametrize("how", ["modified", "deleted"])
@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_promote_and_rollback_reverify_the_weights(store, capsys, how, command):
    weights = store / "models" / "versions" / "v0001" / "weights.safetensors"
    if how == "modified":
        raw = bytearray(weights.read_bytes())
        raw[-1] ^= 0xFF
        weights.write_bytes(bytes(raw))
    else:
        weights.unlink()
    active = (store / "models" / "active.json").read_bytes()
    extra = ["v0001", "--force"] if command == "promote" else []
    code, _, err = run_cli(capsys, ["store", command, store, *extra])
    assert_one_line_error(code, err, "weights.safetensors")
    assert (store / "models" / "active.json").read_bytes() == active
    code, out, _ = run_cli(capsys, ["store", "check", store])
    assert code == 1 and "weights.safetensors" in out


def test_unknown_architecture_cannot_be_registered(store, tmp_path, capsys):
    folder = drill.model_folder(tmp_path / "m")
    manifest = folder / "manifest.json"
    _edit_json(manifest, _set(["arch"], "resnet_from_elsewhere"))
    code, _, err = run_cli(capsys, ["store", "add-model", store, folder])
    assert_one_line_error(code, err, "unknown specialist architecture 'resnet_from_elsewhere'")
    assert [p.name for p in (store / "models" / "versions").iterdir()] == ["v0001", "v0002"]


def test_check_flags_a_case_file_symlinked_outside_its_folder(store, tmp_path, capsys):
    case = store / "cases" / "case_0001"
    outside = tmp_path / "elsewhere.nii.gz"
    os.replace(case / "mask.nii.gz", outside)
    os.symlink(outside, case / "mask.nii.gz")
    code, out, _ = run_cli(capsys, ["store", "check", store])
    assert code == 1 and "mask.nii.gz points outside the case folder" in out


# ---------------------------------------------------------------------------------------------- import
def _msd(folder: Path, n: int = 3) -> Path:
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    training = []
    for k in range(n):
        img, mask = nifti_pair(folder, f"c{k}")
        img.rename(folder / "imagesTr" / f"c{k}.nii.gz")
        mask.rename(folder / "labelsTr" / f"c{k}.nii.gz")
        training.append({"image": f"./imagesTr/c{k}.nii.gz", "label": f"./labelsTr/c{k}.nii.gz"})
    meta = {"name": "T", "labels": {"0": "background", "1": "lesion"}, "modality": {"0": "CT"}}
    (folder / "dataset.json").write_text(json.dumps({**meta, "training": training}))
    return folder


@pytest.mark.parametrize(
    "edit, needle",
    [
        (_set(["training"], ["./imagesTr/c0.nii.gz"]), "training[0]: expected an object"),
        (lambda d: {**d, "training": [{"image": "./imagesTr/c0.nii.gz"}]}, "missing field(s) 'label'"),
        (_set(["modality"], ["CT"]), "modality: expected an object"),
        (_set(["labels"], {"one": "lesion"}), "labels"),
    ],
)
def test_import_refuses_a_bad_dataset_json(tmp_path, capsys, edit, needle):
    src = _msd(tmp_path / "msd")
    _edit_json(src / "dataset.json", edit)
    before = tree_digest(src)
    code, _, err = run_cli(capsys, ["store", "import", src, tmp_path / "new"])
    assert_one_line_error(code, err, "dataset.json", needle)
    assert not (tmp_path / "new").exists()
    assert tree_digest(src) == before


def test_import_is_all_or_nothing_into_a_new_store(tmp_path, capsys):
    src = _msd(tmp_path / "msd")
    good = (src / "labelsTr" / "c2.nii.gz").read_bytes()
    (src / "labelsTr" / "c2.nii.gz").write_bytes(good[: len(good) // 2])  # the third case is broken
    code, _, err = run_cli(capsys, ["store", "import", src, tmp_path / "new"])
    assert_one_line_error(code, err, "c2.nii.gz")
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    (src / "labelsTr" / "c2.nii.gz").write_bytes(good)
    code, out, err = run_cli(capsys, ["store", "import", src, tmp_path / "new"])
    assert code == 0 and "3 cases" in out, err


def test_import_is_all_or_nothing_into_an_existing_store(store, tmp_path, capsys):
    src = _msd(tmp_path / "msd")
    _edit_json(src / "dataset.json", _set(["labels"], {"0": "background", "1": "lesion", "2": "cyst"}))
    good = (src / "labelsTr" / "c2.nii.gz").read_bytes()
    (src / "labelsTr" / "c2.nii.gz").write_bytes(good[: len(good) // 2])
    before = tree_digest(store)
    code, _, err = run_cli(capsys, ["store", "import", src, store])
    assert_one_line_error(code, err, "c2.nii.gz")
    assert tree_digest(store) == before  # cases, label table and all
    (src / "labelsTr" / "c2.nii.gz").write_bytes(good)
    code, out, err = run_cli(capsys, ["store", "import", src, store])
    assert code == 0 and "5 cases" in out, err
    assert LabeledStore(store).labels == {0: "background", 1: "lesion", 2: "cyst"}


def test_list_into_a_closed_pipe_is_quiet(store):
    proc = subprocess.run(
        f"{sys.executable} -m semisam store list {store} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=120,
    )
    assert proc.stdout.startswith("store ") and proc.stderr == "", proc.stderr
