"""``semisam train`` against careless and hostile input: run folders that hold the user's files, settings
outside their range, damaged checkpoints, a full disk. Each ends with one ``error`` event of the right kind
and a line naming what is wrong, and nothing the user had is touched."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from training_synth import FAST, child_env, make_store, one_thread  # noqa: F401

from semisam.store import LabeledStore
from semisam.training import TrainConfig, runstate, train
from semisam.training.errors import TrainError

pytestmark = pytest.mark.usefixtures("one_thread")

#: A hostile input must end in this many seconds (a run folder check or a config check is instant; the
#: child's import of torch takes a few seconds on a busy machine).
BOUND_S = 120


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256), folders as ``"<dir>"``; a store's
    ``training/`` folder (its trainer's lock file, made by the run) is left out."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if (root / "semisam_store.json").is_file() and rel.split(os.sep)[0] == "training":
            continue
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _user_folder(root: Path) -> Path:
    """A folder as a user's home looks: dot-folders, ``model*`` folders, documents."""
    for rel, text in {
        ".ssh/id_ed25519": "PRIVATE KEY",
        ".config/app/settings.ini": "[a]\nb=1\n",
        "models_thesis/chapter1.txt": "results",
        "model/notes.md": "mine",
        "Documents/report.txt": "draft",
        "ckpt-notes.txt": "not a checkpoint",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _cli(*args, timeout=BOUND_S) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "semisam", "train", *map(str, args), "--no-progress"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout,
    )


def _last_error(r: subprocess.CompletedProcess) -> dict:
    events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert r.returncode == 1, (r.stdout[-1000:], r.stderr[-1000:])
    assert events and events[-1]["event"] == "error", r.stdout[-1000:]
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "\n" not in events[-1]["message"]
    return events[-1]


def test_work_dir_holding_user_files_is_refused_and_left_byte_for_byte(tmp_path):
    store = make_store(tmp_path / "store", n_train=1, n_val=0)
    home = _user_folder(tmp_path / "home")
    before_home, before_store = _tree(home), _tree(store.root)
    err = _last_error(_cli(store.root, "--work-dir", home, "--iterations", 1, "--device", "cpu"))
    assert err["kind"] == "bad_config" and "not empty" in err["message"] and str(home) in err["message"]
    assert _tree(home) == before_home and _tree(store.root) == before_store


@pytest.mark.parametrize("where", ["store", "models", "training"])
def test_work_dir_inside_the_store_is_refused_and_the_registry_kept(tmp_path, where):
    store = make_store(tmp_path / "store", n_train=1, n_val=0)
    train(store.root, TrainConfig(iterations=1, device="cpu", **FAST))  # v0001 registered
    before = _tree(store.root)
    folder = {"store": store.root, "models": store.root / "models", "training": store.root / "training"}[
        where
    ]
    with pytest.raises(TrainError) as info:
        runstate.prepare(folder, store.root, fresh=True)
    assert info.value.kind == "bad_config" and "inside the store" in str(info.value)
    result = train(store.root, TrainConfig(iterations=1, device="cpu", **FAST), work_dir=folder)
    assert result.status == "error" and result.error_kind == "bad_config"
    assert _tree(store.root) == before
    assert [v.version for v in LabeledStore(store.root).models.versions()] == ["v0001"]


def test_work_dir_that_holds_the_store_is_refused(tmp_path):
    store = make_store(tmp_path / "parent" / "store", n_train=1, n_val=0)
    with pytest.raises(TrainError, match="holds the store"):
        runstate.prepare(tmp_path / "parent", store.root, fresh=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(TrainError, match="is a file"):
        runstate.prepare(tmp_path / "file", store.root, fresh=True)


def test_a_run_folder_is_marked_and_cleaned_of_its_own_names_only(tmp_path):
    store = make_store(tmp_path / "store", n_train=1, n_val=0)
    run = tmp_path / "run"
    result = train(store.root, TrainConfig(iterations=2, device="cpu", **FAST), work_dir=run)
    assert result.status == "done", result.message
    assert (run / runstate.MARKER).is_file()
    # The user later puts files into the marked folder; a new run (start and end) removes none of them.
    _user_folder(run)
    (run / "ckpt-000007").mkdir()  # a leftover checkpoint of the product's own: removed
    (run / ".tmp-semisam-model-to-register-0123456789ab").mkdir()
    mine = {k: v for k, v in _tree(run).items() if not k.startswith(("ckpt-000007", ".tmp-semisam-model"))}
    mine = {k: v for k, v in mine.items() if k not in (runstate.MARKER, runstate.EVENTS)}
    again = train(store.root, TrainConfig(iterations=2, device="cpu", **FAST), work_dir=run)
    assert again.status == "done", again.message
    after = _tree(run)
    assert {k: after.get(k) for k in mine} == mine
    assert (
        not (run / "ckpt-000007").exists()
        and not (run / ".tmp-semisam-model-to-register-0123456789ab").exists()
    )
    assert not any(n.startswith("ckpt-0") for n in os.listdir(run))


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"foreground_fraction": "abc"}, "foreground_fraction"),
        ({"max_cases": 0}, "max_cases"),
        ({"max_cases": -1}, "max_cases"),
        ({"parts": {"supervised": {"nope": 1}}}, "parts.supervised: unknown option(s) nope"),
        ({"parts": {"nosuch": {}}}, "unknown part"),
        ({"parts": {"mean_teacher": {"ema_decay": 2}}}, "parts.mean_teacher.ema_decay"),
        ({"amp": "yes"}, "amp"),
        ({"augment": 0.5}, "augment"),
        ({"min_lr_ratio": 1e9}, "min_lr_ratio"),
        ({"weak_noise": float("inf")}, "weak_noise"),
        ({"lr": float("nan")}, "lr"),
        ({"iterations": True}, "iterations"),
        ({"batch_size": 4096, "crop_size": [512, 512]}, "voxels per step"),
        ({"crop_size": [16, 100000]}, "crop_size"),
        ({"generalists": ["nosuch"]}, "unknown generalist"),
        ({"generalists": [":"]}, "generalists"),
        ({"generalists": ["sam:"]}, "names no checkpoint"),
        ({"generalists": ["sam:/no/such/file.pth"]}, "does not exist"),
        ({"device": "gpu0"}, "device"),
    ],
)
def test_settings_outside_their_range_are_refused_naming_the_field(config, field):
    with pytest.raises(TrainError) as info:
        TrainConfig.from_dict(config, "cfg.json")
    assert info.value.kind == "bad_config" and field in str(info.value), str(info.value)
    assert str(info.value).startswith("cfg.json: ")


