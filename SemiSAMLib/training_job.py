"""The retraining job as a child process of Slicer: start it, read its events, cancel it, find it again.

``semisam train`` (docs/training.md) runs in its own process with Slicer's own Python (``PythonSlicer``
beside the application, else ``sys.executable``), never inside Slicer's process: a crash, a CUDA
out-of-memory or a hung data loader cannot take the application down, and the GUI keeps redrawing.

* **Which process is the job.** ``PythonSlicer`` is a launcher: it starts the real interpreter as its own
  child and forwards no signals, so the process Slicer started is not the one that trains. The job's first
  event, ``process``, names the interpreter that runs ``semisam train`` (pid, start time, command line);
  everything here acts on that process, and on the launcher only while the child has not announced itself.
  A process is named by pid *and* start time (``semisam.procinfo``): a pid reused since a crash names
  another process and is never signalled.
* **Events**: the job writes one JSON object per line to ``--events FILE``; :meth:`TrainingJob.poll`
  reads the lines added since the last call (complete lines only: a line being written is read next time).
  The outcome comes from the events (``done`` / ``cancelled`` / ``error``), not from an exit status that a
  launcher may or may not pass on.
* **Cancel** is a clean stop on every platform: it creates the job's cancel file (``--cancel-file``; the
  job looks for it twice a second) and, on POSIX, sends SIGTERM to the verified interpreter; the job
  checkpoints, writes ``cancelled`` and exits 3. :meth:`TrainingJob.kill` (SIGKILL to the job's process
  group, ``taskkill /T /F`` on Windows) is the last resort; a group that holds Slicer itself is never
  signalled. The registry changes only when a run finishes, so a cancelled run leaves it as it was.
* **Job-state file** ``STORE/training/job.json`` (:data:`JOB_FILE`): the started process (pid, start time,
  command), the interpreter once it announced itself, events, log and cancel-file paths, start time.
  Reopening the module (or restarting Slicer) while the job still runs re-attaches to its events file
  (:func:`attach`); the file is removed once the job has ended and its last event was read.

No qt, no ``slicer.app``: it runs in pytest with a real child process.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from semisam import procinfo
from semisam.procinfo import ProcessIdentity

log = logging.getLogger(__name__)

#: The job-state file, relative to the store root (documented in docs/training.md).
JOB_FILE = Path("training") / "job.json"
#: Events and log of a job started from Slicer, relative to the store root.
EVENTS_FILE = Path("training") / "job-events.jsonl"
LOG_FILE = Path("training") / "job.log"
#: The job stops cleanly when this file appears (``semisam train --cancel-file``).
CANCEL_FILE = Path("training") / "job.cancel"
#: Exit codes of ``semisam train``.
EXIT_DONE, EXIT_ERROR, EXIT_CANCELLED = 0, 1, 3
#: Events after which the job has ended (always its last line).
FINAL_EVENTS = ("done", "cancelled", "error")
#: Methods whose parts ask the generalist (``--generalist`` is passed only to them).
GENERALIST_METHODS = ("semisam_plus", "distill", "cotrain")

_WINDOWS = sys.platform == "win32"


class TrainingJobError(RuntimeError):
    """The job could not be started (the message names what is wrong)."""


@dataclass
class TrainSettings:
    """What one retraining run is asked to do (the typed parameters of SemiSAMTrain's parameter node).

    Attributes:
        method: ``semisam train --method`` (``supervised``, ``mean_teacher``, ``semisam_plus``, ``distill``
            or ``+``-joined parts).
        iterations: optimiser steps; 0: follow the labeled set (``semisam train``'s default rule).
        max_minutes: wall-clock budget of the training loop in minutes; 0: none.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        generalist: generalist registry name for methods that use one (``litemedsam``, ``sam``, ...).
        generalist_checkpoint: its checkpoint file ("" for LiteMedSAM's bundled weights).
        promote_if_better: promote the new version when it beats the active one (else ``--no-promote``).
        adapt_generalist: after a finished run, teach the generalist (LiteMedSAM's decoder) the store's
            structure in the same job (``--adapt-generalist``; its events are ``generalist`` events).
        resume: continue the run found in the store's work folder from its last checkpoint.
        extra: further command-line arguments (e.g. ``["--seed", "1"]``).
    """

    method: str = "supervised"
    iterations: int = 0
    max_minutes: int = 10
    device: str = "auto"
    generalist: str = "litemedsam"
    generalist_checkpoint: str = ""
    promote_if_better: bool = True
    adapt_generalist: bool = True
    resume: bool = False
    extra: list[str] = field(default_factory=list)

    def arguments(self, store: Path, events: Path, cancel_file: Path | None = None) -> list[str]:
        """``semisam train`` arguments (after ``-m semisam``)."""
        if self.iterations < 0:
            raise TrainingJobError(
                f"iterations must be 0 (follow the labeled set) or more, got {self.iterations}"
            )
        if self.max_minutes < 0:
            raise TrainingJobError(
                f"the time budget must be 0 (none) or more minutes, got {self.max_minutes}"
            )
        args = ["train", str(store), "--method", self.method]
        if self.iterations:
            args += ["--iterations", str(int(self.iterations))]
        args += ["--max-minutes", str(int(self.max_minutes))]
        args += ["--device", self.device, "--events", str(events), "--no-progress"]
        if cancel_file is not None:
            args += ["--cancel-file", str(cancel_file)]
        if any(part in GENERALIST_METHODS for part in self.method.split("+")):
            spec = self.generalist + (f":{self.generalist_checkpoint}" if self.generalist_checkpoint else "")
            args += ["--generalist", spec]
        if not self.promote_if_better:
            args.append("--no-promote")
        if self.adapt_generalist:
            args.append("--adapt-generalist")
        if self.resume:
            args.append("--resume")
        return args + [str(a) for a in self.extra]


@dataclass
class JobState:
    """Contents of the job-state file (:data:`JOB_FILE`).

    Attributes:
        pid: process id of the process Slicer started (the ``PythonSlicer`` launcher, or the interpreter
            itself where there is no launcher).
        store: the store root.
        events: the events file the job writes.
        log: the job's stderr (Python logging, tracebacks).
        command: the full command line of the started process.
        started: ISO-8601 UTC start time.
        start: the started process's start time in the process table (``semisam.procinfo``); "" when it
            could not be read (it had already ended) or the file was written by an older SemiSAM: such a
            job is never signalled.
        cancel: the job's cancel file ("" for none).
        child: ``{"pid", "start", "argv"}`` of the interpreter running ``semisam train``, from its
            ``process`` event (``None`` until it has announced itself).
    """

    pid: int
    store: str
    events: str
    log: str
    command: list[str]
    started: str
    start: str = ""
    cancel: str = ""
    child: dict | None = None

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new one

    @classmethod
    def read(cls, path: Path) -> JobState:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            state = cls(**{k: data[k] for k in ("pid", "store", "events", "log", "command", "started")})
            state.start = str(data.get("start") or "")
            state.cancel = str(data.get("cancel") or "")
            child = data.get("child")
            state.child = child if isinstance(child, dict) else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TrainingJobError(f"job-state file {path}: unreadable ({exc})") from exc
        if not isinstance(state.pid, int) or not isinstance(state.command, list):
            raise TrainingJobError(f"job-state file {path}: unreadable (pid or command of the wrong type)")
        return state


def child_python() -> str:
    """The interpreter for the child: Slicer's ``PythonSlicer`` launcher beside the application (it sets
    the library paths Slicer's Python needs), else ``sys.executable`` (pytest, a plain Python)."""
    here = Path(sys.executable).parent
    for name in ("PythonSlicer.exe", "PythonSlicer") if _WINDOWS else ("PythonSlicer",):
        candidate = here / name
        if candidate.is_file():
            return str(candidate)
    return sys.executable


def child_environment(core: Path | None = None) -> dict[str, str]:
    """The child's environment: ours, with the folder holding ``semisam`` first on ``PYTHONPATH``."""
    from SemiSAMLib import core_dir

    env = dict(os.environ)
    core = core or core_dir()
    if core is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(core), env.get("PYTHONPATH", ""))))
    env["PYTHONUNBUFFERED"] = "1"  # events reach the file as they happen
    return env


class TrainingJob:
    """One ``semisam train`` child (started here, or found again through its job-state file)."""

    def __init__(self, state: JobState, process: subprocess.Popen | None = None) -> None:
        self.state = state
        self.process = process
        self._offset = 0
        self._partial = b""
        self.final: dict | None = None  # the done / cancelled / error event, once read

    # ------------------------------------------------------------------ start / find again
    @classmethod
    def start(cls, store_root: str | Path, settings: TrainSettings, python: str | None = None) -> TrainingJob:
        """Start ``semisam train`` on the store in ``store_root`` and write the job-state file.

        Raises:
            TrainingJobError: a job started from here still runs on this store, or the process cannot start.
        """
        root = Path(store_root).expanduser().resolve()
        running = attach(root)
        if running is not None and running.running():
            raise TrainingJobError(
                f"store {root}: a training run (pid {running.pid}) is still running; cancel it first"
            )
        if running is not None:
            running.forget()  # a job that ended unwatched: its outcome is in its events and log
        (root / "training").mkdir(parents=True, exist_ok=True)
        events, log_path, cancel = root / EVENTS_FILE, root / LOG_FILE, root / CANCEL_FILE
        events.unlink(missing_ok=True)  # the previous run's events: a new run starts a new plot
        cancel.unlink(missing_ok=True)
        command = [python or child_python(), "-m", "semisam", *settings.arguments(root, events, cancel)]
        kwargs: dict = {}
        if _WINDOWS:
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True  # its own process group: a kill reaches the whole tree
        with open(log_path, "wb") as log_file:
            try:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,  # the events are in the events file
                    stderr=log_file,
                    env=child_environment(),
                    cwd=str(root),
                    **kwargs,
                )
            except OSError as exc:
                raise TrainingJobError(f"cannot start {command[0]}: {exc}") from exc
        started = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
        start = procinfo.start_time(process.pid) or ""
        state = JobState(
            process.pid, str(root), str(events), str(log_path), command, started, start, str(cancel)
        )
        state.write(root / JOB_FILE)
        log.info("started training (pid %d): %s", process.pid, " ".join(command))
        job = cls(state, process)
        _LIVE[str(root)] = job
        return job

    # ------------------------------------------------------------------ which process
    @property
    def pid(self) -> int:
        """The pid of the interpreter running the job once it has announced itself, else of the
        process started."""
        child = self.child()
        return child.pid if child is not None else self.state.pid

    def launcher(self) -> ProcessIdentity | None:
        """The process that was started (``None`` when its start time is unknown: never signalled)."""
        return ProcessIdentity(self.state.pid, self.state.start) if self.state.start else None

    def child(self) -> ProcessIdentity | None:
        """The interpreter running ``semisam train``, from its ``process`` event (read once, then kept in
        the job-state file)."""
        ident = ProcessIdentity.from_json(self.state.child)
        if ident is not None:
            return ident
        event = _first_event(Path(self.state.events))
        if event is None or event.get("event") != "process":
            return None
        ident = ProcessIdentity.from_json(event)
        if ident is None:
            return None
        self.state.child = {**ident.to_json(), "argv": event.get("argv")}
        path = Path(self.state.store) / JOB_FILE
        try:
            if JobState.read(path).pid == self.state.pid:
                self.state.write(path)
        except (TrainingJobError, OSError):
            pass
        return ident

    def _child_argv(self) -> list[str] | None:
        argv = (self.state.child or {}).get("argv")
        return argv if isinstance(argv, list) and all(isinstance(a, str) for a in argv) else None

    def _live_child(self) -> ProcessIdentity | None:
        child = self.child()
        return child if child is not None and procinfo.is_same(child, self._child_argv()) else None

    def _live_launcher(self) -> ProcessIdentity | None:
        ident = self.launcher()
        if ident is None:
            return None
        if self.process is not None:  # started here: Popen knows whether it has exited
            return ident if self.process.poll() is None else None
        return ident if procinfo.is_same(ident, self.state.command) else None

    # ------------------------------------------------------------------ state
    def running(self) -> bool:
        """Whether the job still runs: its interpreter, or (until it has announced itself, and while a
        launcher waits for it) the process started. A recorded pid that now names another process
        (reused since) does not count."""
        if self._live_child() is not None:
            return True
        return self._live_launcher() is not None

    @property
    def returncode(self) -> int | None:
        """The exit status of the process started here (``None`` while running, or when the job was
        started by another Slicer). Through a launcher it is whatever the launcher returns: judge the
        outcome from :attr:`final`."""
        return self.process.poll() if self.process is not None else None

    def poll(self) -> list[dict]:
        """The events written since the last call, parsed (complete lines only; bad lines are logged)."""
        path = Path(self.state.events)
        try:
            with open(path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # "" after a final newline; else a line still being written
        events = []
        for raw in lines:
            if not raw.strip():
                continue
            try:
                event = json.loads(raw)
            except ValueError:
                log.warning("%s: not a JSON event, skipped: %r", path, raw[:200])
                continue
            if isinstance(event, dict) and "event" in event:
                events.append(event)
                if event["event"] in FINAL_EVENTS:
                    self.final = event
        return events

    def log_tail(self, lines: int = 20) -> list[str]:
        """The last ``lines`` lines of the job's log (its stderr)."""
        try:
            text = Path(self.state.log).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    def events_tail(self, lines: int = 20) -> list[str]:
        """The last ``lines`` lines of the events file, as written."""
        try:
            text = Path(self.state.events).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    def ended(self) -> bool:
        """The process has exited (or is gone) and every event it wrote has been read."""
        if self.running():
            return False
        self.poll()
        return True

    def crash_message(self) -> str | None:
        """Why the job ended without a final event (killed, crashed), or ``None`` while it runs or after
        a final event."""
        if self.running() or self.final is not None:
            return None
        code = self.returncode
        how = f"exit status {code}" if code is not None else "the process is gone"
        return f"the training process ended without a final event ({how})"

    # ------------------------------------------------------------------ stop
    def terminate(self) -> None:
        """Ask the job to stop cleanly: create its cancel file and, on POSIX, send SIGTERM to its verified
        interpreter; the job writes a checkpoint, a ``cancelled`` event and exits 3. Nothing is signalled
        when the recorded process is not the job (ended, or its pid reused)."""
        if not self.running():
            return
        if self.state.cancel:
            try:
                Path(self.state.cancel).touch()
            except OSError as exc:
                log.warning("could not create the cancel file %s: %s", self.state.cancel, exc)
        child = self._live_child()
        if _WINDOWS or child is None or child.pid == os.getpid():
            return  # the cancel file stops it (an interpreter that has not announced itself looks too)
        try:
            os.kill(child.pid, signal.SIGTERM)  # the interpreter only: a launcher keeps its pipes open
        except (ProcessLookupError, PermissionError, OSError) as exc:
            log.warning("could not signal training process %d: %s", child.pid, exc)

    def kill(self) -> None:
        """End the job's whole process tree now (SIGKILL to its process group; ``taskkill /T /F`` on
        Windows): only processes verified to be the job, never a group that holds this process."""
        for ident in {i for i in (self._live_child(), self._live_launcher()) if i is not None}:
            try:
                if _WINDOWS:
                    subprocess.run(
                        ["taskkill", "/PID", str(ident.pid), "/T", "/F"], capture_output=True, check=False
                    )
                elif procinfo.may_signal_group(ident.pid):
                    os.killpg(os.getpgid(ident.pid), signal.SIGKILL)
                elif ident.pid != os.getpid():
                    os.kill(ident.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError, OSError) as exc:
                log.warning("could not kill training process %d: %s", ident.pid, exc)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job has ended (:meth:`running` is false); True when it did within ``timeout``
        seconds."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        if self.process is not None:
            self.process.poll()  # reap the started process
        return True

    def stop(self, grace_s: float = 30.0) -> bool:
        """:meth:`terminate`, wait up to ``grace_s`` seconds, then :meth:`kill`; True when it ended cleanly."""
        self.terminate()
        if self.wait(grace_s):
            return True
        self.kill()
        self.wait(10.0)
        return False

    def forget(self) -> None:
        """Remove the job-state file (and cancel file) once the job has ended (nothing to re-attach to)."""
        if self.running():
            raise TrainingJobError(f"training process {self.pid} still runs")
        path = Path(self.state.store) / JOB_FILE
        try:
            if JobState.read(path).pid == self.state.pid:
                path.unlink()
        except (TrainingJobError, FileNotFoundError):
            pass
        if self.state.cancel:
            Path(self.state.cancel).unlink(missing_ok=True)
        _LIVE.pop(self.state.store, None)


def _first_event(path: Path, limit: int = 65536) -> dict | None:
    """The first complete event of an events file (read from its first ``limit`` bytes), or ``None``."""
    try:
        with open(path, "rb") as f:
            head = f.read(limit)
    except OSError:
        return None
    line, sep, _ = head.partition(b"\n")
    if not sep:
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


#: Jobs started by this process, by store root: reopening the module in the same Slicer session finds
#: the job with its ``Popen`` (exit status known) instead of a bare pid.
_LIVE: dict[str, TrainingJob] = {}


def attach(store_root: str | Path) -> TrainingJob | None:
    """The job recorded in the store's job-state file, or ``None`` when there is none.

    A job of this Slicer session is returned as it is; one started by another (e.g. before a restart) is
    rebuilt from the file, and its events are read from the start. It counts as running only while the
    recorded processes are the job's (pid, start time and command line match: a pid reused by another
    process since is neither watched nor signalled). A job-state file whose job has ended with a final
    event is removed (returns ``None``); a job that ended without one is returned (not running, no final
    event), so the caller can show why it ended. An unreadable job-state file is removed with a warning.
    """
    root = Path(store_root).expanduser().resolve()
    live = _LIVE.get(str(root))
    if live is not None:
        return live
    path = root / JOB_FILE
    if not path.is_file():
        return None
    try:
        state = JobState.read(path)
    except TrainingJobError as exc:
        log.warning("%s; removed (no job can be identified from it)", exc)
        path.unlink(missing_ok=True)
        return None
    job = TrainingJob(state)
    if not job.running():
        job.poll()
        if job.final is not None:
            job.forget()
            return None
    return job


def last_lines(lines: Sequence[str], n: int = 8) -> str:
    """The last ``n`` lines as one text (for an error message)."""
    return "\n".join(list(lines)[-n:])
