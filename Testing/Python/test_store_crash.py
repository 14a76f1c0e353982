"""Crash safety: a child adding cases is SIGKILLed at 100 random moments; the store must survive each.

After every kill the store must open, list only complete cases (every voxel of image and mask checked
against what the child wrote), keep every case, mask replacement, scan, model version and promotion whose
call had returned (the child logs each one after the call returns), the active-model pointer must name a
complete version, and `check` must find nothing but removable leftovers.
The child is forked from a forkserver that has already imported the store (no torch), so one round costs
tens of milliseconds instead of a fresh interpreter's ~0.5 s; it is still a separate process killed
with SIGKILL.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from semisam.store import LabeledStore, drill
from semisam.store.registry import sha256_file, verify_model_folder

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and forkserver are POSIX")

KILLS = 100
SEED = 20261121
#: Kill delay after the child starts, uniform in [0, max(MIN_MAX_DELAY_S, 5 x one add)]: one add of a
#: 16x32x32 case takes ~30-100 ms on the 2-core CI machine, so kills land before, during and between
#: 0-6 operations; scaling by a measured add keeps that true on a slower or busier machine.
MIN_MAX_DELAY_S = 0.3


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _parse_log(path: Path) -> tuple[dict[str, str], dict[str, int], set[str], list[str], list[str]]:
    cases, masks, scans, models, actives = {}, {}, set(), [], []
    if not path.exists():
        return cases, masks, scans, models, actives
    for line in path.read_text().splitlines():
        kind, *rest = line.split()
        if kind == "case":
            cases[rest[0]] = rest[1]
        elif kind == "mask":
            masks[rest[0]] = max(masks.get(rest[0], 0), int(rest[1]))
        elif kind == "scan":
            scans.add(rest[0])
        elif kind == "model":
            models.append(rest[0])
        elif kind == "active":
            actives.append(rest[0])
    return cases, masks, scans, models, actives


def _verify_case(store: LabeledStore, case_id: str) -> None:
    case = store.read_case(case_id)
    key = case.record.provenance.notes
    image, mask = drill.synthetic_case(key)
    rev = case.record.mask_revision
    expected_mask = mask if rev == 1 else drill.replaced_mask(key, rev)
    assert np.array_equal(case.image.array, image.array), f"{case_id}: image voxels differ"
    assert case.image.same_grid(image), f"{case_id}: image geometry differs"
    assert np.array_equal(case.mask.array, expected_mask), f"{case_id}: mask (revision {rev}) differs"


def test_store_survives_kill_9_at_100_random_moments(tmp_path):
    ctx = mp.get_context("forkserver")
    # semisam.model_folder (which verifies model folders) imports torch: import it once in the fork
    # server rather than in each child, so a round still costs tens of milliseconds. The store and the
    # drill themselves never import torch (test_store_imports_without_torch).
    ctx.set_forkserver_preload(["semisam.store.drill", "semisam.model_folder"])
    warm = ctx.Process(target=os.getpid)  # start the fork server outside the timed kill windows
    warm.start()
    warm.join()

    root = tmp_path / "store"
    LabeledStore.create(root, {1: "lesion"}, modality="CT")
    model = drill.model_folder(tmp_path / "drill-model")
    verify_model_folder(model)  # valid per the checkpoint contract, or the children would fail
    source_sha = sha256_file(model / "weights.safetensors")
    log = tmp_path / "returned.log"
    rng = random.Random(SEED)
    calib = LabeledStore.create(tmp_path / "calibration", {1: "lesion"})
    image, mask = drill.synthetic_case("calibration")
    t_add = min(_timed(lambda: calib.add_case(image, mask)) for _ in range(3))
    max_delay = max(MIN_MAX_DELAY_S, 5 * t_add)
    verified: dict[str, int] = {}  # case id -> mask revision already checked voxel by voxel
    stats: Counter = Counter()
    t0 = time.perf_counter()
    for k in range(KILLS):
        child = ctx.Process(target=drill.run, args=(str(root), str(log), f"k{k}", None, True))
        child.start()
        time.sleep(rng.uniform(0.0, max_delay))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL, f"round {k}: the child died by itself ({child.exitcode})"
        # Staging folders, temporary files, uncommitted mask revisions of the killed write:
        stats["rounds_with_leftovers"] += bool(LabeledStore(root, clean=False).leftovers())

        store = LabeledStore(root)  # must open; removes the killed write's leftovers
        assert store.leftovers() == [], f"round {k}: leftovers not cleaned on open"
        records = {r.case_id: r for r in store.cases()}
        returned_cases, returned_masks, returned_scans, returned_models, actives = _parse_log(log)
        lost = set(returned_cases) - set(records)
        assert not lost, f"round {k}: cases whose add returned are missing: {sorted(lost)}"
        for cid, rev in returned_masks.items():
            assert records[cid].mask_revision >= rev, f"round {k}: mask replacement of {cid} lost"
        assert returned_scans <= {s.scan_id for s in store.unlabeled()}, f"round {k}: scan lost"
        for cid, rec in records.items():
            if verified.get(cid) != rec.mask_revision:
                _verify_case(store, cid)
                verified[cid] = rec.mask_revision
        for s in store.unlabeled():
            assert store.unlabeled_path(s.scan_id).is_file()
        registry = store.models
        versions = {v.version: v for v in registry.versions()}
        assert set(returned_models) <= set(versions), f"round {k}: a registered model version was lost"
        for v in versions.values():
            assert sha256_file(v.path / "weights.safetensors") == v.sha256 == source_sha, (
                f"round {k}: {v.version}"
            )
        active = registry.active()  # the pointer parses and names a complete version
        if actives:
            assert active is not None and active.version >= actives[-1], f"round {k}: promotion lost"
        assert store.check() == [], f"round {k}: store check found problems"
        stats["committed_not_logged"] += len(records) - len(returned_cases)

    seqs = [r.seq for r in LabeledStore(root).cases()]
    assert len(LabeledStore(root).models.versions()) >= 3
    assert len(seqs) == len(set(seqs))
    print(
        f"{KILLS} kills in {time.perf_counter() - t0:.1f} s (one add {t_add * 1000:.0f} ms, delays up to "
        f"{max_delay * 1000:.0f} ms): {len(verified)} cases, "
        f"{stats['rounds_with_leftovers']} kills left a half-written case/scan/mask behind"
    )
    # The test must actually hit writes in flight, or it proves nothing. How many kills do depends on how
    # much of an add is spent with a staging folder open: on a quiet 2-core Xeon (one add 6 ms) 4 and 14
    # of 100 in two runs, more on a busy machine; 3 still shows that kills landed inside writes.
    assert stats["rounds_with_leftovers"] >= 3, stats
    assert len(verified) >= 20
