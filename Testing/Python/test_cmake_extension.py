"""The extension's CMake files configure against the stub of Slicer's macros (Testing/cmake), carry every
script the modules and the ``semisam`` core need, and the stub rejects broken CMake files.

Run: ``pytest Testing/Python/test_cmake_extension.py``. Needs ``cmake`` >= 3.16 (on PATH or beside the
venv's python, as the ``cmake`` wheel installs it); full configures also need a C/C++ compiler, because
``project(SemiSAM)`` enables C and CXX as Slicer extensions do. Tests skip, saying so, when they are absent.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STUB = REPO / "Testing" / "cmake"
CMAKE = shutil.which("cmake") or shutil.which("cmake", path=str(Path(sys.executable).parent))
COMPILERS = bool(shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")) and bool(
    shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
)

pytestmark = pytest.mark.skipif(
    CMAKE is None, reason="cmake is not installed (apt install cmake, or pip install cmake)"
)
needs_compilers = pytest.mark.skipif(
    not COMPILERS, reason="no C/C++ compiler: project(SemiSAM) enables C and CXX, as Slicer extensions do"
)


def _flat(result: subprocess.CompletedProcess) -> str:
    """stderr with CMake's line wrapping undone (it wraps long messages at ~80 columns)."""
    return " ".join(result.stderr.split())


