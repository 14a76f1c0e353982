"""The retraining job as a child process of Slicer: start it, read its events, cancel it, find it again.

``semisam train`` (docs/training.md) runs in its own process with Slicer's own Python (``PythonSlicer``
beside the application, else ``sys.executable``), never inside Slicer's process: a crash, a CUDA
out-of-memory or a hung data loader cannot take the application down, and the GUI keeps redrawing.

* **Events**: the job writes one JSON object per line to ``--events FILE``; :meth:`TrainingJob.poll`
  reads the lines added since the last call (complete lines only: a line being written is read next time).
* **Cancel** ends the whole process tree: the child starts in its own session / process group, so SIGTERM
  (Windows: CTRL_BREAK_EVENT) reaches its workers too; the job checkpoints and exits 3 (``cancelled``);
  :meth:`TrainingJob.kill` (SIGKILL to the group, ``taskkill /T /F`` on Windows) is the last resort. The
  registry changes only when a run finishes, so a cancelled run leaves it as it was.
* **Job-state file** ``STORE/training/job.json`` (:data:`JOB_FILE`): pid, command, events and log paths,
  start time. Reopening the module (or restarting Slicer) while the job still runs re-attaches to its
  events file (:func:`attach`); the file is removed once the job has ended and its last event was read.

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

log = logging.getLogger(__name__)

#: The job-state file, relative to the store root (documented in docs/training.md).
JOB_FILE = Path("training") / "job.json"
#: Events and log of a job started from Slicer, relative to the store root.
EVENTS_FILE = Path("training") / "job-events.jsonl"
LOG_FILE = Path("training") / "job.log"
#: Exit codes of ``semisam train``.
EXIT_DONE, EXIT_ERROR, EXIT_CANCELLED = 0, 1, 3
#: Events after which the job has ended (always its last line).
FINAL_EVENTS = ("done", "cancelled", "error")
#: Methods whose parts ask the generalist (``--generalist`` is passed only to them).
GENERALIST_METHODS = ("semisam_plus", "distill")

_WINDOWS = sys.platform == "win32"


class TrainingJobError(RuntimeError):
    """The job could not be started (the message names what is wrong)."""


@dataclass
class TrainSettings:
    """What one retraining run is asked to do (the typed parameters of SemiSAMTrain's parameter node).

    Attributes:
        method: ``semisam train --method`` (``supervised``, ``mean_teacher``, ``semisam_plus``, ``distill``
            or ``+``-joined parts).
        iterations: optimiser steps.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        generalist: generalist registry name for methods that use one (``litemedsam``, ``sam``, ...).
        generalist_checkpoint: its checkpoint file ("" for LiteMedSAM's bundled weights).
        promote_if_better: promote the new version when it beats the active one (else ``--no-promote``).
        resume: continue the run found in the store's work folder from its last checkpoint.
        extra: further command-line arguments (e.g. ``["--seed", "1"]``).
    """

    method: str = "supervised"
    iterations: int = 200
    device: str = "auto"
    generalist: str = "litemedsam"
    generalist_checkpoint: str = ""
    promote_if_better: bool = True
    resume: bool = False
    extra: list[str] = field(default_factory=list)

    def arguments(self, store: Path, events: Path) -> list[str]:
        """``semisam train`` arguments (after ``-m semisam``)."""
        if self.iterations < 1:
            raise TrainingJobError(f"iterations must be at least 1, got {self.iterations}")
        args = ["train", str(store), "--method", self.method, "--iterations", str(int(self.iterations))]
        args += ["--device", self.device, "--events", str(events), "--no-progress"]
        if any(part in GENERALIST_METHODS for part in self.method.split("+")):
            spec = self.generalist + (f":{self.generalist_checkpoint}" if self.generalist_checkpoint else "")
            args += ["--generalist", spec]
        if not self.promote_if_better:
            args.append("--no-promote")
        if self.resume:
            args.append("--resume")
        return args + [str(a) for a in self.extra]


@dataclass
class JobState:
    """Contents of the job-state file (:data:`JOB_FILE`).

    Attributes:
        pid: process id of the ``semisam train`` child.
        store: the store root.
        events: the events file the job writes.
        log: the job's stderr (Python logging, tracebacks).
        command: the full command line.
        started: ISO-8601 UTC start time.
    """

    pid: int
    store: str
    events: str
    log: str
    command: list[str]
    started: str

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new one

    @classmethod
    def read(cls, path: Path) -> JobState:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{k: data[k] for k in ("pid", "store", "events", "log", "command", "started")})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TrainingJobError(f"job-state file {path}: unreadable ({exc})") from exc


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


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (and, on POSIX, is not a zombie)."""
    if pid <= 0:
        return False
    if _WINDOWS:
        out = subprocess.run(
            ["tasklist", "/FI", f"PID eq {pid}", "/NH"], capture_output=True, text=True, check=False
        )
        return str(pid) in out.stdout
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: a finished child not yet reaped is a zombie ("Z"), i.e. gone
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


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
                f"store {root}: a training run (pid {running.state.pid}) is still running; cancel it first"
            )
        (root / "training").mkdir(parents=True, exist_ok=True)
        events, log_path = root / EVENTS_FILE, root / LOG_FILE
        events.unlink(missing_ok=True)  # the previous run's events: a new run starts a new plot
        command = [python or child_python(), "-m", "semisam", *settings.arguments(root, events)]
        kwargs: dict = {}
        if _WINDOWS:
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True  # its own process group: signals reach the whole tree
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
        state = JobState(process.pid, str(root), str(events), str(log_path), command, started)
        state.write(root / JOB_FILE)
        log.info("started training (pid %d): %s", process.pid, " ".join(command))
        job = cls(state, process)
        _LIVE[str(root)] = job
        return job

    # ------------------------------------------------------------------ state
    @property
    def pid(self) -> int:
        return self.state.pid

    def running(self) -> bool:
        """Whether the child process still runs."""
        if self.process is not None:
            return self.process.poll() is None
        return pid_alive(self.state.pid)

    @property
    def returncode(self) -> int | None:
        """The exit status (``None`` while running, or when the job was started by another Slicer)."""
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
        """Ask the job to stop cleanly: SIGTERM to its process group (Windows: CTRL_BREAK_EVENT); the job
        writes a checkpoint, a ``cancelled`` event and exits 3."""
        if not self.running():
            return
        try:
            if _WINDOWS:
                os.kill(self.state.pid, signal.CTRL_BREAK_EVENT)
            else:
                os.killpg(os.getpgid(self.state.pid), signal.SIGTERM)
        except (ProcessLookupError, PermissionError, OSError) as exc:
            log.warning("could not signal training process %d: %s", self.state.pid, exc)

    def kill(self) -> None:
        """End the whole process tree now (SIGKILL to the group; ``taskkill /T /F`` on Windows)."""
        if not self.running():
            return
        try:
            if _WINDOWS:
                subprocess.run(
                    ["taskkill", "/PID", str(self.state.pid), "/T", "/F"], capture_output=True, check=False
                )
            else:
                os.killpg(os.getpgid(self.state.pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError) as exc:
            log.warning("could not kill training process %d: %s", self.state.pid, exc)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the process exits; True when it did within ``timeout`` seconds."""
        import time

        if self.process is not None:
            try:
                self.process.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.1)
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
        """Remove the job-state file once the job has ended (nothing to re-attach to any more)."""
        if self.running():
            raise TrainingJobError(f"training process {self.state.pid} still runs")
        path = Path(self.state.store) / JOB_FILE
        try:
            if JobState.read(path).pid == self.state.pid:
                path.unlink()
        except (TrainingJobError, FileNotFoundError):
            pass
        _LIVE.pop(self.state.store, None)


#: Jobs started by this process, by store root: reopening the module in the same Slicer session finds
#: the job with its ``Popen`` (exit status known) instead of a bare pid.
_LIVE: dict[str, TrainingJob] = {}


def attach(store_root: str | Path) -> TrainingJob | None:
    """The job recorded in the store's job-state file, or ``None`` when there is none.

    A job of this Slicer session is returned as it is; one started by another (e.g. before a restart) is
    rebuilt from the file, and its events are read from the start. A job-state file whose process is gone
    and whose events ended is removed (returns ``None``); a crashed job is returned (not running, no final
    event), so the caller can show why it ended.
    """
    root = Path(store_root).expanduser().resolve()
    live = _LIVE.get(str(root))
    if live is not None:
        return live
    path = root / JOB_FILE
    if not path.is_file():
        return None
    job = TrainingJob(JobState.read(path))
    if not job.running():
        job.poll()
        if job.final is not None:
            job.forget()
            return None
    return job


def last_lines(lines: Sequence[str], n: int = 8) -> str:
    """The last ``n`` lines as one text (for an error message)."""
    return "\n".join(list(lines)[-n:])
