"""``semisam train STORE``: retrain the store's specialist (contract: docs/training.md).

Events go to stdout as JSON lines (and to ``--events FILE``); a progress bar goes to stderr when it is
a terminal. The first event, ``process``, names this interpreter (pid and start time): a caller that
started it through a launcher (Slicer's ``PythonSlicer``) learns which process the job really is.
Exit 0 after ``done``, 1 after ``error``, 3 after ``cancelled`` (SIGTERM, Ctrl-C or ``--cancel-file``
appearing: the run checkpoints first; ``--resume`` continues it).

``--adapt-generalist``: after a ``done`` run, the same process teaches the generalist the store's structure
(``semisam adapt``'s job, :mod:`semisam.adapt.job`); its events follow as ``{"event": "generalist",
"kind": <the adapt event>, ...}``, the last of kind ``done``, ``error`` or ``cancelled``. The specialist's
``done`` and the exit status stand whatever the adaptation does: a new specialist is never lost to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from semisam.device import DEVICE_CHOICES

log = logging.getLogger(__name__)

METHOD_HELP = (
    "method parts joined by '+': supervised (always on), mean_teacher, semisam_plus, distill "
    "(default supervised)"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="retrain the store's specialist (semi-supervised); JSON events on stdout"
    )
    p.add_argument("store", help="the labeled-set store folder")
    p.add_argument("--method", help=METHOD_HELP)
    p.add_argument(
        "--iterations",
        type=_number,
        help="optimiser steps (default: 500 per training case, 1,000 to 20,000, within --max-minutes)",
    )
    p.add_argument(
        "--max-minutes",
        type=_number,
        metavar="M",
        help="wall-clock budget of the training loop in minutes (default 10; 0: none): fewer iterations "
        "are planned when the measured speed says the planned ones will not fit",
    )
    p.add_argument("--device", choices=DEVICE_CHOICES, help="default auto (CUDA when available)")
    p.add_argument(
        "--generalist",
        action="append",
        metavar="NAME[:CHECKPOINT]",
        help="generalist for the semi-supervised parts (repeatable; default litemedsam)",
    )
    p.add_argument("--events", metavar="FILE", help="also append the JSON events to FILE")
    p.add_argument(
        "--resume", action="store_true", help="continue the interrupted run from its last checkpoint"
    )
    p.add_argument("--no-promote", action="store_true", help="register the new version but never promote it")
    p.add_argument("--seed", type=_number, help="random seed (default 0)")
    p.add_argument(
        "--arch", help="architecture of a new model when the store has none (mamba_unet, unet2d, unet3d)"
    )
    p.add_argument("--batch-size", type=_number, help="labeled samples per step (default 8)")
    p.add_argument("--config", metavar="FILE.json", help="TrainConfig fields as JSON (options override it)")
    p.add_argument("--work-dir", metavar="DIR", help="run folder (default STORE/training/run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument(
        "--adapt-generalist",
        action="store_true",
        help="after the run, also fine-tune the generalist's decoder on the store's cases (semisam adapt); "
        "its events follow as 'generalist' events",
    )
    p.add_argument(
        "--adapt-max-minutes",
        type=float,
        default=None,
        metavar="M",
        help="time budget of that fine-tuning in minutes (default 5)",
    )
    p.add_argument(
        "--cancel-file",
        metavar="FILE",
        help="cancel (checkpoint and stop) when FILE appears: a clean stop that needs no signal",
    )
    p.set_defaults(func=run)


def _number(text: str) -> int | float | str:
    """A numeric option's value; anything else is passed on as given, so that the config's validation
    refuses it with an ``error`` event naming the option (argparse would only print to stderr)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


_OPTION_FIELDS = {
    "method": "method",
    "iterations": "iterations",
    "device": "device",
    "generalist": "generalists",
    "seed": "seed",
    "arch": "arch",
    "batch_size": "batch_size",
    "max_minutes": "max_minutes",
}


def _config(args: argparse.Namespace):
    from semisam.training.config import TrainConfig

    overrides = {f: getattr(args, a) for a, f in _OPTION_FIELDS.items() if getattr(args, a) is not None}
    if overrides.get("max_minutes") == 0:
        overrides["max_minutes"] = None  # 0: no time budget
    if args.config:
        return TrainConfig.from_file(args.config, overrides)
    return TrainConfig.from_dict(overrides, "command line")


class _Progress:
    """tqdm bar on stderr driven by the events (only when stderr is a terminal)."""

    def __init__(self, enabled: bool):
        self.bar = None
        self.enabled = enabled

    def __call__(self, ev: dict) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if ev["event"] == "start":
            self.bar = tqdm(
                total=ev["iterations"],
                initial=ev.get("resumed_from") or 0,
                file=sys.stderr,
                desc="train",
                unit="it",
            )
        elif ev["event"] == "iteration" and self.bar is not None:
            self.bar.n = ev["iteration"]
            self.bar.set_postfix(loss=f"{ev['losses'].get('total', float('nan')):.3f}", refresh=False)
            self.bar.refresh()
        elif ev["event"] in ("done", "cancelled", "error") and self.bar is not None:
            self.bar.close()
            self.bar = None


