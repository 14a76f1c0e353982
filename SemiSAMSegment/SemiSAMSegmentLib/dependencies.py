"""Python packages SemiSAM needs inside Slicer, and which of them are missing.

The list is ``Resources/requirements.txt`` (installed as ``<qt-scripted-modules>/Resources/SemiSAM/``);
torch is not in it (Slicer's PyTorch extension provides it). The Widget asks the user before installing
anything; this module only reads and checks, so it is testable without Slicer.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

_HERE = Path(__file__).resolve().parent
#: Where the requirements file is: a development checkout, then an installed extension.
CANDIDATES = (
    _HERE.parents[1] / "Resources" / "requirements.txt",
    _HERE.parent / "Resources" / "SemiSAM" / "requirements.txt",
)

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:>=\s*([0-9][0-9A-Za-z.]*))?\s*$")


class RequirementsError(ValueError):
    """The requirements file is missing or holds a line this checker does not understand."""


def requirements_file() -> Path:
    """The first existing candidate path; raises :class:`RequirementsError` naming all candidates."""
    for path in CANDIDATES:
        if path.is_file():
            return path
    raise RequirementsError(
        "SemiSAM requirements.txt not found at " + " or ".join(str(p) for p in CANDIDATES)
    )


def parse_requirements(text: str, source: str = "requirements.txt") -> list[tuple[str, str | None]]:
    """``[(distribution name, minimum version or None)]`` from ``name`` / ``name>=version`` lines.

    Comments and blank lines are skipped; any other form is an error naming the line (keeping the file to
    this subset lets the check run without the ``packaging`` library, which Slicer does not promise).
    """
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _REQUIREMENT.match(line)
        if match is None:
            raise RequirementsError(f"{source}:{number}: {raw.strip()!r} is not 'name' or 'name>=version'")
        out.append((match.group(1), match.group(2)))
    return out


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def missing_requirements(
    path: Path | None = None,
    version_of: Callable[[str], str] = importlib.metadata.version,
) -> list[str]:
    """Requirement lines (``name>=version``) not satisfied by the running Python, in file order.

    Args:
        path: requirements file (default :func:`requirements_file`).
        version_of: installed version of a distribution; raises ``PackageNotFoundError`` when absent.
    """
    path = path or requirements_file()
    missing = []
    for name, minimum in parse_requirements(path.read_text(encoding="utf-8"), str(path)):
        spec = f"{name}>={minimum}" if minimum else name
        try:
            installed = version_of(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(spec)
            continue
        if minimum and _version_tuple(installed) < _version_tuple(minimum):
            missing.append(spec)
    return missing


def torch_available() -> bool:
    """Whether ``import torch`` would succeed (without importing it: that takes seconds)."""
    return importlib.util.find_spec("torch") is not None
