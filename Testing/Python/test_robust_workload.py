"""Bounded work, and messages that say what is wrong.

Hostile ``inference`` values in a model manifest (windows of 1 voxel, overlap 0.99, 4096 windows of
4096 x 4096 per batch, a 3D window for a 2.5D network), prompts that would encode every slice of a
10,000-slice scan, a batch that does not fit in the memory left to the process, ``SEMISAM_CACHE_DIR``
naming a file, a simulation work folder that is a file, a scan whose slices are 1 x 1 voxels.

Each command runs as a real child process (``python -m semisam``) under :data:`TIMEOUT`, so a hang fails
the test: it ends with exit 1 and one line naming the file and the field (or a correct result), no
traceback, its inputs byte-identical and no output written. The estimates themselves are checked
against what MONAI really slides.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from robust_helpers import sha, tree_digest

from semisam import budget
from semisam import model_folder as mf
from semisam.inference import DEFAULT_INFERENCE
from semisam.scan.volume import GridTooLargeError, Volume, read_mask, read_volume, write_volume

#: Seconds one command may take. A refusal comes before any compute: 0.3 s when it needs no torch
#: (manifest, prompts, scan checks), ~6 s with torch's import on a busy 2-core machine. Before these
#: bounds the hostile manifests ran past 60 s (roi_size [1, 1]) and 100 s (overlap 0.99).
TIMEOUT = 60

#: The model grid of every scan here equals its voxel grid: spacing (1, 1, 2) mm = the models' target.
SPACING = (1.0, 1.0, 2.0)


# --------------------------------------------------------------------------------------------- helpers
def _child(
    *args, env: dict | None = None, code: str | None = None
) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m semisam ARGS`` (or ``python -c CODE ARGS``) as a child process under :data:`TIMEOUT`;
    returns the finished process and its wall-clock seconds."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), **(env or {})}
    head = ["-c", code] if code else ["-m", "semisam"]
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, *head, *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=TIMEOUT,
    )
    return proc, time.monotonic() - t0


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 1, no traceback, stderr exactly one line holding every needle; returns the line."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _scan(path: Path, shape: tuple[int, int, int] = (20, 64, 64)) -> Path:
    """A CT-like int16 scan ``(Z, Y, X)`` with a bright box, at :data:`SPACING`."""
    a = np.full(shape, -800, np.int16)
    z, y, x = shape
    a[z // 4 : 3 * z // 4, y // 4 : 3 * y // 4, x // 4 : 3 * x // 4] = 40
    return write_volume(Volume(a, SPACING), path)


def _with_inference(model_dir: Path, dest: Path, inference: dict) -> Path:
    """A copy of ``model_dir`` whose manifest's ``inference`` block is ``inference`` (weights unchanged)."""
    shutil.copytree(model_dir, dest)
    data = json.loads((dest / mf.MANIFEST_NAME).read_text())
    data["inference"] = inference
    (dest / mf.MANIFEST_NAME).write_text(json.dumps(data))
    return dest


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Real model folders as ``semisam model init`` makes them (in process: a child costs seconds of
    imports): a 2.5D ``mamba_unet`` and a 3D ``unet3d``, narrow, working at :data:`SPACING`."""
    from semisam.cli import main

    root = tmp_path_factory.mktemp("workload-models")
    out = {}
    for arch, kwargs in (
        ("mamba_unet", {"channels": [8, 16, 16, 32, 32]}),
        ("unet3d", {"channels": [4, 8, 8, 8, 8]}),
    ):
        argv = ["model", "init", "--arch", arch, "--labels", "lesion", "--modality", "CT"]
        argv += ["--output", str(root / arch), "--target-spacing", *map(str, SPACING)]
        with contextlib.redirect_stdout(io.StringIO()):
            assert main([*argv, "--kwargs", json.dumps(kwargs)]) == 0
        out[arch] = root / arch
    return out


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    return _scan(tmp_path_factory.mktemp("workload-scan") / "crop.nii.gz")


# -------------------------------------------------------------------- hostile inference values (CLI)
#: name -> (architecture, manifest "inference" block, what the error line must say). The first three
#: are the reported ones; each is refused when the manifest is read, before torch is imported.
HOSTILE_INFERENCE = {
    "roi_size [1, 1] (ran past 60 s)": ("mamba_unet", {"roi_size": [1, 1]}, "inference.roi_size["),
    "roi_size [16, 16] overlap 0.99 (ran past 100 s)": (
        "mamba_unet",
        {"roi_size": [16, 16], "overlap": 0.99},
        "inference.overlap: expected a number in 0..0.75, got 0.99",
    ),
    "roi_size [4096, 4096] sw_batch_size 4096 (asked for 13.5 GB)": (
        "mamba_unet",
        {"roi_size": [4096, 4096], "sw_batch_size": 4096},
        "inference.sw_batch_size: expected an integer 1..256, got 4096",
    ),
    "roi_size [1, 1, 1] on the 2.5D model (MONAI: Inputs must have 5 dimensions)": (
        "mamba_unet",
        {"roi_size": [1, 1, 1]},
        "inference.roi_size: a 2.5d network slides 2D windows (rows, columns): expected 2 entries, got 3",
    ),
    "2D windows on the 3D model": ("unet3d", {"roi_size": [64, 64]}, "expected 3 entries, got 2"),
    "window side not a multiple of the 3D network's 16": (
        "unet3d",
        {"roi_size": [17, 17, 17]},
        "inference.roi_size[0]: expected -1 (the whole axis) or a multiple of 16",
    ),
    "window of one bottleneck voxel (instance norm fails)": (
        "unet3d",
        {"roi_size": [16, 64, 64]},
        "multiple of 16 (the network's downsampling factor) from 32 to 4096 voxels, got 16",
    ),
    "tile not a multiple of the 2.5D network's 32": ("mamba_unet", {"roi_size": [48, 64]}, "multiple of 32"),
    "negative overlap": ("unet3d", {"overlap": -0.1}, "inference.overlap"),
    "batch of zero": ("unet3d", {"sw_batch_size": 0}, "inference.sw_batch_size"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_INFERENCE))
def test_hostile_inference_values_are_refused_at_once(models, scan, tmp_path, case):
    arch, inference, needle = HOSTILE_INFERENCE[case]
    d = _with_inference(models[arch], tmp_path / "model", inference)
    before = sha(scan), tree_digest(d)
    out = tmp_path / "mask.nii.gz"
    proc, seconds = _child("segment", scan, "--model", d, "--output", out, "--device", "cpu")
    _one_line_error(proc, str(d / mf.MANIFEST_NAME), needle)
    assert seconds < TIMEOUT and not out.exists()
    assert (sha(scan), tree_digest(d)) == before
    # The same manifest is refused by `model verify` (and so by the store's registry).
    _one_line_error(_child("model", "verify", d)[0], needle)


def test_windows_larger_than_the_scan_give_the_whole_slice_result(models, scan, tmp_path):
    """roi_size [4096, 4096] with a batch of 256 on a 20 x 64 x 64 crop: the window is cut to the slice
    (more padding would only be zeros to compute): a correct result, the same as the default's."""
    from semisam.inference import segment
    from semisam.model_folder import load_model

    d = _with_inference(
        models["mamba_unet"], tmp_path / "model", {"roi_size": [4096, 4096], "sw_batch_size": 256}
    )
    out = tmp_path / "mask.nii.gz"
    proc, seconds = _child("segment", scan, "--model", d, "--output", out, "--device", "cpu", "--no-progress")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    vol = read_volume(scan)
    written = read_mask(out, reference=vol)  # on exactly the scan's grid
    model, hostile = load_model(d)
    _, default = load_model(models["mamba_unet"])
    a, b = segment(vol, model, hostile, "cpu"), segment(vol, model, default, "cpu")
    np.testing.assert_array_equal(a.labels, b.labels)
    assert written.array.shape == vol.shape and seconds < TIMEOUT


