"""Shared helpers of the hostile-input tests (test_robust_*.py, test_fuzz_inputs.py): small real files,
a small real store, and the "one line, exit 1, inputs unchanged" assertion."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from semisam.cli import main
from semisam.scan.volume import Volume, write_mask, write_volume
from semisam.store import LabeledStore, drill


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below ``folder`` (hidden lock file excluded)."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): sha(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != ".lock"
    }


def run_cli(capsys, argv: list) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    """Exit 1, no traceback, exactly one ``error:`` line, and each needle in it; returns that line."""
    assert code == 1, (code, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def small_scan(folder: Path, name: str = "scan.nii.gz", seed: int = 0) -> Path:
    """A (8, 16, 16) float32 scan with a bright box (1 x 1 x 2 mm voxels)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 10, (8, 16, 16)).astype(np.float32)
    a[2:6, 4:12, 4:12] += 300
    return write_volume(Volume(a, (1.0, 1.0, 2.0)), Path(folder) / name)


def prompts_file(folder: Path) -> Path:
    p = Path(folder) / "prompts.json"
    p.write_text(json.dumps({"axis": "axial", "prompts": [{"slice": 3, "box": [4, 4, 11, 11]}]}))
    return p


def make_store(root: Path, work: Path, n_cases: int = 2, models: bool = True) -> Path:
    """A store with ``n_cases`` cases and (optionally) two model versions, v0002 active after v0001."""
    store = LabeledStore.create(root, {1: "lesion"}, modality="CT")
    for n in range(n_cases):
        image, mask = drill.synthetic_case(f"robust{n}")
        store.add_case(image, mask)
    if models:
        for n in (1, 2):
            v = store.models.add(drill.model_folder(work / f"model{n}"), metrics={"dice": 0.5 + 0.1 * n})
            store.models.promote(v.version)
    return root


def copy_store(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, symlinks=True)
    return dest


def nifti_pair(folder: Path, key: str) -> tuple[Path, Path]:
    image, mask = drill.synthetic_case(key)
    return (
        write_volume(image, Path(folder) / f"{key}_img.nii.gz"),
        write_mask(mask, image, Path(folder) / f"{key}_mask.nii.gz"),
    )
