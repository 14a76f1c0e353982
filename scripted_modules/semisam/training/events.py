"""The run's event stream: JSON objects, one per line, to stdout, the run's log and ``--events FILE``.

Every event gets ``time`` (ISO-8601 UTC) and ``elapsed_s`` (seconds since the run started). Only DDP
rank 0 writes. Values that JSON cannot hold (NaN, tensors) are converted: NaN/inf become ``null``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)

#: The events that end a run; exactly one is the last line.
TERMINAL_EVENTS = ("done", "cancelled", "error")


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and callable(v.item):  # numpy / torch scalar
        return _clean(v.item())
    if isinstance(v, Path):
        return str(v)
    return v


class EventSink:
    """Fan-out of events to a callback, text streams and append-mode files.

    Args:
        callback: called with each finished event dict (the Python API's ``events=``).
        streams: text streams (``sys.stdout`` for the CLI) that get one line per event, flushed.
        files: paths appended to (the run's ``events.jsonl``, ``--events FILE``).
        enabled: ``False`` on DDP ranks > 0 (nothing is written).
    """

    def __init__(
        self,
        callback: Callable[[dict[str, Any]], None] | None = None,
        streams: list[TextIO] | None = None,
        files: list[str | Path] | None = None,
        enabled: bool = True,
    ):
        self.callback = callback
        self.streams = list(streams or [])
        self.files = [Path(f) for f in (files or [])]
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.terminal_sent = False
        self._handles: list[TextIO] = []
        if enabled:
            for f in self.files:
                f.parent.mkdir(parents=True, exist_ok=True)
                self._handles.append(open(f, "a", encoding="utf-8"))  # noqa: SIM115 - closed in close()

    def add_file(self, path: str | Path) -> None:
        if self.enabled:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            self._handles.append(open(p, "a", encoding="utf-8"))  # noqa: SIM115

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        ev = {"event": event["event"]}
        ev["time"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        ev["elapsed_s"] = round(time.monotonic() - self.t0, 3)
        ev.update({k: _clean(v) for k, v in event.items() if k != "event"})
        if not self.enabled or self.terminal_sent:
            return ev
        if ev["event"] in TERMINAL_EVENTS:
            self.terminal_sent = True
        line = json.dumps(ev, allow_nan=False)
        for s in list(self.streams):
            try:
                s.write(line + "\n")
                s.flush()
            except (OSError, ValueError) as exc:  # a reader that went away (closed pipe): keep running
                log.warning("event stream closed (%s); its events still go to the events files", exc)
                self.streams.remove(s)
        for h in self._handles:
            try:
                h.write(line + "\n")
                h.flush()
            except OSError as exc:  # e.g. a full disk: the run's own error handling reports it
                log.warning("cannot write an event to %s: %s", getattr(h, "name", "?"), exc)
        if self.callback is not None:
            self.callback(ev)
        return ev

    def close(self) -> None:
        for h in self._handles:
            h.close()
        self._handles = []


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Parse an events file (one JSON object per line); for tests and callers."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