def test_whole_axis_windows_work_on_the_3d_model(models, scan):
    """roi_size [-1, -1, -1] on unet3d: each side rounded up to a multiple of 16 (MONAI pads the grid),
    where the window used to be the grid itself and MONAI's U-Net failed on a 20-slice axis."""
    from semisam.inference import segment
    from semisam.model_folder import load_model

    model, man = load_model(models["unet3d"])
    man.inference = {"roi_size": [-1, -1, -1]}
    vol = read_volume(scan)
    res = segment(vol, model, man, "cpu")
    assert res.labels.shape == vol.shape
    settings = {**DEFAULT_INFERENCE["3d"], **man.inference, "kind": "3d"}
    plan = budget.plan_sliding_window(model, man, (20, 64, 64), settings, available=None)
    assert plan.roi == (32, 64, 64) and plan.windows == 1


# ---------------------------------------------------------------------------------- memory (CLI)
#: A child that counts its imports' address space, then runs ``semisam ARGS`` with 1 GiB more allowed
#: (``ulimit -v``): how a batch that does not fit behaves on a small machine, without needing one.
LIMITED = """
import resource, sys
import torch, monai.inferers, semisam.inference
from semisam.cli import main
with open("/proc/self/status") as fh:
    vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
def test_a_batch_that_does_not_fit_in_memory_is_refused_naming_the_field(models, tmp_path):
    """256 slices of 256 x 256 per network call need ~3 GiB: refused before any compute, with the
    batch that fits, instead of the allocator's traceback."""
    big = _scan(tmp_path / "big.nii.gz", (256, 256, 256))
    d = _with_inference(models["mamba_unet"], tmp_path / "model", {"sw_batch_size": 256})
    out = tmp_path / "mask.nii.gz"
    before = sha(big), tree_digest(d)
    proc, seconds = _child(
        "segment", big, "--model", d, "--output", out, "--device", "cpu", "--no-progress", code=LIMITED
    )
    line = _one_line_error(proc, str(d / mf.MANIFEST_NAME), "inference.sw_batch_size 256", "memory free")
    assert "fit (set sw_batch_size to" in line
    assert seconds < TIMEOUT and not out.exists() and (sha(big), tree_digest(d)) == before


