"""The ExtensionsIndex entry, the extension metadata, icons and Python requirements agree with each other."""

from __future__ import annotations

import copy
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "Testing" / "schemas" / "slicer-extension-catalog-entry-schema-v1.0.2.json"
ENTRY_PATH = REPO / "Resources" / "SemiSAM.json"


@pytest.fixture(scope="module")
def schema() -> dict:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["$id"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    jsonschema.Draft7Validator.check_schema(schema)
    return schema


@pytest.fixture(scope="module")
def entry() -> dict:
    return json.loads(ENTRY_PATH.read_text())


def _cmake_set(name: str) -> str:
    """Value of ``set(NAME "value")`` in the top-level CMakeLists.txt, with ${...} of earlier sets expanded."""
    text = (REPO / "CMakeLists.txt").read_text()
    values = dict(re.findall(r'^set\((\w+) "([^"]*)"\)', text, flags=re.M))
    value = values[name]
    for key, val in values.items():
        value = value.replace("${" + key + "}", val)
    return value


def test_entry_is_valid_against_the_v1_0_2_schema(schema, entry):
    jsonschema.validate(entry, schema)
    assert entry["$schema"] == schema["$id"]


@pytest.mark.parametrize(
    "edit",
    [
        lambda e: e.pop("scm_url"),
        lambda e: e.update(tier=7),
        lambda e: e.update(scm_type="svn"),
        lambda e: e.update(homepage="https://example.org"),  # not a catalog-entry property
    ],
    ids=["no scm_url", "tier out of range", "unknown scm_type", "extra property"],
)
def test_schema_rejects_broken_entries(schema, entry, edit):
    broken = copy.deepcopy(entry)
    edit(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_entry_agrees_with_the_cmake_metadata(entry):
    assert entry["category"] == _cmake_set("EXTENSION_CATEGORY") == "Segmentation"
    assert entry["build_dependencies"] == _cmake_set("EXTENSION_DEPENDS").split() == ["PyTorch"]
    assert entry["scm_url"].removesuffix(".git") == _cmake_set("SEMISAM_REPOSITORY_URL")
    assert _cmake_set("EXTENSION_ICONURL").endswith("/Resources/Icons/SemiSAM.png")


@pytest.mark.parametrize(
    "path",
    [
        "Resources/Icons/SemiSAM.png",
        "SemiSAMSegment/Resources/Icons/SemiSAMSegment.png",
        "SemiSAMTrain/Resources/Icons/SemiSAMTrain.png",
    ],
)
def test_icons_are_128_pixel_pngs(path):
    data = (REPO / path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (128, 128)


def test_slicer_requirements_are_the_core_dependencies_without_torch():
    sys.path.insert(0, str(REPO))
    from packaging.requirements import Requirement

    from SemiSAMLib import dependencies

    listed = {
        r.name: str(r.specifier)
        for r in dependencies.parse_requirements((REPO / "Resources" / "requirements.txt").read_text())
    }
    assert "torch" not in listed  # Slicer's PyTorch extension provides it
    assert dependencies.SKIP_PACKAGES == ("torch",)  # ... and no requirement may replace its build
    core = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for spec in core:
        requirement = Requirement(spec)
        if requirement.name == "torch":
            continue
        assert listed.get(requirement.name) == str(requirement.specifier), (
            f"{spec} differs in Resources/requirements.txt"
        )


def test_requirements_checker(tmp_path):
    """Without ``slicer.packaging`` (Slicer < 5.12, pytest) the file is checked with ``importlib.metadata``:
    full specifiers, markers for other platforms skipped, a bad line named with its number."""
    sys.path.insert(0, str(REPO))
    from importlib.metadata import PackageNotFoundError

    from SemiSAMLib import dependencies

    assert dependencies.packaging_api() is None  # the slicer-core wheel has no slicer.packaging
    req = tmp_path / "requirements.txt"
    req.write_text(
        "# comment\nalpha>=1.10\nbeta\ngamma>=2.0,<3  # trailing comment\n"
        'delta>=1; sys_platform == "nonexistent-os"\n'
    )
    installed = {"alpha": "1.9.3", "gamma": "2.0.post1"}

    def version_of(name):
        if name not in installed:
            raise PackageNotFoundError(name)
        return installed[name]

    assert dependencies.missing_requirements(req, version_of) == ["alpha>=1.10", "beta"]
    installed["gamma"] = "3.1"
    assert dependencies.missing_requirements(req, version_of) == ["alpha>=1.10", "beta", "gamma<3,>=2.0"]
    req.write_text("alpha >= = 1\n")
    with pytest.raises(dependencies.RequirementsError, match=r"requirements\.txt:1: 'alpha >= = 1' is not a"):
        dependencies.missing_requirements(req, version_of)
    assert dependencies.missing_requirements(REPO / "Resources" / "requirements.txt") == []  # this venv
