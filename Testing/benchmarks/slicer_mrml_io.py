"""Benchmark the Slicer-side conversions the modules' Logic runs on every result (slicer-core's real MRML).

Prints one JSON object: the median seconds of repeats for loading a scan through Slicer's storage node,
MRML <-> numpy/Volume conversion, importing a mask as a segment, exporting it back, and .seg.nrrd
write/read, each also as a ratio to ``semisam.scan.volume.read_volume`` of the same scan measured in the same
process (the reference), so the noise of a shared machine mostly cancels.

    python Testing/benchmarks/slicer_mrml_io.py [--case lung1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "SemiSAMSegment"))

from bench_common import machine_info, median_seconds  # noqa: E402
from SemiSAMSegmentLib import mrml_io  # noqa: E402

from semisam.samples import find_case  # noqa: E402
from semisam.scan.volume import read_mask, read_volume  # noqa: E402


def _scene():
    return mrml_io.batch_scene()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="lung1")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    case = find_case(args.case, extra=[REPO.parent / "shared" / "data"])
    if case is None:
        raise SystemExit(f"sample case {args.case!r} not found; run `semisam samples fetch`")

    scene = _scene()
    reference = read_volume(case.image)
    mask = read_mask(case.label, reference).array
    volume_node = mrml_io.load_volume(scene, case.image)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    mrml_io.import_mask(mask, volume_node, seg, {1: "lesion"})

    with tempfile.TemporaryDirectory() as tmp:
        seg_path = Path(tmp) / "bench.seg.nrrd"
        mrml_io.save_segmentation(seg, seg_path)

        def load_and_drop():
            node = mrml_io.load_volume(scene, case.image)
            scene.RemoveNode(node.GetStorageNode())
            scene.RemoveNode(node)

        def load_seg_and_drop():
            node = mrml_io.load_segmentation(scene, seg_path)
            scene.RemoveNode(node.GetStorageNode())
            scene.RemoveNode(node)

        ops = {
            "read_volume_semisam (reference)": lambda: read_volume(case.image),
            "load_volume_slicer_storage_node": load_and_drop,
            "volume_from_node": lambda: mrml_io.volume_from_node(volume_node),
            "node_from_volume": lambda: mrml_io.node_from_volume(reference, scene, node=volume_node),
            "import_mask_as_segment": lambda: mrml_io.import_mask(mask, volume_node, seg, {1: "lesion"}),
            "export_mask_from_segment": lambda: mrml_io.export_mask(seg, volume_node),
            "save_seg_nrrd": lambda: mrml_io.save_segmentation(seg, seg_path),
            "load_seg_nrrd": load_seg_and_drop,
        }
        medians = {name: median_seconds(fn, args.repeats) for name, fn in ops.items()}
        # Correctness alongside speed: the exported mask is the imported one.
        assert np.array_equal(mrml_io.export_mask(seg, volume_node), mask)

    ref = medians["read_volume_semisam (reference)"]
    result = {
        "benchmark": "slicer_mrml_io",
        "case": args.case,
        "shape_zyx": list(reference.shape),
        "mask_voxels": int(mask.astype(bool).sum()),
        "repeats": args.repeats,
        "median_s": {k: round(v, 4) for k, v in medians.items()},
        "ratio_to_reference": {k: round(v / ref, 3) for k, v in medians.items()},
        "machine": machine_info(slicer_core=importlib.metadata.version("slicer-core")),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