# ---------------------------------------------------------------------------------- the estimates
def _plan(arch: str, grid, inference: dict | None = None, available=None, models=None):
    from semisam.specialists import build_specialist

    man = mf.read_manifest(models[arch])
    man.inference = dict(inference or {})
    model = build_specialist(man.arch, **man.kwargs)
    kind = model.input_kind
    settings = {**DEFAULT_INFERENCE[kind], **man.inference, "kind": kind}
    return budget.plan_sliding_window(model, man, grid, settings, available=available, scan="scan.nii.gz")


@pytest.mark.parametrize(
    "arch, grid, inference",
    [
        ("mamba_unet", (7, 100, 130), {"roi_size": [64, 64], "overlap": 0.5}),
        ("mamba_unet", (3, 70, 50), {"roi_size": [64, 96], "overlap": 0.75, "sw_batch_size": 5}),
        ("mamba_unet", (4, 40, 300), {}),
        ("unet3d", (20, 50, 70), {"roi_size": [32, 32, 48], "overlap": 0.25}),
        ("unet3d", (9, 40, 33), {"roi_size": [128, 128, 128]}),
        ("unet3d", (40, 40, 40), {"roi_size": [32, 32, 32], "overlap": 0.75, "sw_batch_size": 3}),
    ],
)
def test_window_count_is_what_monai_slides(models, arch, grid, inference):
    """The plan's window count equals the windows MONAI's sliding window really runs (counted by the
    predictor), and every window it runs has the plan's size."""
    from monai.inferers import sliding_window_inference

    plan = _plan(arch, grid, inference, models=models)
    seen: list[tuple[int, ...]] = []

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        seen.extend([tuple(batch.shape[2:])] * batch.shape[0])
        assert batch.shape[0] <= plan.batch_windows
        return batch[:, :1]

    if plan.kind == "2.5d":
        x = torch.zeros(grid[0], 1, *grid[1:])
    else:
        x = torch.zeros(1, 1, *grid)
    with torch.inference_mode():
        sliding_window_inference(x, list(plan.roi), plan.sw_batch_size, predictor, overlap=plan.overlap)
    assert len(seen) == plan.windows and set(seen) == {plan.roi}


def test_defaults_on_a_whole_body_ct_are_within_the_bounds(models):
    """A whole-body CT at 0.8 x 0.8 x 1.5 mm: 1,200 x 625 x 625 voxels on the model grid."""
    grid = (1200, 625, 625)
    assert _plan("mamba_unet", grid, models=models).windows == 1200  # one window per slice
    assert _plan("unet3d", grid, models=models).windows == 13 * 7 * 7  # 128^3, overlap 0.25


def test_too_many_windows_are_refused_naming_roi_size_and_overlap(models):
    with pytest.raises(mf.CheckpointError) as info:
        _plan("mamba_unet", (1200, 625, 625), {"roi_size": [64, 64], "overlap": 0.75}, models=models)
    line = str(info.value)
    assert line.startswith(
        f"{models['mamba_unet'] / mf.MANIFEST_NAME}: inference.roi_size [64, 64] with overlap 0.75"
    )
    assert "1,642,800 windows" in line and f"at most {budget.MAX_WINDOWS:,}" in line and "\n" not in line


