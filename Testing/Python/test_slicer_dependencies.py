"""SemiSAMLib.dependencies against stand-ins of Slicer's installers: torch never reaches pip.

Slicer 5.12 and later: a stand-in ``slicer.packaging`` module (a real module object in ``sys.modules``)
whose public functions have the signatures of ``Base/Python/slicer/packaging.py`` on Slicer's 5.12 branch
and which behaves like it where it matters here: ``pip_ensure`` installs only what ``pip_check`` finds
missing, through ``pip_install``; with ``skip_packages`` every package goes in with ``--no-deps`` and its
dependencies are walked, leaving the skipped names out; without, pip's resolver installs each requirement
with the dependencies the environment does not satisfy (a torch too old for one of them is replaced).

Slicer 5.10 and 5.11: no ``slicer.packaging``; a stand-in ``slicer.util.pip_install(requirements)`` (5.10's
signature) records the pip command line and the constraints file it names.
"""

from __future__ import annotations

import importlib.metadata
import sys
import types
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from SemiSAMLib import dependencies  # noqa: E402

#: What the stand-in environment has installed (torch: the PyTorch extension's CUDA build).
INSTALLED = {"numpy": "2.1.0", "simpleitk": "2.4.0", "torch": "2.5.1+cu121", "scipy": "1.14.0"}
#: Dependencies of the packages on the stand-in index, as their metadata declares them. timm's needs a
#: newer torch than the installed build: a resolver free to touch torch would replace it.
INDEX = {
    "monai": ["torch>=1.13", "numpy>=1.24"],
    "timm": ["torch>=2.6", "torchvision", "pyyaml"],
    "torchvision": ["torch"],
    "pyyaml": [],
    "safetensors": [],
    "torch": ["filelock"],
    "filelock": [],
}


class PipRecord:
    """What reached pip: each command's requirement strings, and every distribution pip installed."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []
        self.installed: list[str] = []
        self.skip_packages: list[list[str] | None] = []


def packaging_standin(record: PipRecord, installed: dict[str, str]) -> types.ModuleType:
    """A ``slicer.packaging`` module with the public signatures of Slicer 5.12's (see the module doc)."""
    module = types.ModuleType("slicer.packaging")

    def _to_requirements(reqs):
        if isinstance(reqs, str):
            try:
                return [Requirement(reqs)]
            except InvalidRequirement:
                return [Requirement(s) for s in reqs.split()]
        if isinstance(reqs, Requirement):
            return [reqs]
        if isinstance(reqs, list):
            return [Requirement(r) if isinstance(r, str) else r for r in reqs]
        raise TypeError(f"Expected str, Requirement, or list, got {type(reqs).__name__}")

    def load_requirements(path: str | Path) -> list[Requirement]:
        lines = Path(path).read_text().splitlines()
        return [Requirement(s.strip()) for s in lines if s.strip() and not s.strip().startswith(("#", "-"))]

    def pip_check(req: str | Requirement | list[str | Requirement], _seen=None) -> bool:
        for r in _to_requirements(req):
            if r.marker is not None and not r.marker.evaluate():
                continue
            version = installed.get(canonicalize_name(r.name))
            if version is None or version not in r.specifier:
                return False
        return True

    def _install(req: Requirement) -> None:
        installed[canonicalize_name(req.name)] = "99.0"
        record.installed.append(canonicalize_name(req.name))

    def pip_install(
        requirements: str | list[str],
        constraints: str | Path | None = None,
        no_deps_requirements: str | list[str] | None = None,
        skip_packages: list[str] | None = None,
        blocking: bool = True,
        show_progress: bool = True,
        requester: str | None = None,
        parent=None,
        logCallback=None,
        completedCallback=None,
    ) -> list[str] | None:
        reqs = _to_requirements(requirements)
        record.commands.append([str(r) for r in reqs])
        record.skip_packages.append(skip_packages)
        skip = {canonicalize_name(n) for n in skip_packages or ()}
        seen: set[str] = set()
        skipped: list[str] = []

        def walk(req: Requirement, no_deps: bool) -> None:
            name = canonicalize_name(req.name)
            if name in seen:
                return
            seen.add(name)
            if name in skip:
                skipped.append(str(req))
                return
            if not pip_check(req):
                _install(req)
            elif not no_deps:
                return  # pip's resolver leaves a satisfied requirement alone
            for dep in INDEX.get(name, []):
                walk(Requirement(dep), no_deps)

        for req in reqs:
            walk(req, skip_packages is not None)
        return skipped if skip_packages is not None else None

    def pip_ensure(
        requirements: str | Requirement | list[str | Requirement],
        constraints: str | Path | None = None,
        skip_packages: list[str] | None = None,
        prompt_install: bool = True,
        prompt_restart: bool = True,
        requester: str | None = None,
        skip_in_testing: bool = True,
        show_progress: bool = True,
    ) -> list[str] | None:
        missing = [r for r in _to_requirements(requirements) if not pip_check(r)]
        if not missing:
            return None
        return pip_install(
            [str(r) for r in missing],
            constraints=constraints,
            skip_packages=skip_packages,
            blocking=True,
            show_progress=show_progress,
            requester=requester,
        )

    for function in (load_requirements, pip_check, pip_install, pip_ensure):
        function.__module__ = module.__name__
        setattr(module, function.__name__, function)
    return module


