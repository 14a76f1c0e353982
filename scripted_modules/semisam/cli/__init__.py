"""``semisam`` command line: one sub-command module per job, each exposing ``register(subparsers)``.

Sub-commands set ``func`` (called with the parsed namespace, returning an exit code) on their parser.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from semisam import __version__
from semisam.samples import SampleUnavailableError

#: Sub-command modules under ``semisam.cli``, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "info",
    "samples",
    "demo",
    "propagate",
    "segment",
    "model",
    "store",
    "train",
    "adapt",
    "simulate",
)

log = logging.getLogger("semisam")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semisam",
        description="SemiSAM: human-in-the-loop, label-efficient segmentation of CT and MRI (headless core).",
    )
    parser.add_argument("--version", action="version", version=f"semisam {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"semisam.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)  # default INFO, -v DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (`semisam store list | head -1`): not an error of ours. Point stdout at
        # devnull so the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (ValueError, OSError, SampleUnavailableError) as exc:
        # Bad input (every project error subclasses ValueError) and file-system trouble are the user's
        # to fix: one line naming the problem, no traceback. Anything else is a bug and keeps its traceback.
        log.debug("traceback", exc_info=True)
        print(f"semisam {args.command}: error: {exc}", file=sys.stderr)
        return 1
