"""Property-based fuzzing of what the retraining job reads: training configs, run folders and their
checkpoints, and the job-state file Slicer re-attaches from.

The contract for bad input: a config is accepted or refused with one ``bad_config`` line naming the
field; a damaged checkpoint ends ``--resume`` with one ``damaged_checkpoint`` (or ``no_checkpoint``) line,
never a traceback, and the registry is untouched; clean-up of a run folder removes only the names the
product writes; a job-state file, whatever it holds, never makes Cancel signal a process that is not the
job. Derandomized (the same examples on every run), no deadline: each example is bounded by the work it
does (no example trains: resumed runs are cancelled before their first step).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from training_synth import FAST, make_store, one_thread  # noqa: F401

from semisam.training import TrainConfig, runstate, train
from semisam.training.errors import TrainError

_SCALE = float(os.environ.get("SEMISAM_FUZZ_EXAMPLES", "1"))


def fuzz(count: int):
    """Derandomized settings with ``count`` examples (times ``SEMISAM_FUZZ_EXAMPLES``)."""
    return settings(
        derandomize=not os.environ.get("SEMISAM_FUZZ_RANDOM"),
        database=None,
        deadline=None,
        max_examples=max(1, int(count * _SCALE)),
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


HOSTILE = st.sampled_from(
    [None, True, False, 0, -1, 1, 2**63, -(2**63), 10**30, 1e-300, 1e308, float("nan"), float("inf"),
     -float("inf"), 0.5, "", "abc", "../../etc/passwd", "x" * 300, [], {}, [0], [16, 16], [1, 2, 3],
     {"a": 1}, {"nope": 1}, "NaN", "1", "cuda:99", "litemedsam", ":"]
)  # fmt: skip
VALUES = st.recursive(
    st.one_of(HOSTILE, st.integers(-(2**40), 2**40), st.floats(), st.text(max_size=8)),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=5,
)
CONFIG_KEYS = [f for f in TrainConfig().to_json()] + ["nope", "parts.supervised", "parts.mean_teacher"]


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


# ----------------------------------------------------------------------------------------- configs
@fuzz(300)
@given(changes=st.dictionaries(st.sampled_from(CONFIG_KEYS), VALUES, min_size=1, max_size=3))
def test_any_config_is_accepted_or_refused_naming_a_field(changes):
    data: dict = {}
    for key, value in changes.items():
        if key.startswith("parts."):
            parts = data.get("parts") if isinstance(data.get("parts"), dict) else {}
            parts[key.split(".", 1)[1]] = value if isinstance(value, dict) else {"x": value}
            data["parts"] = parts
        else:
            data[key] = value
    try:
        cfg = TrainConfig.from_dict(data, "cfg.json")
    except TrainError as exc:
        assert exc.kind == "bad_config"
        msg = str(exc)
        assert msg.startswith("cfg.json: ") and "\n" not in msg
        assert any(k.split(".")[0] in msg for k in data) or "unknown" in msg, msg
        return
    # Accepted: it round-trips and every number in it is finite.
    assert TrainConfig.from_dict(cfg.to_json()).to_json() == cfg.to_json()
    json.dumps(cfg.to_json(), allow_nan=False)


# ------------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def cancelled_store(tmp_path_factory):
    """A store with a run cancelled after its second iteration (a real checkpoint to damage)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ckpt")
    store = make_store(root / "store", n_train=1, n_val=0)
    stop = threading.Event()

    def on_event(ev):
        if ev["event"] == "iteration" and ev["iteration"] >= 2:
            stop.set()

    result = train(
        store.root,
        TrainConfig(iterations=50, device="cpu", checkpoint_every=1, **FAST),
        events=on_event,
        cancel=stop,
    )
    torch.set_num_threads(threads)
    assert result.status == "cancelled"
    return store.root


@st.composite
def damage(draw):
    target = draw(st.sampled_from([runstate.WEIGHTS, runstate.STATE, runstate.RUN, runstate.LATEST]))
    how = draw(st.sampled_from(["truncate", "garble", "empty", "json"]))
    return target, how, draw(st.integers(0, 2**32 - 1)), draw(VALUES)