#: Seconds between looks at ``--cancel-file``.
CANCEL_POLL_S = 0.5


def _watch_cancel_file(path: Path, cancel: threading.Event, done: threading.Event) -> None:
    """Set ``cancel`` once ``path`` exists (a daemon thread, until ``done``)."""
    while not done.wait(CANCEL_POLL_S):
        if path.exists():
            log.warning("%s appeared: checkpointing and stopping", path)
            cancel.set()
            return


def _announce(args: argparse.Namespace) -> None:
    """The first event: this process's pid and start time (``semisam.procinfo``)."""
    from semisam.procinfo import command_line, identity
    from semisam.training.events import EventSink

    me = identity()
    try:
        sink = EventSink(streams=[sys.stdout], files=[args.events] if args.events else [])
    except OSError:
        sink = EventSink(streams=[sys.stdout], files=[])  # the run reports the events file's error
    sink(
        {
            "event": "process",
            "pid": os.getpid(),
            "start": me.start if me else None,
            "argv": command_line(os.getpid()),
        }
    )
    sink.close()


def run(args: argparse.Namespace) -> int:
    cancel = threading.Event()
    args.started = time.monotonic()  # the adaptation phase's events count elapsed seconds from here too

    def on_signal(signum, frame) -> None:
        log.warning("received %s: checkpointing and stopping", signal.Signals(signum).name)
        cancel.set()

    # Before anything slow (torch is imported while the settings are checked): a cancel during start-up
    # is a clean stop too.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    watching = threading.Event()
    if args.cancel_file:
        threading.Thread(
            target=_watch_cancel_file, args=(Path(args.cancel_file), cancel, watching), daemon=True
        ).start()
    try:
        _announce(args)
        return _run(args, cancel)
    finally:
        watching.set()
        for s, h in previous.items():
            signal.signal(s, h)


def _run(args: argparse.Namespace, cancel: threading.Event) -> int:
    from semisam.training.errors import TrainError
    from semisam.training.events import EventSink
    from semisam.training.job import EXIT_ERROR, train

    try:
        config = _config(args)
    except Exception as exc:  # noqa: BLE001 - a run that cannot start still ends with one error event
        kind = exc.kind if isinstance(exc, TrainError) else "bad_config"
        message = str(exc) if isinstance(exc, TrainError) else f"the settings: {type(exc).__name__}: {exc}"
        try:
            sink = EventSink(streams=[sys.stdout], files=[args.events] if args.events else [])
        except OSError as err:  # the events file itself cannot be opened: stdout still gets the event
            sink = EventSink(streams=[sys.stdout], files=[])
            message += f" (and --events {args.events}: {err.strerror or err})"
        sink({"event": "error", "kind": kind, "message": message})
        sink.close()
        return EXIT_ERROR
    progress = _Progress(sys.stderr.isatty() and not args.no_progress)
    result = train(
        args.store,
        config,
        events=progress,
        events_file=args.events,
        streams=[sys.stdout],
        work_dir=args.work_dir,
        resume=args.resume,
        promote=not args.no_promote,
        cancel=cancel,
    )
    log.debug("result %s", json.dumps({"status": result.status, "version": result.version}))
    from semisam.training import ddp

    # One adaptation per run: under torchrun every rank returns "done", only rank 0 writes.
    if args.adapt_generalist and result.status == "done" and not cancel.is_set() and ddp.from_env().is_main:
        _adapt_phase(args, config, cancel)
    return result.exit_code


def _adapt_phase(args: argparse.Namespace, config, cancel: threading.Event) -> None:
    """Adapt the generalist after a finished run; every outcome is a ``generalist`` event, none raises."""
    from semisam.adapt.job import AdaptConfig, AdaptError, adapt
    from semisam.adapt.versions import GeneralistVersionError
    from semisam.store.errors import StoreError
    from semisam.training.events import EventSink

    try:
        sink = EventSink(streams=[sys.stdout], files=[args.events] if args.events else [])
    except OSError:
        sink = EventSink(streams=[sys.stdout], files=[])
    sink.t0 = getattr(args, "started", sink.t0)  # one clock for the whole job (the panel's elapsed time)

    def emit(event: dict) -> None:
        sink(
            {
                "event": "generalist",
                "kind": event["event"],
                **{k: v for k, v in event.items() if k != "event"},
            }
        )

    try:
        budget = {} if args.adapt_max_minutes is None else {"max_minutes": args.adapt_max_minutes}
        cfg = AdaptConfig(seed=config.seed, device=config.device, **budget)
        adapt(args.store, cfg, emit=emit, cancel=cancel, promote=not args.no_promote)
    except AdaptError as exc:
        emit(
            {
                "event": "cancelled" if exc.code == "cancelled" else "error",
                "code": exc.code,
                "message": str(exc),
            }
        )
    except (StoreError, GeneralistVersionError, OSError) as exc:
        emit({"event": "error", "code": "bad_store", "message": str(exc)})
    except Exception as exc:  # noqa: BLE001 - the specialist's run is done and saved: report, never crash
        log.exception("adapting the generalist failed")
        emit({"event": "error", "code": "internal", "message": f"{type(exc).__name__}: {exc}"})
    finally:
        sink.close()
