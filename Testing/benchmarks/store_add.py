"""Benchmark the labeled-set store: cost of a crash-safe add vs a bare write, listing, opening, export.

Prints one JSON object (medians of repeats). Ratios compare the store's add (staging folder, fsync of
every file and folder, lock, rename) with writing the same image and mask with semisam.scan.volume's atomic
writers alone, measured in the same process, so the noise of a shared machine mostly cancels.

    python Testing/benchmarks/store_add.py [--repeats 7] [--cases 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from bench_common import machine_info, median_seconds

from semisam.samples import find_case
from semisam.scan.volume import read_mask, read_volume, write_mask, write_volume
from semisam.store import LabeledStore, drill
from semisam.store.decathlon import export_dataset, import_dataset


def bench_add(tmp: Path, name: str, image, mask, repeats: int) -> dict:
    store = LabeledStore.create(tmp / f"store-{name}", {1: "lesion"})
    plain = tmp / f"plain-{name}"
    counter = iter(range(10**6))

    def bare():
        n = next(counter)
        vol = image if not isinstance(image, str | Path) else read_volume(image)
        write_volume(vol, plain / f"{n}_img.nii.gz")
        write_mask(mask, vol, plain / f"{n}_msk.nii.gz")

    bare_s = median_seconds(bare, repeats)
    add_s = median_seconds(lambda: store.add_case(image, mask), repeats)
    return {
        "add_case_s": round(add_s, 4),
        "bare_write_s": round(bare_s, 4),
        "ratio_add_vs_bare": round(add_s / bare_s, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--cases", type=int, default=200)
    args = p.parse_args()
    out: dict = {
        "benchmark": "store_add",
        "machine": machine_info(
            note="the store does not use torch; listed for comparison with other benchmarks"
        ),
        "repeats": args.repeats,
    }
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        image, mask = drill.synthetic_case("bench")
        out["small_16x32x32"] = bench_add(tmp, "small", image, mask, args.repeats)
        case = find_case("lung1", extra=[Path(__file__).resolve().parents[3] / "shared" / "data"])
        if case is not None:
            ct = read_volume(case.image)
            ct_mask = read_mask(case.label, ct).array
            r = max(3, args.repeats // 2)
            out["lung1_ct_512x512x48_from_array"] = bench_add(tmp, "ct", ct, ct_mask, r)
            nii = write_volume(ct, tmp / "lung1.nii.gz")
            out["lung1_ct_512x512x48_from_nifti_file"] = bench_add(tmp, "ctfile", nii, ct_mask, r)

        store = LabeledStore.create(tmp / "many", {1: "lesion"})
        for _ in range(args.cases):
            store.add_case(image, mask)
        out[f"with_{args.cases}_cases"] = {
            "open_s": round(median_seconds(lambda: LabeledStore(tmp / "many"), args.repeats), 4),
            "list_s": round(median_seconds(store.cases, args.repeats), 4),
            "add_case_s": round(median_seconds(lambda: store.add_case(image, mask), args.repeats), 4),
        }
        small = LabeledStore.create(tmp / "x", {1: "lesion"})
        for _ in range(20):
            small.add_case(image, mask)
        counter = iter(range(10**6))
        exp_s = median_seconds(lambda: export_dataset(small, tmp / f"exp{next(counter)}"), 3)
        counter2 = iter(range(10**6))
        imp_s = median_seconds(lambda: import_dataset(tmp / "exp0", tmp / f"imp{next(counter2)}"), 3)
        out["export_20_small_cases_s"] = round(exp_s, 4)
        out["import_20_small_cases_s"] = round(imp_s, 4)
        assert np.array_equal(LabeledStore(tmp / "imp0").read_case("case_0001").mask.array, mask)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