@fuzz(25)
@given(d=damage())
def test_a_damaged_checkpoint_never_gives_a_traceback(cancelled_store, tmp_path_factory, d):
    target, how, seed, value = d
    root = tmp_path_factory.mktemp("dmg") / "store"
    shutil.copytree(cancelled_store, root)
    run = root / "training" / "run"
    ckpt = runstate.latest(run)
    path = run / runstate.LATEST if target == runstate.LATEST else ckpt / target
    data = bytearray(path.read_bytes())
    if how == "truncate":
        data = data[: seed % max(1, len(data))]
    elif how == "garble":
        for i in range(1 + seed % 4):
            data[(seed * (i + 7)) % len(data)] = (seed >> (i * 8)) & 0xFF
    elif how == "empty":
        data = bytearray()
    else:
        data = bytearray(json.dumps(value).encode())
    path.write_bytes(bytes(data))
    models = _tree(root / "models")
    stop = threading.Event()
    stop.set()  # a resume that can go on stops before its first step
    result = train(root, TrainConfig(), resume=True, cancel=stop)
    assert result.status in ("error", "cancelled"), result
    if result.status == "error":
        assert result.error_kind in ("damaged_checkpoint", "no_checkpoint"), (
            result.error_kind,
            result.message,
        )
        assert "\n" not in result.message and "without --resume" in result.message
    assert _tree(root / "models") == models


# ------------------------------------------------------------------------------------ run folders
NAMES = st.sampled_from(
    ["ckpt-000010", "ckpt-1", "ckpt-000010.bak", ".tmp-ckpt-000010-0123456789ab", ".tmp-x", ".ssh", ".config",
     "model", "models_thesis", "semisam-model-to-register", "latest.json", "registered.json", "events.jsonl",
     "notes.txt", "Documents", runstate.MARKER]
)  # fmt: skip


@fuzz(60)
@given(names=st.lists(st.tuples(NAMES, st.booleans()), max_size=6, unique_by=lambda t: t[0]))
def test_run_folder_clean_up_removes_only_the_products_own_names(tmp_path_factory, names):
    base = tmp_path_factory.mktemp("run")
    store = base / "store"
    store.mkdir()
    run = base / "run"
    run.mkdir()
    for name, is_dir in names:
        p = run / name
        if is_dir:
            (p / "inside").mkdir(parents=True)
            (p / "inside" / "file").write_text(name)
        else:
            p.write_text(name)
    before = _tree(run)
    marked = (run / runstate.MARKER).is_file()
    try:
        runstate.prepare(run, store, fresh=True)
    except TrainError as exc:
        assert exc.kind == "bad_config"
        assert _tree(run) == before  # refused: nothing touched
        assert not marked and names
        return
    after = _tree(run)
    for rel, digest in before.items():
        top = rel.split(os.sep)[0]
        if runstate.OWN_NAMES.fullmatch(top) or top == runstate.EVENTS:
            continue
        assert after.get(rel) == digest, rel


# --------------------------------------------------------------------------------- job-state file
@fuzz(60)
@given(doc=VALUES, pid_kind=st.sampled_from(["self", "parent", "sentinel", "init", "none"]), start=VALUES)
def test_a_job_state_file_never_makes_cancel_signal_another_process(
    tmp_path_factory, sentinel, doc, pid_kind, start
):
    from SemiSAMLib import training_job

    root = tmp_path_factory.mktemp("job")
    (root / "training").mkdir()
    pid = {"self": os.getpid(), "parent": os.getppid(), "sentinel": sentinel.pid, "init": 1, "none": doc}[
        pid_kind
    ]
    state = {
        "pid": pid,
        "store": str(root),
        "events": str(root / "training" / "job-events.jsonl"),
        "log": str(root / "training" / "job.log"),
        "command": [sys.executable, "-m", "semisam", "train", str(root)],
        "started": "2026-01-01T00:00:00+00:00",
        "start": start,
        "child": doc if isinstance(doc, dict) else {"pid": pid, "start": start},
    }
    (root / training_job.JOB_FILE).write_text(json.dumps(state) if not isinstance(doc, str) else doc)
    training_job._LIVE.clear()
    job = training_job.attach(root)
    if job is not None:
        assert not job.running()
        job.terminate()
        job.kill()
    assert sentinel.poll() is None


@pytest.fixture(scope="module")
def sentinel():
    """An unrelated process in this test's own process group: it must outlive every example."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait(10)


@pytest.fixture(autouse=True, scope="module")
def _slicer_lib_on_path():
    repo = Path(__file__).resolve().parents[2]
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
