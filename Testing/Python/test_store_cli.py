"""`semisam store ...`: the commands a person types, their readable output and their one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from semisam.cli import main
from semisam.scan.volume import write_mask, write_volume
from semisam.store import LabeledStore, drill


@pytest.fixture
def files(tmp_path):
    image, mask = drill.synthetic_case("cli")
    return write_volume(image, tmp_path / "img.nrrd"), write_mask(mask, image, tmp_path / "mask.nii.gz")


def run(capsys, *argv):
    code = main(["store", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_workflow(tmp_path, files, capsys):
    image, mask = files
    root = tmp_path / "st"
    code, out, _ = run(capsys, "init", root, "--label", "1=nodule", "--modality", "CT")
    assert code == 0 and "created store" in out and "1=nodule" in out
    for n in range(5):
        code, out, _ = run(
            capsys,
            "add",
            root,
            image,
            mask,
            "--annotator",
            "JD",
            "--prompts",
            "box=1,point+=2",
            "--started",
            "2026-01-01T10:00:00Z",
            "--finished",
            "2026-01-01T10:01:00Z",
            "--proposal",
            mask,
        )
        assert code == 0 and f"added case_000{n + 1}" in out and "proposal Dice 1.000" in out
    assert "(validation;" in out  # the 5th case
    code, out, _ = run(capsys, "add-unlabeled", root, image, image, "--reference")
    assert code == 0 and out.count("referenced at") == 2
    code, out, _ = run(capsys, "list", root)
    assert "5 cases (4 train, 1 validation), 2 unlabeled scans" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("case_0005"))
    assert line.split()[:7] == ["case_0005", "validation", "1:125", "r1", "3", "60", "1.000"]
    code, out, _ = run(capsys, "list", root, "--json")
    assert [c["split"] for c in json.loads(out)["cases"]] == ["train"] * 4 + ["validation"]

    code, out, _ = run(capsys, "export", root, tmp_path / "ds", "--layout", "msd")
    assert code == 0 and "exported 5 cases (1 validation) and 2 unlabeled scans" in out
    code, out, _ = run(capsys, "import", tmp_path / "ds", tmp_path / "st2")
    assert code == 0 and "holds 5 cases (1 validation) and 2 unlabeled scans" in out
    assert LabeledStore(tmp_path / "st2").validation_ids() == ["case_0005"]

    code, out, _ = run(capsys, "add-model", root, drill.model_folder(tmp_path / "m1"), "--dice", "0.7")
    assert code == 0 and "registered v0001" in out
    run(capsys, "add-model", root, drill.model_folder(tmp_path / "m2"), "--dice", "0.6")
    assert run(capsys, "promote", root, "v0001")[1] == "active model: v0001\n"
    code, _, err = run(capsys, "promote", root, "v0002")
    assert code == 1 and "not better" in err
    assert run(capsys, "promote", root, "v0002", "--force")[0] == 0
    assert run(capsys, "rollback", root)[1] == "active model: v0001 (rolled back)\n"
    assert "model *v0001: unet3d" in run(capsys, "list", root)[1]

    (root / "cases" / ".tmp-case_0006-0123").mkdir()
    code, out, _ = run(capsys, "check", root)
    assert code == 1 and "leftover of an interrupted write" in out
    code, out, _ = run(capsys, "check", root, "--clean", "--deep")
    assert code == 0 and "5 cases, 0 problem(s)" in out


def test_cli_errors_are_one_line(tmp_path, files, capsys):
    image, mask = files
    code, _, err = run(capsys, "list", tmp_path / "none")
    assert code == 1 and err.startswith("semisam store: error:") and "no such store folder" in err
    run(capsys, "init", tmp_path / "st", "--label", "1=a")
    code, _, err = run(capsys, "init", tmp_path / "st", "--label", "1=a")
    assert code == 1 and "already exists" in err
    code, _, err = run(capsys, "add", tmp_path / "st", image, mask, "--prompts", "box")
    assert code == 1 and "expected KIND=N" in err
    code, _, err = run(capsys, "export", tmp_path / "st", tmp_path / "out")
    assert code == 1 and "no labeled cases" in err
    code, _, err = run(capsys, "init", tmp_path / "s3", "--label", "one=a")
    assert code == 1 and "VALUE=NAME" in err
    assert len(err.strip().splitlines()) == 1


def test_entry_point_runs_as_a_process(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "semisam", "store", "init", str(tmp_path / "p"), "--label", "1=lesion"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "p" / "semisam_store.json").is_file()