def test_memory_refusals_name_what_to_change(models):
    gib = 1 << 30
    with pytest.raises(
        mf.CheckpointError, match=r"inference\.sw_batch_size 256: .* \d+ fit \(set sw_batch_size"
    ):
        _plan("mamba_unet", (256, 256, 256), {"sw_batch_size": 256}, available=gib, models=models)
    with pytest.raises(
        mf.CheckpointError, match=r"inference\.roi_size \[256, 256, 256\]: .*use smaller windows"
    ):
        _plan("unet3d", (256, 256, 256), {"roi_size": [256, 256, 256]}, available=gib, models=models)
    with pytest.raises(GridTooLargeError, match=r"^scan\.nii\.gz: segmenting needs ~.*crop the scan"):
        _plan("mamba_unet", (64, 4096, 4096), {"sw_batch_size": 1}, available=gib // 4, models=models)
    assert (
        _plan("mamba_unet", (256, 256, 256), {"sw_batch_size": 16}, available=gib, models=models).peak_bytes
        < gib
    )


@pytest.mark.filterwarnings("ignore:`len.strides. > len.channels. - 1`:UserWarning")
def test_built_in_geometry_agrees_with_the_networks():
    """The torch-free rules read_manifest applies are the built networks' own input kind and factor."""
    from semisam.specialists import build_specialist

    for arch, kwargs in [
        ("mamba_unet", {}),
        ("mamba_unet", {"channels": [8, 16, 16, 32, 32]}),
        ("unet3d", {}),
        ("unet3d", {"channels": [4, 8, 8], "strides": [2, 2, 2, 2]}),
        ("unet3d", {"strides": [2, 2, 1, 2]}),
        ("unet2d", {}),
        ("unet2d", {"channels": [8, 16, 32], "strides": [2, 2]}),
    ]:
        model = build_specialist(arch, n_classes=2, **kwargs)
        assert mf.arch_geometry(arch, kwargs) == (model.input_kind, model.pad_multiple), (arch, kwargs)


def test_schema_states_the_same_bounds():
    schema = json.loads((Path(mf.__file__).parent / "schemas" / "manifest.json").read_text())
    inference = schema["properties"]["inference"]["properties"]
    assert inference["overlap"]["maximum"] == mf.MAX_OVERLAP
    assert inference["sw_batch_size"]["maximum"] == mf.MAX_SW_BATCH_SIZE
    assert inference["roi_size"]["items"]["maximum"] == mf.MAX_ROI_VOXELS
    assert inference["roi_size"]["items"]["not"]["exclusiveMaximum"] == mf.MIN_ROI_VOXELS


# ------------------------------------------------------------------------------------------ propagate
def test_propagation_encoder_calls():
    calls = budget.propagation_encoder_calls
    assert calls(100, [50]) == 100  # one key slice: its tracks may run to both ends
    # two key slices 10 apart: 2 keys + 9 between + half the gap plus one (6) beyond each
    assert calls(100, [40, 50]) == 2 + 9 + 6 + 6
    assert calls(10_000, [0, 9_999]) == 2 + 2 * 9_998  # a gap longer than the cache: encoded twice
    assert calls(100, [5], video=True) == 100 and calls(100, []) == 0


def test_prompts_that_would_encode_ten_thousand_slices_are_refused(tmp_path):
    """One box on a 16 x 16 x 10,000-voxel scan: the tracks could run to both ends (10,000 encodes,
    hours on a CPU); refused before any model is loaded."""
    long = _scan(tmp_path / "long.nii.gz", (10_000, 16, 16))
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"axis": "axial", "prompts": [{"slice": 5000, "box": [4, 4, 11, 11]}]}))
    before = sha(long), sha(prompts)
    out = tmp_path / "mask.nii.gz"
    proc, seconds = _child("propagate", long, "--prompts", prompts, "--output", out)
    _one_line_error(
        proc, str(long), str(prompts), "10,000 encoder calls", f"at most {budget.MAX_ENCODER_CALLS:,}"
    )
    assert seconds < TIMEOUT and not out.exists() and (sha(long), sha(prompts)) == before


def test_propagation_memory_is_checked(tmp_path):
    from semisam.prompts import PromptError

    with pytest.raises(
        PromptError, match=r"^big\.nii\.gz: propagating the prompts from p\.json over up to 60 slices"
    ):
        budget.check_propagation(
            (60, 4096, 4096), 0, [30], scan="big.nii.gz", prompts="p.json", available=1 << 30
        )
    calls, need = budget.check_propagation((3, 2000, 2000), 0, [1], available=None)
    assert calls == 3 and need < 1 << 30


