"""The files of a simulation's work folder (``semisam simulate --work DIR``) and their JSON-lines I/O,
shared by the replay that writes them and the plot that reads them."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

PLAN_FILE = "simulation.json"
CASES_FILE = "cases.jsonl"
BASELINE_FILE = "baseline.jsonl"
PENDING_FILE = "pending.json"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "loop.png"


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines file; a torn last line (a killed write) is dropped."""
    if not path.is_file():
        return []
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines) - 1:
                log.warning("%s: dropping a torn last line (the run was killed while writing it)", path)
                continue
            raise ValueError(f"{path}: line {n + 1} is not JSON") from None
    return out


def append_jsonl(path: Path, record: dict) -> None:
    """Append one line and fsync it (the record survives a kill right after)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
