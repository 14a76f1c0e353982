"""Python packages SemiSAM needs inside Slicer: which are missing, and installing them the Slicer way.

The list is ``Resources/requirements.txt`` (installed as ``<qt-scripted-modules>/Resources/SemiSAM/``);
torch is not in it (Slicer's PyTorch extension provides it, with the CUDA or CPU build for the machine).

* Slicer 5.11 and later: ``slicer.pydeps`` reads the file (``load_requirements``), checks it without a
  subprocess (``pip_check``) and installs what is missing after asking the user (``pip_ensure``, with torch
  in ``skip_packages`` so that no requirement replaces the PyTorch extension's build).
* Older Slicer (and pytest): the file is parsed with ``packaging`` (which Slicer ships), checked against
  ``importlib.metadata`` and installed with ``slicer.util.pip_install``.

Checking needs no Slicer, so it is tested headless; installing happens only from the Widget.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
#: Where the requirements file is: a development checkout, then an installed extension.
CANDIDATES = (
    _HERE.parent / "Resources" / "requirements.txt",
    _HERE.parent / "Resources" / "SemiSAM" / "requirements.txt",
)

#: Distributions a requirement must never pull from PyPI: the PyTorch extension installs torch.
SKIP_PACKAGES = ("torch",)

REQUESTER = "SemiSAM"


class RequirementsError(ValueError):
    """The requirements file is missing or holds a line that is not a requirement."""


def requirements_file() -> Path:
    """The first existing candidate path; raises :class:`RequirementsError` naming all candidates."""
    for path in CANDIDATES:
        if path.is_file():
            return path
    raise RequirementsError(
        "SemiSAM requirements.txt not found at " + " or ".join(str(p) for p in CANDIDATES)
    )


def pydeps():
    """``slicer.pydeps`` (Slicer >= 5.11), or ``None`` on older Slicer and outside the application."""
    try:
        import slicer.pydeps as module
    except ImportError:
        return None
    return module if hasattr(module, "pip_ensure") else None


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
    """The requirements of ``path`` (default :func:`requirements_file`) as ``Requirement`` objects, read by
    ``slicer.pydeps.load_requirements`` where Slicer has it."""
    path = Path(path or requirements_file())
    module = pydeps()
    if module is not None:
        return list(module.load_requirements(str(path)))
    return parse_requirements(path.read_text(encoding="utf-8"), str(path))


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
    """Requirements (as written, e.g. ``monai>=1.3``) the running Python does not satisfy, in file order.

    Args:
        path: requirements file (default :func:`requirements_file`).
        version_of: installed version of a distribution, raising ``PackageNotFoundError`` when absent
            (default ``importlib.metadata.version``; with ``slicer.pydeps`` its ``pip_check`` decides).
    """
    requirements = load_requirements(path)
    module = pydeps() if version_of is None else None
    if module is not None:
        return [str(r) for r in requirements if not module.pip_check(r)]
    version_of = version_of or importlib.metadata.version
    return [str(r) for r in requirements if not _satisfied(r, version_of)]


def install_missing(path: Path | None = None) -> None:
    """Install the requirements (Slicer application only; the caller has asked the user first)."""
    import slicer

    path = Path(path or requirements_file())
    module = pydeps()
    if module is not None:
        module.pip_ensure(
            module.load_requirements(str(path)),
            skip_packages=list(SKIP_PACKAGES),
            prompt_install=False,  # the Widget asked already, listing the missing packages
            requester=REQUESTER,
        )
    else:
        slicer.util.pip_install(["-r", str(path)])


def torch_available() -> bool:
    """Whether ``import torch`` would succeed (without importing it: that takes seconds)."""
    return importlib.util.find_spec("torch") is not None
