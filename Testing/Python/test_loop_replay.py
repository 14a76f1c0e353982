"""The loop replay: JSON lines, the store it grows, the truth kept from the product, resume after a kill.

These runs test the replay's bookkeeping, not mask quality (the real weights are exercised in
test_loop_annotator.py): a tiny LiteMedSAM (the real architecture, random weights) and no prompt budget
with an absolute target, so the annotator draws by hand and a case costs a fraction of a second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from loop_synth import write_dataset

from semisam.loop import AnnotatorConfig, Simulation, SimulationConfig
from semisam.loop.dataset import Dataset
from semisam.loop.replay import BASELINE_FILE, CASES_FILE, PLOT_FILE, read_jsonl
from semisam.metrics import dice
from semisam.scan.volume import read_mask, read_volume
from semisam.store import LabeledStore

REPO = Path(__file__).resolve().parents[2]

CASE_KEYS = {
    "event": str,
    "run": str,
    "index": int,
    "case_id": str,
    "accepted_before": int,
    "proposal_dice": float,
    "prompt_dice": float,
    "final_dice": float,
    "target_dice": float,
    "boxes": int,
    "points": int,
    "points_pos": int,
    "points_neg": int,
    "islands": int,
    "hand_slices": int,
    "simulated_s": float,
    "compute_s": float,
    "effort_s": float,
    "budget": int,
    "stop": str,
    "actions": list,
}


@pytest.fixture(scope="module")
def tiny_generalist(tmp_path_factory) -> str:
    """``litemedsam:<file>`` of a tiny random LiteMedSAM checkpoint."""
    from tiny_generalists import save_tiny, tiny_litemedsam

    path = save_tiny(tiny_litemedsam(0), tmp_path_factory.mktemp("gen") / "tiny_litemedsam.pth")
    return f"litemedsam:{path}"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ds") / "synth", n_cases=8, shape=(6, 32, 32), seed=1)


@pytest.fixture(autouse=True)
def eager_encoder(monkeypatch, tmp_path):
    # The tiny model runs eagerly (no ONNX export to a shared cache from a test).
    monkeypatch.setenv("SEMISAM_ENCODER_BACKEND", "eager")
    monkeypatch.setenv("SEMISAM_CACHE_DIR", str(tmp_path / "cache"))


def _config(dataset: Path, work: Path, generalist: str, **kw) -> SimulationConfig:
    kw.setdefault("annotator", AnnotatorConfig(budget=0))
    return SimulationConfig(
        dataset=dataset, work=work, retrain_every=0, generalist=generalist, target_dice=0.95, **kw
    )


def _check_schema(record: dict) -> None:
    for key, kind in CASE_KEYS.items():
        assert key in record, key
        value = record[key]
        assert isinstance(value, kind) or (kind is float and isinstance(value, int)), (key, value)
    assert record["effort_s"] == pytest.approx(record["simulated_s"] + record["compute_s"], abs=2e-3)
    assert record["points"] == record["points_pos"] + record["points_neg"]


def test_replay_writes_lines_store_and_plot_and_keeps_the_truth_out(dataset, tiny_generalist, tmp_path):
    emitted: list[dict] = []
    work = tmp_path / "work"
    cfg = _config(dataset, work, tiny_generalist, max_cases=2, baseline=True)
    summary = Simulation(cfg, emit=emitted.append).run()
    loop = [r for r in read_jsonl(work / CASES_FILE) if r["event"] == "case"]
    base = read_jsonl(work / BASELINE_FILE)
    order = Dataset.open(dataset).order(0)
    assert [r["case_id"] for r in loop] == order[:2] == [r["case_id"] for r in base]
    for r in loop + base:
        _check_schema(r)
    # No specialist yet: the first proposal is empty and comes from no model version.
    assert loop[0]["model_version"] is None and loop[0]["proposal_dice"] == 0.0
    assert {r["run"] for r in loop} == {"loop"} and {r["run"] for r in base} == {"baseline"}
    assert emitted[-1] == summary and summary["event"] == "summary" and summary["cases"] == 2
    assert summary["baseline"]["cases"] == 2 and (work / PLOT_FILE).stat().st_size > 1000

    store = LabeledStore(work / "store")
    assert store.case_ids() == order[:2]
    ds = Dataset.open(dataset)
    for r in loop:
        case = store.read_case(r["case_id"])
        _, truth = ds.read(r["case_id"], 1)
        # The store holds the annotator's mask (what the product learns from), not the truth file.
        assert dice(case.mask.array, truth) == pytest.approx(r["final_dice"], abs=1e-4)
        prov = case.record.provenance
        assert prov.tool == "semisam simulate" and prov.seconds == pytest.approx(r["effort_s"], abs=1e-2)
        assert (
            prov.prompts.get("box", 0) == r["boxes"] and prov.prompts.get("hand_slice", 0) == r["hand_slices"]
        )
    # The unlabeled pool is the cases not yet seen, each an image file, never a label file.
    pool = store.unlabeled()
    assert [s.scan_id for s in pool] == order[2:]
    for scan in pool:
        path = store.unlabeled_path(scan.scan_id)
        assert path.parent.name == "imagesTr" and path == ds.case(scan.scan_id).image.resolve()
        label = read_mask(ds.case(scan.scan_id).label).array
        assert not np.array_equal(read_volume(path).array, label)
    stored = [p for p in (work / "store").rglob("*.nii.gz") if "labelsTr" in str(p.resolve())]
    assert stored == []


def test_the_active_specialist_proposes(dataset, tiny_generalist, tmp_path):
    """A promoted model version is what proposes the next case (via load_model + segment)."""
    from semisam.model_folder import new_manifest, save_model
    from semisam.specialists import build_specialist

    work = tmp_path / "work"
    Simulation(_config(dataset, work, tiny_generalist, max_cases=1)).run()
    store = LabeledStore(work / "store")
    man = new_manifest(
        "unet3d",
        ["structure"],
        "MR",
        kwargs={"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
        target_spacing=(2.0, 2.0, 2.0),
    )
    save_model(tmp_path / "m", build_specialist(man.arch, **man.kwargs), man)
    store.models.promote(store.models.add(tmp_path / "m").version, require_better=False)
    Simulation(_config(dataset, work, tiny_generalist, max_cases=2)).run()
    loop = [r for r in read_jsonl(work / CASES_FILE) if r["event"] == "case"]
    assert [r["model_version"] for r in loop] == [None, "v0001"]
    assert loop[1]["propose_s"] > 0 and loop[1]["compute_s"] >= loop[1]["propose_s"]
    # The 5th case joins the validation split: it is drawn without the proposal (blind), so that it
    # does not favour the version that would have proposed it when versions are compared.
    Simulation(_config(dataset, work, tiny_generalist, max_cases=5)).run()
    loop = [r for r in read_jsonl(work / CASES_FILE) if r["event"] == "case"]
    assert [r["model_version"] for r in loop] == [None, "v0001", "v0001", "v0001", None]
    assert [r["blind"] for r in loop[1:]] == [False, False, False, True]
    assert loop[4]["proposal_dice"] == 0.0 and loop[4]["propose_s"] == 0.0
    assert LabeledStore(work / "store").record(loop[4]["case_id"]).split == "validation"


def test_resume_refuses_other_options(dataset, tiny_generalist, tmp_path):
    work = tmp_path / "work"
    Simulation(_config(dataset, work, tiny_generalist, max_cases=1)).run()
    with pytest.raises(ValueError, match="simulation.json.*seed: saved 0, given 5"):
        Simulation(_config(dataset, work, tiny_generalist, max_cases=1, seed=5)).run()


def test_a_work_folder_saved_before_an_annotator_option_resumes_as_it_ran(dataset, tiny_generalist, tmp_path):
    """A plan saved before ``slice_after_undo`` and ``islands`` existed ran without them (and without the
    Islands click's price): it resumes with both off and is refused with them on (the default), which would
    change how its cases are corrected."""
    import json

    work = tmp_path / "work"
    off = AnnotatorConfig(budget=0, slice_after_undo=False, islands=False)
    Simulation(_config(dataset, work, tiny_generalist, max_cases=1, annotator=off)).run()
    plan_file = work / "simulation.json"
    plan = json.loads(plan_file.read_text())
    del plan["options"]["annotator"]["slice_after_undo"]
    del plan["options"]["annotator"]["islands"]
    del plan["options"]["time_model"]["island_s"]
    plan_file.write_text(json.dumps(plan))
    Simulation(_config(dataset, work, tiny_generalist, max_cases=2, annotator=off)).run()
    assert len((work / "cases.jsonl").read_text().splitlines()) == 2
    with pytest.raises(
        ValueError, match="simulation.json.*annotator.islands: saved False, given True.*slice_after_undo"
    ):
        Simulation(_config(dataset, work, tiny_generalist, max_cases=2)).run()


@pytest.mark.slow  # two child processes (torch import each): ~30 s on the shared 2-core machine; `-m slow`
def test_a_killed_simulation_resumes_without_redoing_cases(dataset, tiny_generalist, tmp_path):
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "semisam", "simulate", str(dataset), "--work", str(work)]
    cmd += ["--retrain-every", "0", "--generalist", tiny_generalist, "--baseline", "--budget", "0"]
    cmd += ["--target-dice", "0.95"]
    env = dict(os.environ, PYTHONPATH=str(REPO / "scripted_modules"))
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if len([r for r in read_jsonl(work / CASES_FILE) if r.get("event") == "case"]) >= 1:
                break
            time.sleep(0.02)
        assert child.poll() is None, "the simulation ended before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    first = [r for r in read_jsonl(work / CASES_FILE) if r.get("event") == "case"]
    assert 1 <= len(first) < 8
    store = LabeledStore(work / "store")
    added = {r.case_id: r.added for r in store.cases()}
    assert set(added) >= {r["case_id"] for r in first}

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=True).stdout
    printed = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    loop = [r for r in read_jsonl(work / CASES_FILE) if r.get("event") == "case"]
    ids = [r["case_id"] for r in loop]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 8  # every case once
    assert ids[: len(first)] == [r["case_id"] for r in first]
    redone = {r["case_id"] for r in printed if r.get("run") == "loop"} & {r["case_id"] for r in first}
    assert redone == set()  # cases accepted before the kill were not redone
    store = LabeledStore(work / "store")
    assert len(store.cases()) == 8 and store.unlabeled() == []
    for r in store.cases():
        if r.case_id in added:
            assert r.added == added[r.case_id]
    base = [r["case_id"] for r in read_jsonl(work / BASELINE_FILE)]
    assert sorted(base) == sorted(ids)
    assert printed[-1]["event"] == "summary" and printed[-1]["cases"] == 8


def test_with_adapt_the_loop_prompts_the_stores_adapted_generalist(dataset, tiny_generalist, tmp_path):
    from semisam.adapt.versions import GeneralistRegistry

    work = tmp_path / "work"
    fast = {"min_steps": 2, "max_steps": 2, "batch": 2}
    Simulation(_config(dataset, work, tiny_generalist, max_cases=4, adapt=True)).run()
    store = LabeledStore(work / "store")
    sim = Simulation(_config(dataset, work, tiny_generalist, adapt=True, adapt_options=fast))
    # No validation case yet: nothing could promote a version, so the loop records why and goes on.
    early = sim.adapt(store, 4)
    assert early["status"] == "error" and "no validation case" in early["message"], early
    Simulation(_config(dataset, work, tiny_generalist, max_cases=5, adapt=True)).run()  # the 5th validates
    assert sim.loop_generalist(store) is sim.generalist()  # nothing adapted yet: the frozen one
    record = sim.adapt(store, 5)
    assert record["event"] == "adapt" and record["status"] == "done" and record["version"] == "v0001", record
    assert set(record["validation"]) >= {"frozen", "adapted"}
    reg = GeneralistRegistry(store)
    reg.promote("v0001", require_better=False)
    adapted = sim.loop_generalist(store)
    assert adapted is not sim.generalist() and adapted.generalist_version == "v0001"
    assert sim.loop_generalist(store) is adapted  # built once per version
    Simulation(_config(dataset, work, tiny_generalist, max_cases=6, adapt=True)).run()
    assert len([r for r in read_jsonl(work / CASES_FILE) if r["event"] == "case"]) == 6


def test_held_out_cases_stay_out_of_the_loop_and_score_every_retrain(dataset, tiny_generalist, tmp_path):
    """Cases held out are never replayed nor pooled; each retrain scores its new version there, and the
    version it replaced from the second retrain on; the summary says whether a promotion made it worse."""
    work = tmp_path / "work"
    train = {"batch_size": 2, "crop_size": [32, 32], "amp": False, "max_minutes": None, "augment": False}
    cfg = _config(dataset, work, tiny_generalist, held_out=2, max_cases=4, iterations=3, train_options=train)
    cfg.retrain_every = 2
    summary = Simulation(cfg).run()
    order = Dataset.open(dataset).order(0)
    held = order[-2:]
    lines = read_jsonl(work / CASES_FILE)
    cases = [r["case_id"] for r in lines if r["event"] == "case"]
    assert cases == order[:4] and not set(cases) & set(held)
    store = LabeledStore(work / "store")
    assert not {s.scan_id for s in store.unlabeled()} & set(held)  # not in the pool either
    retrains = [r for r in lines if r["event"] == "retrain"]
    assert [r["after_cases"] for r in retrains] == [2], retrains
    h = retrains[0]["held_out"]
    assert h["cases"] == held and h["new_version"] == retrains[0]["version"] and h["previous_version"] is None
    assert 0.0 <= h["new"] <= 1.0 and len(h["new_per_case"]) == 2 and "previous" not in h
    ds = Dataset.open(dataset)
    # The score is the version's Auto-segment against the truth of the held-out cases.
    from semisam.inference import segment
    from semisam.model_folder import load_model

    model, manifest = load_model(store.models.get(h["new_version"]).path)
    image, truth = ds.read(held[0], 1)
    assert dice((segment(image, model, manifest).labels == 1).astype(np.uint8), truth) == pytest.approx(
        h["new_per_case"][0], abs=1e-4
    )
    assert summary["promotions_never_worse_held_out"] is None  # nothing was replaced yet
    assert summary["retrains"][0]["held_out_new"] == h["new"]
    # More cases: the second retrain also scores the version it would replace.
    cfg.max_cases = 6
    summary = Simulation(cfg).run()
    second = [r for r in read_jsonl(work / CASES_FILE) if r["event"] == "retrain"][1]
    assert second["held_out"]["previous_version"] == retrains[0]["active"]
    assert isinstance(second["held_out"]["previous"], float)
    expected = None if not second["promoted"] else second["held_out"]["new"] >= second["held_out"]["previous"]
    assert summary["promotions_never_worse_held_out"] == expected
    with pytest.raises(ValueError, match="--held-out 8: the dataset holds 8 cases"):
        Simulation(_config(dataset, tmp_path / "w2", tiny_generalist, held_out=8)).run()