@pytest.fixture
def requirements_txt(tmp_path):
    """A requirements file that names torch itself, beside packages that depend on it."""
    path = tmp_path / "requirements.txt"
    path.write_text("numpy>=1.24\ntorch>=2.1\nmonai>=1.3\ntimm>=0.9\nsafetensors>=0.4\nscipy>=1.10\n")
    return path


@pytest.fixture
def slicer_5_12(monkeypatch):
    """Slicer 5.12+: the stand-in ``slicer.packaging``; yields ``(record, installed)``."""
    pytest.importorskip("slicer", reason="the slicer-core wheel provides the slicer package")
    import slicer

    record, installed = PipRecord(), dict(INSTALLED)
    module = packaging_standin(record, installed)
    monkeypatch.setitem(sys.modules, "slicer.packaging", module)
    monkeypatch.setattr(slicer, "packaging", module, raising=False)
    return record, installed


def test_the_standin_replaces_torch_when_nothing_is_skipped(slicer_5_12, requirements_txt):
    """The stand-in is faithful enough to catch a call without ``skip_packages``: pip's resolver would
    replace the PyTorch extension's torch for timm."""
    record, _ = slicer_5_12
    skipped = sys.modules["slicer.packaging"].pip_ensure(["timm>=0.9"], prompt_install=False)
    assert skipped is None and "torch" in record.installed


def test_slicer_5_12_installs_through_pip_ensure_without_torch(slicer_5_12, requirements_txt):
    record, installed = slicer_5_12
    assert dependencies.packaging_api() is sys.modules["slicer.packaging"]
    missing = ["monai>=1.3", "timm>=0.9", "safetensors>=0.4"]
    assert dependencies.missing_requirements(requirements_txt) == missing
    dependencies.install_missing(requirements_txt)
    assert record.commands == [missing]  # torch's own line was dropped
    assert record.skip_packages == [["torch"]]
    assert "torch" not in record.installed and installed["torch"] == "2.5.1+cu121"
    assert set(record.installed) == {"monai", "timm", "torchvision", "pyyaml", "safetensors"}
    assert dependencies.missing_requirements(requirements_txt) == []
    dependencies.install_missing(requirements_txt)  # nothing missing: pip is not run again
    assert len(record.commands) == 1


def test_slicer_5_12_checks_the_shipped_requirements_with_pip_check(slicer_5_12):
    record, installed = slicer_5_12
    missing = dependencies.missing_requirements()
    assert missing and not any(Requirement(m).name == "torch" for m in missing)
    dependencies.install_missing()
    assert record.skip_packages == [["torch"]]
    assert "torch" not in record.installed and installed["torch"] == "2.5.1+cu121"
    assert not any(Requirement(r).name == "torch" for command in record.commands for r in command)