# ------------------------------------------------------------------------- messages that say what
def test_cache_dir_that_is_a_file_runs_uncached_with_one_warning(tmp_path, monkeypatch, caplog):
    """SEMISAM_CACHE_DIR naming a file: the ONNX exports go to a temporary folder for this run, with one
    warning naming the variable; the file is untouched and nothing is left behind."""
    pytest.importorskip("onnxruntime")
    from tiny_generalists import tiny_sam

    from semisam.generalists.base import SlicePrompt
    from semisam.generalists.fast_encoder import apply_backend

    afile = tmp_path / "not-a-folder"
    afile.write_bytes(b"user data\n")
    monkeypatch.setenv("SEMISAM_CACHE_DIR", str(afile))
    leftovers = set(Path(tempfile.gettempdir()).glob("semisam-onnx-*"))
    image = np.random.default_rng(0).uniform(0, 1, (40, 56)).astype(np.float32)
    eager = tiny_sam(seed=4)
    reference = eager.encode(image).features
    model = tiny_sam(seed=4)
    apply_backend(model, "onnxruntime")
    with caplog.at_level(logging.WARNING, logger="semisam.generalists.fast_encoder"):
        emb = model.encode(image)
        model.predict(emb, SlicePrompt(box=(10, 8, 30, 25)))  # the decoder's export too
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"SEMISAM_CACHE_DIR={afile}" in warnings[0] and "is a file, not a folder" in warnings[0]
    assert "running uncached" in warnings[0]
    assert torch.allclose(emb.features, reference, atol=1e-4)
    assert afile.read_bytes() == b"user data\n"
    assert set(Path(tempfile.gettempdir()).glob("semisam-onnx-*")) == leftovers


@pytest.mark.slow
def test_propagate_with_a_cache_dir_that_is_a_file(tmp_path):
    """The whole command (LiteMedSAM, exported to ONNX for this run: ~20 s on 2 cores)."""
    afile = tmp_path / "cachefile"
    afile.write_text("x")
    scan = _scan(tmp_path / "scan.nii.gz", (8, 48, 48))
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"axis": "axial", "prompts": [{"slice": 4, "box": [14, 14, 33, 33]}]}))
    out = tmp_path / "mask.nii.gz"
    proc, _ = _child(
        "propagate", scan, "--prompts", prompts, "--output", out, env={"SEMISAM_CACHE_DIR": str(afile)}
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    warned = [ln for ln in proc.stderr.splitlines() if ln.startswith("WARNING")]
    assert len(warned) == 1 and f"SEMISAM_CACHE_DIR={afile}" in warned[0], proc.stderr
    assert out.exists() and afile.read_text() == "x"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from loop_synth import write_dataset

    return write_dataset(tmp_path_factory.mktemp("workload-ds") / "ds", n_cases=2, shape=(8, 24, 24))


@pytest.mark.parametrize("where", ["file", "inside a file"])
def test_simulate_work_folder_that_is_a_file(dataset, tmp_path, where):
    afile = tmp_path / "results.txt"
    afile.write_text("keep me\n")
    work = afile if where == "file" else afile / "run1"
    before = tree_digest(dataset)
    proc, seconds = _child("simulate", dataset, "--work", work, "--max-cases", 1, "--retrain-every", 0)
    what = "is a file" if where == "file" else f"lies inside {afile}, which is a file"
    _one_line_error(proc, f"work folder {work}: {what}, not a folder")
    assert seconds < TIMEOUT and afile.read_text() == "keep me\n" and tree_digest(dataset) == before


@pytest.mark.parametrize(
    "shape_zyx, needle",
    [
        ((500, 1, 1), "has size (1, 1, 500) (X, Y, Z): its slices are 1 x 1 voxels in-plane"),
        ((40, 30, 1), "its slices are 1 x 30 voxels in-plane"),
        ((1, 30, 40), "a single slice (Z = 1) is a 2D image"),
    ],
)
def test_scan_too_thin_says_which_size_is_wrong(tmp_path, shape_zyx, needle):
    path = write_volume(Volume(np.zeros(shape_zyx, np.int16), SPACING), tmp_path / "thin.nii.gz")
    before = sha(path)
    proc, seconds = _child("info", path)
    _one_line_error(proc, str(path), needle)
    assert seconds < TIMEOUT and sha(path) == before
