"""Two real processes add 50 cases each to one store at the same time: 100 cases, none lost or mixed."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from semisam.store import LabeledStore, drill


def test_two_processes_adding_50_cases_each_end_with_100(tmp_path):
    root = tmp_path / "store"
    LabeledStore.create(root, {1: "lesion"})
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    t0 = time.perf_counter()
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "semisam.store.drill",
                str(root),
                "--log",
                str(log),
                "--key",
                key,
                "--count",
                "50",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        for key, log in zip("ab", logs, strict=True)
    ]
    for c in children:
        _, err = c.communicate(timeout=300)
        assert c.returncode == 0, err
    elapsed = time.perf_counter() - t0

    store = LabeledStore(root)
    records = store.cases()
    assert len(records) == 100
    assert sorted(r.seq for r in records) == list(range(1, 101)), "sequence numbers must be unique, no gaps"
    logged = {}
    for log in logs:
        for line in log.read_text().splitlines():
            kind, *rest = line.split()
            if kind == "case":
                logged[rest[0]] = rest[1]
    assert len(logged) == 100 and set(logged) == {r.case_id for r in records}
    # Every record belongs to the process that logged it, and every voxel is that process's.
    for r in records:
        assert r.provenance.notes == logged[r.case_id]
        case = store.read_case(r.case_id)
        image, mask = drill.synthetic_case(r.provenance.notes)
        expected = mask if r.mask_revision == 1 else drill.replaced_mask(r.provenance.notes, r.mask_revision)
        assert np.array_equal(case.image.array, image.array) and np.array_equal(case.mask.array, expected)
    # The split rule held under contention: exactly every 5th committed case is held out.
    assert [r.seq for r in records if r.split == "validation"] == list(range(5, 101, 5))
    assert len(store.unlabeled()) == 2 * (50 // 4)
    assert store.check() == []
    # The two writers really overlapped (the add order alternates between them).
    owners = [r.provenance.notes[0] for r in records]
    switches = sum(a != b for a, b in zip(owners, owners[1:], strict=False))
    print(f"2 x 50 adds in {elapsed:.1f} s; the writer changed {switches} times along the add order")
    assert switches >= 2
