"""``semisam adapt STORE``: teach the generalist (LiteMedSAM) the store's structure (docs/methods.md).

Fine-tunes the generalist's mask decoder on the store's labeled training cases, validates it against
the frozen generalist (and the active version) on the validation cases, registers it as a generalist
version and promotes it only when it answers better there. Events go to stdout as JSON lines; the last
is ``done`` (``version``, ``promoted``, ``reason``, ``validation``) or ``error`` (``code``, ``message``).
Exit 0 after ``done``, 1 after ``error``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from semisam.device import DEVICE_CHOICES

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt", help="fine-tune the generalist's decoder on the store's labeled cases; JSON events on stdout"
    )
    p.add_argument("store", help="the labeled-set store folder")
    p.add_argument("--steps-per-case", type=int, default=None, help="optimiser steps per training case (50)")
    p.add_argument("--max-steps", type=int, default=None, help="at most this many steps (400)")
    p.add_argument("--max-minutes", type=float, default=None, help="time budget of the fine-tuning (5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.set_defaults(func=run)


def _emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    from semisam.adapt.job import AdaptConfig, AdaptError, adapt
    from semisam.adapt.versions import GeneralistVersionError
    from semisam.store.errors import StoreError

    try:
        given = {
            "steps_per_case": args.steps_per_case,
            "max_steps": args.max_steps,
            "max_minutes": args.max_minutes,
        }
        kwargs = {k: v for k, v in given.items() if v is not None}
        if "max_steps" in kwargs:
            kwargs["min_steps"] = min(AdaptConfig().min_steps, kwargs["max_steps"])
        cfg = AdaptConfig(seed=args.seed, device=args.device, **kwargs)
        adapt(args.store, cfg, emit=_emit)
    except AdaptError as exc:
        _emit({"event": "error", "code": exc.code, "message": str(exc)})
        return 1
    except (StoreError, GeneralistVersionError) as exc:
        _emit({"event": "error", "code": "bad_store", "message": str(exc)})
        return 1
    except OSError as exc:
        _emit({"event": "error", "code": "io", "message": f"{exc}"})
        return 1
    return 0