@pytest.fixture
def slicer_5_10(monkeypatch):
    """Slicer 5.10 / 5.11: no ``slicer.packaging``; a ``slicer.util.pip_install(requirements)`` stand-in.
    Yields the list of calls: ``(pip arguments, text of the --constraint file)``."""
    pytest.importorskip("slicer", reason="the slicer-core wheel provides the slicer package")
    import slicer
    import slicer.util

    calls = []

    def pip_install(requirements):
        args = list(requirements)
        constraints = Path(args[args.index("--constraint") + 1]) if "--constraint" in args else None
        calls.append((args, constraints.read_text() if constraints else None))

    monkeypatch.setitem(sys.modules, "slicer.packaging", None)  # import slicer.packaging: ImportError
    monkeypatch.delattr(slicer, "packaging", raising=False)
    monkeypatch.setattr(slicer.util, "pip_install", pip_install)
    return calls


def _version_of(installed: dict[str, str]):
    def version_of(name: str) -> str:
        try:
            return installed[canonicalize_name(name)]
        except KeyError:
            raise importlib.metadata.PackageNotFoundError(name) from None

    return version_of


def test_slicer_5_10_installs_the_missing_requirements_with_torch_pinned(slicer_5_10, requirements_txt):
    assert dependencies.packaging_api() is None
    version_of = _version_of(INSTALLED)
    dependencies.install_missing(requirements_txt, version_of)
    ((args, constraints),) = slicer_5_10
    assert args[:3] == ["monai>=1.3", "timm>=0.9", "safetensors>=0.4"]
    assert args[3] == "--constraint" and not Path(args[4]).exists()  # removed after pip ran
    assert constraints == "torch==2.5.1+cu121\n"  # pip keeps the extension's build or fails
    assert not any(a.startswith("-r") or Requirement(a).name == "torch" for a in args[:3])


def test_slicer_5_10_refuses_to_install_before_torch(slicer_5_10, requirements_txt):
    version_of = _version_of({k: v for k, v in INSTALLED.items() if k != "torch"})
    with pytest.raises(dependencies.TorchMissingError, match="PyTorch extension first"):
        dependencies.install_missing(requirements_txt, version_of)
    assert slicer_5_10 == []


def test_slicer_5_10_runs_no_pip_when_nothing_is_missing(slicer_5_10, requirements_txt):
    everything = dict(INSTALLED, monai="1.4", timm="1.0", safetensors="0.4.5")
    dependencies.install_missing(requirements_txt, _version_of(everything))
    assert slicer_5_10 == []


def test_no_slicer_pydeps_anywhere():
    """Slicer's dependency API is ``slicer.packaging``; no Slicer version has a module by the other name."""
    word = "slicer." + "pydeps"
    hits = [
        str(p.relative_to(REPO))
        for folder in ("SemiSAMLib", "SemiSAMSegment", "SemiSAMTrain", "Testing", "docs", "scripted_modules")
        for p in (REPO / folder).rglob("*")
        if p.suffix in {".py", ".md", ".txt", ".cmake"} and word in p.read_text(errors="replace")
    ]
    hits += [p for p in ("README.md", "CMakeLists.txt") if word in (REPO / p).read_text()]
    assert hits == []


@pytest.fixture
def i18n(monkeypatch):
    """``slicer.i18n`` (application only) as the identity translation, for the Widgets' text helpers."""
    pytest.importorskip("slicer", reason="the slicer-core wheel provides the slicer package")
    module = types.ModuleType("slicer.i18n")
    module.tr = lambda text: text
    monkeypatch.setitem(sys.modules, "slicer.i18n", module)


def test_the_panel_line_lists_torch_first_and_shows_a_broken_file(i18n, monkeypatch):
    from SemiSAMLib import gui

    monkeypatch.setattr(dependencies, "torch_available", lambda: False)
    monkeypatch.setattr(dependencies, "missing_requirements", lambda: ["monai>=1.3"])
    assert gui.dependency_status() == (
        "Missing Python packages: torch (from the PyTorch extension), monai>=1.3",
        True,
    )
    monkeypatch.setattr(dependencies, "torch_available", lambda: True)
    monkeypatch.setattr(dependencies, "missing_requirements", lambda: [])
    assert gui.dependency_status() == ("All Python packages are installed.", False)

    def broken():
        raise dependencies.RequirementsError("requirements.txt:3: 'monai >= = 1' is not a requirement")

    monkeypatch.setattr(dependencies, "missing_requirements", broken)
    text, installable = gui.dependency_status()  # the panel still opens, saying what is wrong
    assert text.startswith("Cannot check the Python packages: requirements.txt:3:") and not installable