def test_a_bad_config_file_ends_with_one_error_event(tmp_path):
    store = make_store(tmp_path / "store", n_train=1, n_val=0)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"foreground_fraction": "abc"}))
    events = tmp_path / "events.jsonl"
    r = _cli(store.root, "--config", cfg, "--events", events)
    err = _last_error(r)
    assert err["kind"] == "bad_config" and "foreground_fraction" in err["message"]
    logged = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["event"] for e in logged] == ["process", "error"]
    # An option that is not a number is refused the same way (not by an argparse line on stderr).
    err = _last_error(_cli(store.root, "--iterations", "many"))
    assert err["kind"] == "bad_config" and "iterations" in err["message"]


def test_bad_model_kwargs_are_a_config_error(tmp_path):
    store = make_store(tmp_path / "store", n_train=1, n_val=0)
    cfg = TrainConfig(iterations=1, device="cpu", model_kwargs={"channels": "wide"}, **FAST)
    result = train(store.root, cfg)
    assert result.status == "error" and result.error_kind == "bad_config", result.message
    assert "model_kwargs" in result.message


def _cancelled_run(store) -> Path:
    """A real run cancelled after its second iteration; returns its checkpoint folder."""
    stop = threading.Event()

    def on_event(ev):
        if ev["event"] == "iteration" and ev["iteration"] >= 2:
            stop.set()

    cfg = TrainConfig(iterations=50, device="cpu", checkpoint_every=1, **FAST)
    result = train(store.root, cfg, events=on_event, cancel=stop)
    assert result.status == "cancelled", result.message
    return Path(result.checkpoint)


@pytest.mark.parametrize(
    "damage",
    ["truncate weights", "truncate state", "garble run.json", "delete checkpoint", "garble latest.json"],
)
def test_resume_from_a_damaged_checkpoint_says_so(tmp_path, damage):
    store = make_store(tmp_path / "store", n_train=1, n_val=0)
    ckpt = _cancelled_run(store)
    target = {
        "truncate weights": ckpt / runstate.WEIGHTS,
        "truncate state": ckpt / runstate.STATE,
        "garble run.json": ckpt / runstate.RUN,
        "garble latest.json": ckpt.parent / runstate.LATEST,
    }.get(damage)
    if damage == "delete checkpoint":
        import shutil

        shutil.rmtree(ckpt)
    elif damage.startswith("truncate"):
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    else:
        target.write_text("{not json")
    result = train(store.root, TrainConfig(), resume=True)
    assert result.status == "error" and result.error_kind == "damaged_checkpoint", result.message
    assert "without --resume" in result.message and "\n" not in result.message
    assert LabeledStore(store.root).models.versions() == []
    # The way out the message gives works.
    fresh = train(store.root, TrainConfig(iterations=1, device="cpu", **FAST))
    assert fresh.status == "done", fresh.message


def test_resume_with_nothing_to_resume_says_so(tmp_path):
    store = make_store(tmp_path / "store", n_train=1, n_val=0)
    assert train(store.root, TrainConfig(iterations=1, device="cpu", **FAST)).status == "done"
    result = train(store.root, TrainConfig(), resume=True)  # the run finished: its checkpoints are gone
    assert result.status == "error" and result.error_kind == "no_checkpoint"
    assert "nothing to resume" in result.message
    assert [v.version for v in LabeledStore(store.root).models.versions()] == ["v0001"]


def _mount_small_disk(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def test_a_full_disk_is_reported_as_such_and_the_registry_kept(tmp_path):
    disk = tmp_path / "small"
    if not _mount_small_disk(disk, "1m"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount permission) to fill a disk")
    try:
        store = make_store(tmp_path / "store", n_train=1, n_val=0)
        first = train(store.root, TrainConfig(iterations=1, device="cpu", **FAST))
        before = _tree(store.root / "models")
        # Leave ~40 KB: the marker and events fit, a checkpoint (weights + optimiser state) does not.
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * (free - 40_000))
        cfg = TrainConfig(iterations=5, device="cpu", checkpoint_every=2, **FAST)
        result = train(store.root, cfg, work_dir=disk / "run")
        assert result.status == "error" and result.error_kind == "disk_full", result.message
        assert "no space left" in result.message and str(disk / "run") in result.message
        assert _tree(store.root / "models") == before
        assert LabeledStore(store.root).models.active().version == first.version
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=30)
