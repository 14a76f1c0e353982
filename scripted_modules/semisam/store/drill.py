"""A crash/concurrency drill: add synthetic cases to a store as fast as possible, logging each success.

Used by the store's tests (a child process killed at random moments, two children racing) and by
people who want to see the store survive ``kill -9`` on their own disk::

    python -m semisam.store.drill STORE --log returned.txt --count 50 --key a

Each operation that *returned* is appended to ``--log`` as one line (``case <id> <key>``,
``mask <id> <revision>``, ``scan <id>``, ``model <version>``, ``active <version>``) with a single ``write`` on an ``O_APPEND`` file, so a kill
right after the store call can lose the line but never corrupt the log. Volumes are small
(16 x 32 x 32) and derived from the key, so a checker can regenerate and compare every voxel.
Never imports torch (starts in a fraction of a second).
"""

from __future__ import annotations

import argparse
import json
import os
import zlib
from pathlib import Path

import numpy as np

from semisam.json_schema import warm
from semisam.scan.volume import Volume
from semisam.store import _fs
from semisam.store.labeled import LabeledStore
from semisam.store.records import Provenance

SHAPE_ZYX = (16, 32, 32)

# Every store read checks its JSON against a schema; the first check of a kind costs ~0.1 s. Done at
# import, a fork server that preloads this module hands warm validators to each drill it forks, so a
# child killed within a few hundred milliseconds still gets real work done.
warm("store_meta", "case_record", "scan_record", "registry_record", "active", "manifest")


def synthetic_case(key: str) -> tuple[Volume, np.ndarray]:
    """Image (int16, 1x1x2.5 mm) and binary mask (a box) determined by ``key``."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    image = rng.integers(-1000, 1000, SHAPE_ZYX, dtype=np.int16)
    z, y, x = (int(rng.integers(1, s - 6)) for s in SHAPE_ZYX)
    mask = np.zeros(SHAPE_ZYX, np.uint8)
    mask[z : z + 5, y : y + 5, x : x + 5] = 1
    return Volume(image, (1.0, 1.0, 2.5), (10.0, -20.0, 30.0)), mask


def replaced_mask(key: str, revision: int) -> np.ndarray:
    """The mask a drill writes as ``revision`` (>= 2) of the case made from ``key``."""
    _, mask = synthetic_case(key)
    return np.roll(mask, revision - 1, axis=2)


def _fs_sha256(path: Path) -> str:
    from semisam.fileio import sha256_file

    return sha256_file(path)


def model_folder(path: Path) -> Path:
    """A small valid model folder (manifest.json + weights.safetensors) at ``path``, made atomically once."""
    if path.is_dir():
        return path
    from safetensors.numpy import save_file  # numpy only, no torch

    tmp = _fs.tmp_name(path.parent, path.name)
    tmp.mkdir(parents=True)
    save_file({"w": np.arange(4096, dtype=np.float32)}, str(tmp / "weights.safetensors"))
    manifest = {  # the contract of semisam.model_folder.ModelManifest, written without torch
        "format_version": 1,
        "arch": "unet3d",  # a registered name: registration refuses unknown architectures
        "kwargs": {"n_classes": 2},
        "labels": {"lesion": 1},
        "modality": "CT",
        "preprocessing": {
            "target_spacing": [1.0, 1.0, 2.5],
            "orientation": "LPS",
            "intensity": {"mode": "ct"},
        },
        "sha256": _fs_sha256(tmp / "weights.safetensors"),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    try:
        os.rename(tmp, path)
    except OSError:  # another drill made it first
        _fs.remove_path(tmp)
    return path


def run(
    root: str | os.PathLike,
    log_path: str | os.PathLike,
    key: str,
    count: int | None = None,
    models: bool = False,
) -> int:
    """Add cases keyed ``<key>-<n>`` until ``count`` (forever when None).

    Every 3rd add also replaces that case's mask, every 4th registers an unlabeled scan and, with
    ``models``, each case whose store-wide sequence number is a multiple of 4 registers a model version
    and promotes it. Returns the number of cases added.
    """
    store = LabeledStore(root)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    source = model_folder(Path(log_path).parent / "drill-model") if models else None
    try:
        n = 0
        while count is None or n < count:
            case_key = f"{key}-{n}"
            image, mask = synthetic_case(case_key)
            rec = store.add_case(image, mask, Provenance(annotator="drill", notes=case_key))
            os.write(fd, f"case {rec.case_id} {case_key}\n".encode())
            n += 1
            if n % 3 == 0:
                rec = store.replace_mask(rec.case_id, replaced_mask(case_key, 2), Provenance(notes=case_key))
                os.write(fd, f"mask {rec.case_id} {rec.mask_revision}\n".encode())
            if n % 4 == 0:
                scan = store.add_unlabeled(image)
                os.write(fd, f"scan {scan.scan_id}\n".encode())
            if source is not None and rec.seq % 4 == 0:  # seq: counts across drills, so short ones too
                version = store.models.add(source).version
                os.write(fd, f"model {version}\n".encode())
                store.models.promote(version, require_better=False)
                os.write(fd, f"active {version}\n".encode())
        return n
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m semisam.store.drill", description=__doc__.split("\n")[0])
    p.add_argument("store", type=Path, help="an existing store folder")
    p.add_argument("--log", type=Path, required=True, help="file to append each returned operation to")
    p.add_argument("--key", default="drill", help="prefix of the synthetic cases' keys")
    p.add_argument("--count", type=int, default=None, help="number of cases (default: until killed)")
    p.add_argument("--models", action="store_true", help="also register and promote model versions")
    args = p.parse_args(argv)
    run(args.store, args.log, args.key, args.count, args.models)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
