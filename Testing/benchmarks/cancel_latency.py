"""Benchmark how long SemiSAMSegment's Cancel takes to end a running propagation (slicer-core MRML, CPU).

A propagation worker is started on a lung1 nodule crop with nothing cached (so it is encoding slices),
cancelled as soon as it leaves its "starting" stage, and the seconds from ``cancel()`` to the worker's
end are recorded. The reference in the same run is one LiteMedSAM encoder call on a slice of that crop:
the worker stops at its next progress report, so the ratio latency / encode should stay near or below 1.
Prints one JSON object (medians of repeats, machine info).

    python Testing/benchmarks/cancel_latency.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "SemiSAMSegment"))

from bench_common import machine_info  # noqa: E402
from SemiSAMSegmentLib import mrml_io  # noqa: E402
from SemiSAMSegmentLib.selftest import roi_around  # noqa: E402

from semisam.propagation.simulate import crop_around, middle_slice  # noqa: E402
from semisam.samples import find_case  # noqa: E402
from semisam.scan.volume import read_mask, read_volume  # noqa: E402
from semisam.slices import box_from_mask  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    from semisam.generalists import build_generalist

    case = find_case("lung1", extra=[SHARED])
    full = read_volume(case.image)
    crop, label = crop_around(full, read_mask(case.label, reference=full).array, (2, 24, 24))
    scene = mrml_io.batch_scene()
    logic = importlib.import_module("SemiSAMSegment").SemiSAMSegmentLogic()
    key = middle_slice(label)
    roi = roi_around(scene, crop, box_from_mask(label[key] > 0), key)
    model = build_generalist("litemedsam", device="cpu")
    plane = crop.array[key].astype(np.float32)
    slice01 = (plane - plane.min()) / max(float(plane.max() - plane.min()), 1e-6)  # (rows, cols) in [0, 1]
    latencies, encodes = [], []
    for r in range(args.repeats + 1):  # the first repeat warms up (imports, sessions) and is dropped
        node = mrml_io.node_from_volume(crop, scene, f"cancel {r}")
        seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        worker = logic.startPropagate(node, seg, "lesion", None, roi, device="cpu")
        while worker.poll().stage == "starting" and not worker.poll().finished:
            time.sleep(0.005)
        t0 = time.perf_counter()
        worker.cancel()
        status = worker.wait(120)
        latency = time.perf_counter() - t0
        if status.state.value != "cancelled":
            raise SystemExit(f"repeat {r}: the worker ended {status.state.value}, not cancelled")
        t1 = time.perf_counter()
        model.encode(slice01)
        encode = time.perf_counter() - t1
        if r:
            latencies.append(latency)
            encodes.append(encode)
    lat, enc = statistics.median(latencies), statistics.median(encodes)
    out = {
        "benchmark": "cancel_latency",
        "repeats": args.repeats,
        "cancel_to_end_s": {"median": round(lat, 3), "all": [round(x, 3) for x in latencies]},
        "one_encode_s": {"median": round(enc, 3), "all": [round(x, 3) for x in encodes]},
        "latency_over_encode": round(lat / enc, 3) if enc > 0 else None,
        "machine": machine_info(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
