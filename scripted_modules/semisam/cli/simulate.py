"""``semisam simulate DATASET --work DIR``: replay the loop on a labeled dataset and measure the effort.

A simulated annotator corrects each case (in a seeded order) with boxes and points through the real
propagation engine, accepts it into a real store, and the specialist retrains every ``--retrain-every``
cases; each case's effort (interactions and seconds) is printed as one JSON line, then a ``summary``
line. A killed run resumes from DIR. See :mod:`semisam.loop`.
"""

from __future__ import annotations

import argparse
import json
import sys

from semisam.device import DEVICE_CHOICES

#: the target Dice against the truth when none is given: about what two expert raters agree on for small
#: brain structures and lesions (inter-rater Dice 0.8-0.9), so the loop measures the effort to a mask a
#: radiologist would accept, not to a fraction of what the generalist itself can reach
DEFAULT_TARGET_DICE = 0.85


def register(sub: argparse._SubParsersAction) -> None:
    # Long: one add_argument per option of the command, nothing else.
    p = sub.add_parser(
        "simulate",
        help="replay the loop on a labeled dataset with a simulated annotator; print the effort per case",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", help="MSD / nnU-Net raw dataset folder (dataset.json, imagesTr, labelsTr)")
    p.add_argument("--work", required=True, help="work folder: the store, JSON lines, plot (resumable)")
    p.add_argument(
        "--retrain-every",
        type=int,
        default=4,
        metavar="K",
        help="retrain after every K accepted cases (0: never)",
    )
    p.add_argument("--method", default="supervised", help="training method (default %(default)s)")
    p.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="training iterations per retrain (default: as the product's Retrain, following the labeled "
        "set within its time budget)",
    )
    p.add_argument(
        "--held-out",
        type=int,
        default=0,
        metavar="N",
        help="keep the last N cases of the order aside (never replayed, not in the unlabeled pool): every "
        "retrain scores the new version and the one before it there",
    )
    p.add_argument(
        "--train-config",
        default=None,
        metavar="FILE.json",
        help="JSON object of further training settings (batch_size, crop_size, model_kwargs, ...)",
    )
    p.add_argument("--seed", type=int, default=0, help="case order, box jitter and training seed")
    p.add_argument(
        "--adapt",
        action="store_true",
        help="every retrain also adapts the generalist (semisam adapt); the loop prompts its active version",
    )
    p.add_argument(
        "--target-dice",
        type=float,
        default=None,
        help=f"done at this Dice against the truth, every case (default {DEFAULT_TARGET_DICE}: about what two "
        "expert raters agree on for such structures)",
    )
    p.add_argument(
        "--target",
        type=float,
        default=None,
        help="instead: done at this fraction of the oracle Dice (a box on every truth slice; the oracle is "
        "run per case). A weak generalist then lowers the bar",
    )
    p.add_argument(
        "--budget",
        type=int,
        default=None,
        help="prompts per case before drawing by hand (default: half the structure's slices, at least 4)",
    )
    p.add_argument(
        "--merge",
        choices=("keep_agreeing", "replace"),
        default="keep_agreeing",
        help="how a propagation is written into the mask, as SemiSAMSegment's Propagate option: from each "
        "prompted slice to the first agreeing slice (keep_agreeing), or the whole range (replace)",
    )
    p.add_argument(
        "--slice-after-undo",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after a propagation that made the mask worse is undone, place the prompt again with "
        "'Propagate across slices' off and correct the rest of the case slice by slice (default: on)",
    )
    p.add_argument(
        "--islands",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="remove a stray piece of the mask that touches no structure with one click of Segment Editor's "
        "Islands effect, instead of a point or a hand-drawn slice on each slice it spans (default: on)",
    )
    p.add_argument(
        "--baseline", action="store_true", help="also run the prompts-only baseline on the same cases"
    )
    p.add_argument(
        "--generalist",
        default="litemedsam",
        metavar="NAME[:CKPT]",
        help="generalist for the prompts (%(default)s)",
    )
    p.add_argument("--max-cases", type=int, default=None, metavar="N", help="replay only the first N cases")
    p.add_argument(
        "--label", type=int, default=None, help="dataset label value to segment (default: the first)"
    )
    p.add_argument(
        "--device", choices=DEVICE_CHOICES, default="cpu", help="device for all models (%(default)s)"
    )
    p.add_argument("--box-s", type=float, default=4.0, help="seconds per box (time model, %(default)s)")
    p.add_argument("--point-s", type=float, default=2.0, help="seconds per point (time model, %(default)s)")
    p.add_argument(
        "--island-s",
        type=float,
        default=2.0,
        help="seconds to remove a stray piece of the mask with Segment Editor's Islands effect (time model, "
        "%(default)s)",
    )
    p.add_argument(
        "--hand-slice-s",
        type=float,
        default=30.0,
        help="seconds per slice drawn by hand from nothing (time model, %(default)s)",
    )
    p.add_argument(
        "--touch-up-min",
        type=float,
        default=0.2,
        help="a slice fixed by hand costs its wrong share (1 - slice Dice) of --hand-slice-s, at least this "
        "share (time model, %(default)s; 1: every hand slice at full price)",
    )
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from pathlib import Path

    from semisam.loop import AnnotatorConfig, SimulationConfig, TimeModel

    if args.retrain_every < 0:
        raise ValueError(f"--retrain-every must be >= 0, got {args.retrain_every}")
    if args.target is not None and args.target_dice is not None:
        raise ValueError(
            "give --target-dice (an absolute Dice) or --target (a fraction of the oracle), not both"
        )
    if args.target is not None and not 0 < args.target <= 1:
        raise ValueError(f"--target must be in (0, 1], got {args.target}")
    if args.target_dice is not None and not 0 < args.target_dice <= 1:
        raise ValueError(f"--target-dice must be in (0, 1], got {args.target_dice}")
    relative = args.target is not None
    target_dice = None if relative else (args.target_dice or DEFAULT_TARGET_DICE)
    if args.budget is not None and args.budget < 0:
        raise ValueError(f"--budget must be >= 0, got {args.budget}")
    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    if args.held_out < 0:
        raise ValueError(f"--held-out must be >= 0, got {args.held_out}")
    if not 0 < args.touch_up_min <= 1:
        raise ValueError(f"--touch-up-min must be in (0, 1], got {args.touch_up_min}")
    train_options = {}
    if args.train_config:
        try:
            train_options = json.loads(Path(args.train_config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"--train-config {args.train_config}: cannot read it as JSON: {exc}") from exc
        if not isinstance(train_options, dict):
            raise ValueError(f"--train-config {args.train_config}: must hold a JSON object")
    return SimulationConfig(
        dataset=Path(args.dataset),
        work=Path(args.work),
        retrain_every=args.retrain_every,
        method=args.method,
        iterations=args.iterations,
        seed=args.seed,
        baseline=args.baseline,
        generalist=args.generalist,
        max_cases=args.max_cases,
        held_out=args.held_out,
        label=args.label,
        target_dice=target_dice,
        device=args.device,
        train_options=train_options,
        adapt=args.adapt,
        annotator=AnnotatorConfig(
            target_fraction=args.target if relative else AnnotatorConfig().target_fraction,
            budget=args.budget,
            merge_rule=args.merge,
            slice_after_undo=args.slice_after_undo,
            islands=args.islands,
        ),
        time_model=TimeModel(
            box_s=args.box_s,
            point_s=args.point_s,
            island_s=args.island_s,
            hand_slice_s=args.hand_slice_s,
            touch_up_min=args.touch_up_min,
        ),
    )


def run(args: argparse.Namespace) -> int:
    from semisam.loop import Simulation

    def emit(record: dict) -> None:
        print(json.dumps(record), flush=True)
        sys.stdout.flush()

    Simulation(config_from_args(args), emit=emit).run()
    return 0