def configure(source: Path, build: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CMAKE, "-S", str(source), "-B", str(build), f"-DSlicer_DIR={STUB}"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def manifest(build: Path, name: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"SCRIPTS": set(), "RESOURCES": set()}
    for line in (build / "SemiSAMStubManifest" / f"{name}.txt").read_text().splitlines():
        kind, path = line.split(" ", 1)
        out[kind].add(path)
    return out


@pytest.fixture(scope="module")
def configured(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("build")
    result = configure(REPO, build)
    assert result.returncode == 0, result.stdout + result.stderr
    return build


@needs_compilers
def test_segment_module_carries_its_scripts_helpers_and_the_core(configured):
    listed = manifest(configured, "SemiSAMSegment")
    lib = {
        f"SemiSAMSegmentLib/{p.name}" for p in (REPO / "SemiSAMSegment" / "SemiSAMSegmentLib").glob("*.py")
    }
    core = {
        "semisam/" + p.relative_to(REPO / "scripted_modules" / "semisam").as_posix()
        for p in (REPO / "scripted_modules" / "semisam").rglob("*.py")
    }
    assert "SemiSAMSegment.py" in listed["SCRIPTS"]
    assert lib - listed["SCRIPTS"] == set(), "helpers not listed in SemiSAMSegment/CMakeLists.txt"
    assert core - listed["SCRIPTS"] == set(), "core files the built extension would not carry"
    assert listed["RESOURCES"] == {"Resources/Icons/SemiSAMSegment.png", "Resources/UI/SemiSAMSegment.ui"}
    # The core copies are the source files, byte for byte, where the build takes them from.
    build_copy = configured / "SemiSAMSegment" / "semisam" / "scan" / "volume.py"
    assert (
        build_copy.read_bytes() == (REPO / "scripted_modules" / "semisam" / "scan" / "volume.py").read_bytes()
    )
    installed = configured / "lib" / "Slicer-5.8" / "qt-scripted-modules" / "Resources" / "SemiSAM"
    assert (installed / "requirements.txt").read_bytes() == (
        REPO / "Resources" / "requirements.txt"
    ).read_bytes()


@needs_compilers
def test_the_shared_helpers_are_installed_beside_the_modules(configured):
    """SemiSAMLib/ (imported by both modules) lands in the scripted-modules folder as a package."""
    listed = manifest(configured, "SemiSAMLib")
    present = {f"SemiSAMLib/{p.name}" for p in (REPO / "SemiSAMLib").glob("*.py")}
    assert listed["SCRIPTS"] == present and "SemiSAMLib/__init__.py" in present
    assert listed["RESOURCES"] == set()


@needs_compilers
def test_train_module_and_extension_metadata(configured):
    listed = manifest(configured, "SemiSAMTrain")
    lib = {f"SemiSAMTrainLib/{p.name}" for p in (REPO / "SemiSAMTrain" / "SemiSAMTrainLib").glob("*.py")}
    assert listed["SCRIPTS"] == {"SemiSAMTrain.py"} | lib and "SemiSAMTrainLib/__init__.py" in lib
    assert listed["RESOURCES"] == {"Resources/Icons/SemiSAMTrain.png", "Resources/UI/SemiSAMTrain.ui"}
    extension = (configured / "SemiSAMStubManifest" / "extension.txt").read_text()
    assert "NAME SemiSAM\n" in extension and "CATEGORY Segmentation\n" in extension
    assert "DEPENDS PyTorch\n" in extension


# ------------------------------------------------------------------------------ the stub fails when it should
def _broken_copy(tmp_path: Path, module_cmake_edit) -> Path:
    """A copy of what the configure reads, with SemiSAMTrain/CMakeLists.txt edited."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("CMakeLists.txt", "Resources"):
        path = REPO / name
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, src / name)
    for module in ("SemiSAMLib", "SemiSAMSegment", "SemiSAMTrain"):
        shutil.copytree(REPO / module, src / module, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        REPO / "scripted_modules" / "semisam",
        src / "scripted_modules" / "semisam",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    cmake = src / "SemiSAMTrain" / "CMakeLists.txt"
    cmake.write_text(module_cmake_edit(cmake.read_text()))
    return src


@needs_compilers
def test_unbroken_copy_configures(tmp_path):
    """The copy itself is sound, so the failures below come from the edits alone."""
    src = _broken_copy(tmp_path, lambda text: text)
    result = configure(src, tmp_path / "build")
    assert result.returncode == 0, result.stderr


@needs_compilers
def test_stub_fails_on_unknown_keyword(tmp_path):
    src = _broken_copy(
        tmp_path, lambda text: text.replace("  WITH_GENERIC_TESTS\n", "  WITH_GENERIC_TESTS\n  PYTHON_ONLY\n")
    )
    result = configure(src, tmp_path / "build")
    assert result.returncode != 0
    assert 'Unknown keywords given to slicerMacroBuildScriptedModule(): "PYTHON_ONLY"' in _flat(result)


@needs_compilers
def test_stub_fails_on_listed_file_that_does_not_exist(tmp_path):
    src = _broken_copy(
        tmp_path, lambda text: text.replace("  ${MODULE_NAME}.py\n", "  ${MODULE_NAME}.py\n  Gone.py\n")
    )
    result = configure(src, tmp_path / "build")
    assert result.returncode != 0
    assert "slicerMacroBuildScriptedModule(SCRIPTS) given nonexistent file or directory 'Gone.py'" in _flat(
        result
    )


# Faster checks of single macro calls: CMake script mode, no project and no compiler detection.
def _run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    """Run ``body`` in script mode from ``tmp_path/mod`` (the "module folder"); ``Real.py`` exists both
    there and one level up, so ``../Real.py`` is an existing file outside the module folder."""
    module = tmp_path / "mod"
    module.mkdir(exist_ok=True)
    for folder in (tmp_path, module):
        (folder / "Real.py").write_text("")
    script = tmp_path / "check.cmake"
    script.write_text(
        f'include("{STUB.as_posix()}/SlicerConfig.cmake")\ninclude("${{Slicer_USE_FILE}}")\n{body}\n'
    )
    return subprocess.run([CMAKE, "-P", str(script)], cwd=module, capture_output=True, text=True, timeout=60)


def test_stub_macro_accepts_a_valid_call(tmp_path):
    result = _run_script(
        tmp_path, "slicerMacroBuildScriptedModule(NAME M SCRIPTS Real.py WITH_GENERIC_TESTS)"
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "mod" / "SemiSAMStubManifest" / "M.txt").read_text() == "SCRIPTS Real.py\n"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("slicerMacroBuildScriptedModule(SCRIPTS Real.py)", "NAME is mandatory"),
        ("slicerMacroBuildScriptedModule(NAME M SCRIPTS ../Real.py)", "would be installed outside"),
        ("slicerMacroBuildScriptedModule(NAME M SCRIPT Real.py)", "Unknown keywords"),
        ("slicer_add_python_unittest(SCRIPT Missing.py)", "nonexistent SCRIPT 'Missing.py'"),
        ('project(X NONE)\ninclude("${Slicer_EXTENSION_GENERATE_CONFIG}")', "EXTENSION_HOMEPAGE is not set"),
    ],
)
def test_stub_macro_rejects(tmp_path, call, message):
    if call.startswith("project"):  # project() is not allowed in script mode: use a tiny project instead
        (tmp_path / "CMakeLists.txt").write_text(
            f'cmake_minimum_required(VERSION 3.16)\nproject(X NONE)\ninclude("{STUB.as_posix()}/SlicerConfig.cmake")\n'
            'include("${Slicer_EXTENSION_GENERATE_CONFIG}")\n'
        )
        result = subprocess.run(
            [CMAKE, "-S", str(tmp_path), "-B", str(tmp_path / "b")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    else:
        result = _run_script(tmp_path, call)
    assert result.returncode != 0
    assert message in _flat(result)
