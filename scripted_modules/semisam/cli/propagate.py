"""``semisam propagate IMAGE --prompts PROMPTS.json --output MASK.nii.gz``: few prompts -> 3D mask.

PROMPTS.json is in voxel coordinates of IMAGE (see :mod:`semisam.prompts`)::

    {"axis": "axial", "prompts": [{"slice": 32, "box": [i0, j0, i1, j1]},
                                  {"slice": 40, "point": [i, j], "positive": false}]}

The mask is written on exactly IMAGE's grid; ``--confidence`` writes per-slice confidence and why
propagation stopped, as JSON. Bad prompts are reported (exit code 1) before any model is loaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from semisam.device import DEVICE_CHOICES
from semisam.scan.intensity import CT_PRESETS

#: ``semisam.propagation.params.FIELDS_OF_VIEW``, named here so that ``--help`` needs no torch
FIELD_OF_VIEW_CHOICES = ("auto", "whole")

# Same choices as semisam.device.DEVICE_CHOICES, spelled out so that building the parser (and failing on
# bad input) does not import torch: that import alone takes 3-20 s on a busy 2-core machine.

log = logging.getLogger(__name__)

WINDOW_CHOICES = (*CT_PRESETS, "percentile")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "propagate",
        help="segment a structure in 3D from a few box/point prompts (SAM-family generalist)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("image", help="the scan (NIfTI, NRRD, MHA or a DICOM folder)")
    p.add_argument("--prompts", required=True, help="prompts JSON in voxel coordinates of IMAGE")
    p.add_argument("--output", required=True, help="mask file to write (e.g. MASK.nii.gz or .nrrd)")
    p.add_argument("--model", default=None, help="generalist NAME[:CHECKPOINT] (default litemedsam)")
    p.add_argument(
        "--window",
        choices=WINDOW_CHOICES,
        default=None,
        help="intensity window: a CT preset or 'percentile' (default: CT lung window / MR percentiles)",
    )
    p.add_argument("--modality", choices=("CT", "MR"), default=None, help="default: guessed from intensities")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--confidence", default=None, help="write per-slice confidence as JSON here")
    p.add_argument(
        "--field-of-view",
        choices=FIELD_OF_VIEW_CHOICES,
        default="auto",
        help="auto: a box is answered on the whole slice and on a closer view around it, and the answer "
        "that fills the box better is kept (default); whole: the whole slice only",
    )
    p.add_argument(
        "--store",
        default=None,
        help="answer with the store's active generalist version (semisam adapt), if it has one",
    )
    p.add_argument(
        "--generalist-version",
        default=None,
        metavar="DIR",
        help="answer with this generalist version folder (overrides --store)",
    )
    p.set_defaults(func=run)


def _generalist_version(args: argparse.Namespace, name: str) -> Path | None:
    """The adapted generalist version to answer with: ``--generalist-version``, else ``--store``'s active
    version of the generalist ``name``, else ``None`` (the frozen generalist)."""
    if args.generalist_version:
        return Path(args.generalist_version)
    if args.store:
        from semisam.adapt.versions import active_version_path

        return active_version_path(args.store, name)
    return None


def run(args: argparse.Namespace) -> int:
    from semisam.fileio import atomic_write_json
    from semisam.outputs import commit_outputs, plan_outputs
    from semisam.prompts import load_prompts
    from semisam.scan.volume import read_volume, write_mask

    t0 = time.perf_counter()
    # Every output is checked before any work: never the scan, the prompts or the checkpoint, never
    # each other, a writable type and folder.
    checkpoint_arg = (args.model or "").partition(":")[2] or None
    outputs = plan_outputs(
        {"IMAGE": args.image, "--prompts": args.prompts, "--model checkpoint": checkpoint_arg},
        {"--output": (args.output, "image"), "--confidence": (args.confidence, "json")},
    )
    volume = read_volume(args.image)
    prompts = load_prompts(args.prompts, volume.shape)  # fail on bad prompts before loading a model
    # Encoder calls and memory from the prompts and the scan's shape, before torch and any model.
    from semisam.budget import VIDEO_GENERALISTS, check_propagation, views_possible

    check_propagation(
        volume.shape,
        prompts.axis_index,
        prompts.slices(),
        video=(args.model or "").partition(":")[0].strip().lower() in VIDEO_GENERALISTS,
        views=views_possible(volume.shape, prompts.axis_index, args.field_of_view),
        scan=str(args.image),
        prompts=str(args.prompts),
    )
    # torch and the model come only after the input is known to be good.
    from semisam.generalists import build_generalist, parse_model_spec
    from semisam.propagation import PropagationParams, propagate_prompts

    name, checkpoint = parse_model_spec(args.model)
    out = Path(args.output)
    model = build_generalist(name, checkpoint=checkpoint, device=args.device)
    version = _generalist_version(args, name)
    if version is not None:
        from semisam.adapt.versions import apply_version

        apply_version(model, version)
    t1 = time.perf_counter()
    params = PropagationParams(field_of_view=args.field_of_view)
    result, state = propagate_prompts(
        model, volume, prompts, window=args.window, params=params, modality=args.modality
    )
    t2 = time.perf_counter()
    summary = {
        "image": str(args.image),
        "output": str(out),
        "model": name,
        "axis": prompts.axis,
        "window": {"low": state.encoder.window.low, "high": state.encoder.window.high},
        "voxels": int(result.mask.sum()),
        "generalist_version": None if version is None else str(version),
        "field_of_view": args.field_of_view,
        "closer_key_slices": sorted(k for k, v in state.keys.items() if v.closer),
        "slices_encoded": state.n_encode,
        "prompt_answers": state.n_predict,
        "seconds": {"load": round(t1 - t0, 2), "propagate": round(t2 - t1, 2)},
        **result.summary(),
    }
    with commit_outputs(outputs) as tmp:  # all outputs appear together, or none
        write_mask(result.mask, volume, tmp["--output"])
        if "--confidence" in tmp:
            atomic_write_json(tmp["--confidence"], summary)
    print(json.dumps({k: summary[k] for k in ("output", "voxels", "key_slices", "seconds")}))
    return 0
