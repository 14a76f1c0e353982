"""Python packages SemiSAM needs inside Slicer: which are missing, and installing them the Slicer way.

The list is ``Resources/requirements.txt`` (installed as ``<qt-scripted-modules>/Resources/SemiSAM/``);
torch is not in it: Slicer's PyTorch extension installs torch, with the CUDA or CPU build for the machine,
and pip must never replace that build (``monai`` and ``timm`` depend on torch, so an unguarded install
could pull a generic build from PyPI over it). Every path below drops a requirement named in
:data:`SKIP_PACKAGES` before pip sees the list, and keeps pip from touching torch as a dependency:

* Slicer 5.12 and later: ``slicer.packaging`` checks the requirements without a subprocess (``pip_check``)
  and installs what is missing (``pip_ensure`` with ``skip_packages=["torch"]``: each package is installed
  with ``--no-deps`` and its dependencies are walked, leaving torch out).
* Slicer 5.10 and 5.11 (no ``slicer.packaging``): the missing requirements are checked against
  ``importlib.metadata`` and installed with ``slicer.util.pip_install`` under a constraints file that pins
  torch to the installed version, so pip keeps that build or fails instead of replacing it.

The file is parsed here on every version (with ``packaging``, which Slicer ships), so that a line reads the
same everywhere and a bad one is named with its line number. Checking needs no Slicer, so it is tested
headless; installing happens only from the Widget.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
#: Where the requirements file is: a development checkout, then an installed extension.
CANDIDATES = (
    _HERE.parent / "Resources" / "requirements.txt",
    _HERE.parent / "Resources" / "SemiSAM" / "requirements.txt",
)

#: Distributions pip must never install or replace: the PyTorch extension installs torch.
SKIP_PACKAGES = ("torch",)

REQUESTER = "SemiSAM"


class RequirementsError(ValueError):
    """The requirements file is missing or holds a line that is not a requirement."""


class TorchMissingError(RuntimeError):
    """torch is not installed, so the other packages cannot be installed without pip choosing a torch."""


def requirements_file() -> Path:
    """The first existing candidate path; raises :class:`RequirementsError` naming all candidates."""
    for path in CANDIDATES:
        if path.is_file():
            return path
    raise RequirementsError(
        "SemiSAM requirements.txt not found at " + " or ".join(str(p) for p in CANDIDATES)
    )


def packaging_api() -> ModuleType | None:
    """``slicer.packaging`` (Slicer 5.12 and later), or ``None`` on older Slicer and outside Slicer."""
    try:
        module = importlib.import_module("slicer.packaging")
    except ImportError:
        return None
    return module if callable(getattr(module, "pip_ensure", None)) else None


def parse_requirements(text: str, source: str = "requirements.txt") -> list:
    """``packaging.requirements.Requirement`` per line (comments and blank lines skipped).

    Raises:
        RequirementsError: a line that is not a requirement (the message names file, line and text).
    """
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            out.append(Requirement(line))
        except InvalidRequirement as exc:
            raise RequirementsError(
                f"{source}:{number}: {raw.strip()!r} is not a requirement ({exc})"
            ) from exc
    return out


def load_requirements(path: Path | None = None) -> list:
    """The requirements of ``path`` (default :func:`requirements_file`) as ``Requirement`` objects."""
    path = Path(path or requirements_file())
    return parse_requirements(path.read_text(encoding="utf-8"), str(path))


def is_skipped(requirement) -> bool:
    """Whether ``requirement`` names a distribution of :data:`SKIP_PACKAGES` (names compared the way pip
    compares them: case, ``-``, ``_`` and ``.`` do not matter)."""
    from packaging.utils import canonicalize_name

    return canonicalize_name(requirement.name) in {canonicalize_name(n) for n in SKIP_PACKAGES}


def pip_requirements(path: Path | None = None) -> list:
    """The requirements pip may install: those of ``path`` without :data:`SKIP_PACKAGES`."""
    return [r for r in load_requirements(path) if not is_skipped(r)]


def _satisfied(requirement, version_of: Callable[[str], str]) -> bool:
    if requirement.marker is not None and not requirement.marker.evaluate():
        return True  # not for this platform / Python
    try:
        installed = version_of(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return requirement.specifier.contains(installed, prereleases=True)


def missing_requirements(
    path: Path | None = None,
    version_of: Callable[[str], str] | None = None,
) -> list[str]:
    """Requirements (as written, e.g. ``monai>=1.3``) the running Python does not satisfy, in file order;
    torch is never among them (:func:`torch_available` says whether the PyTorch extension installed it).

    Args:
        path: requirements file (default :func:`requirements_file`).
        version_of: installed version of a distribution, raising ``PackageNotFoundError`` when absent
            (default: ``slicer.packaging.pip_check`` where Slicer has it, else ``importlib.metadata``).
    """
    requirements = pip_requirements(path)
    api = packaging_api() if version_of is None else None
    if api is not None:
        return [str(r) for r in requirements if not api.pip_check(r)]
    version_of = version_of or importlib.metadata.version
    return [str(r) for r in requirements if not _satisfied(r, version_of)]


def install_missing(path: Path | None = None, version_of: Callable[[str], str] | None = None) -> None:
    """Install the missing requirements (Slicer application only; the caller has asked the user first).

    Args:
        path: requirements file (default :func:`requirements_file`).
        version_of: installed version of a distribution (default ``importlib.metadata.version``), for
            Slicer without ``slicer.packaging``.

    Raises:
        TorchMissingError: Slicer without ``slicer.packaging`` and torch not installed yet (pip would
            pick a torch for ``monai``); install it with the PyTorch extension first.
        subprocess.CalledProcessError: pip failed.
    """
    requirements = pip_requirements(path)
    api = packaging_api()
    if api is not None:
        skipped = api.pip_ensure(
            requirements,
            skip_packages=list(SKIP_PACKAGES),
            prompt_install=False,  # the Widget asked already, listing the missing packages
            requester=REQUESTER,
        )
        if skipped:
            log.info("left to the PyTorch extension: %s", ", ".join(skipped))
        return
    importlib.invalidate_caches()  # the PyTorch extension may have installed torch a moment ago
    version_of = version_of or importlib.metadata.version
    missing = [str(r) for r in requirements if not _satisfied(r, version_of)]
    if not missing:
        return
    try:
        torch_version = version_of("torch")
    except importlib.metadata.PackageNotFoundError:
        raise TorchMissingError(
            "torch is not installed: install it with the PyTorch extension first (pip would otherwise "
            f"install a generic build of torch for {', '.join(missing)})"
        ) from None
    _pip_install_keeping_torch(missing, torch_version)


def _pip_install_keeping_torch(requirements: list[str], torch_version: str) -> None:
    """``slicer.util.pip_install`` of ``requirements`` under a constraints file that pins torch to
    ``torch_version`` (the PyTorch extension's build): pip keeps that build or fails, never replaces it."""
    import slicer.util

    handle, constraints = tempfile.mkstemp(prefix="semisam-constraints-", suffix=".txt")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(f"torch=={torch_version}\n")
        log.info("pip install %s (torch kept at %s)", " ".join(requirements), torch_version)
        slicer.util.pip_install([*requirements, "--constraint", constraints])
    finally:
        Path(constraints).unlink(missing_ok=True)


def torch_available() -> bool:
    """Whether ``import torch`` would succeed (without importing it: that takes seconds)."""
    return importlib.util.find_spec("torch") is not None
