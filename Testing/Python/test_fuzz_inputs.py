"""Property-based fuzzing of every JSON file kind the product reads and of image headers.

Each example mutates one valid file (a value replaced by a hostile one, a key deleted or added, the
whole document replaced, the text truncated or garbled), runs the command that reads it in-process
(``semisam.cli.main``) and asserts the contract for bad input: exit 0 (the mutation happened to be
valid) or exit 1 with exactly one ``error:`` line, never a traceback, and every input byte-identical
afterwards (sha256 before/after). A few real child processes check the same from the outside.

A model manifest's ``inference`` values are fuzzed through a real ``semisam segment`` run of real tiny
models, each example under a time bound (``EXAMPLE_SECONDS``, a SIGALRM that no error handling can
swallow, and hypothesis' deadline), so a setting that makes the sliding window hang fails the test.

Profile ``semisam-fuzz``: derandomized (the same examples on every run, so CI is stable), no example
database, no deadline (but for the segment runs). Example counts per property are in ``EXAMPLES``; the
whole file takes about 30 s on a 2-core machine. ``SEMISAM_FUZZ_EXAMPLES=N`` scales every count (e.g. 8 for a long hunt);
``SEMISAM_FUZZ_DUMP=FILE`` writes each image file tried to FILE first, so one that crashes a reader
(an ITK segfault kills pytest too) can be named.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from robust_helpers import make_store, run_cli, sha, small_scan, tree_digest

from semisam import model_folder as mf
from semisam.json_schema import SchemaError, validate
from semisam.store import LabeledStore

_SCALE = float(os.environ.get("SEMISAM_FUZZ_EXAMPLES", "1"))
#: Examples per property (times SEMISAM_FUZZ_EXAMPLES).
EXAMPLES = {
    "manifest": 60,
    "manifest_inference": 60,  # each a real segment run of a tiny model on a 12 x 64 x 64 scan
    "store_json": 40,  # per store file kind (5 kinds)
    "prompts": 40,
    "dataset": 20,
    "schema_only": 60,  # per kind (3 kinds)
    "nifti_header": 60,
    "text_header": 50,  # per format (NRRD, MHA)
}

settings.register_profile(
    "semisam-fuzz",
    # SEMISAM_FUZZ_RANDOM=1: fresh random examples (a hunt); the default suite always runs the same ones.
    derandomize=not os.environ.get("SEMISAM_FUZZ_RANDOM"),
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _settings(name: str):
    return settings(settings.get_profile("semisam-fuzz"), max_examples=max(1, int(EXAMPLES[name] * _SCALE)))


#: Seconds one ``segment`` example may run before it counts as a hang: a run here takes < 1 s; before
#: the bounds, ``roi_size [1, 1]`` on a 128 x 128 x 20 crop ran past 60 s.
EXAMPLE_SECONDS = 30


class ExampleTimeout(BaseException):
    """An example ran past :data:`EXAMPLE_SECONDS` (a BaseException: the CLI's handling of bad input
    must not turn a hang into an ordinary error line)."""


@contextlib.contextmanager
def time_bound(seconds: float):
    """Raise :class:`ExampleTimeout` in the main thread once ``seconds`` have passed (SIGALRM)."""

    def fire(signum, frame):
        raise ExampleTimeout(f"the example ran past {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------------------ strategies
HOSTILE = st.sampled_from(
    [None, True, False, 0, -1, 1, 2**63, -(2**63), 10**30, 1e-300, 1e308, float("nan"), float("inf"),
     -float("inf"), 0.5, "", "abc", "../../etc/passwd", "/abs/path", "v0001", "x" * 300, [], {}, [0],
     [1, 2, 3], {"a": 1}, [[]], "NaN", "1"]
)  # fmt: skip
LEAVES = st.one_of(
    HOSTILE,
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
JSON_VALUES = st.recursive(
    LEAVES,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=6,
)


def _paths(doc, prefix=()):
    """Every key path into a JSON document (dict keys and list indices)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _set_path(doc, path, value, delete=False):
    if not path:
        return value
    target = doc
    for k in path[:-1]:
        target = target[k]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@st.composite
def mutated_json(draw, doc) -> bytes:
    """``doc`` (a valid document) with one hostile mutation, as the bytes a file would hold."""
    how = draw(st.sampled_from(["replace"] * 5 + ["delete", "add", "whole", "truncate", "garble"]))
    text = json.dumps(doc)
    if how == "truncate":
        return text.encode()[: draw(st.integers(0, max(0, len(text) - 1)))]
    if how == "garble":
        raw = bytearray(text.encode())
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw)
    doc = json.loads(text)
    if how == "whole":
        doc = draw(JSON_VALUES)
    else:
        paths = _paths(doc)[1:] or [()]
        path = draw(st.sampled_from(paths))
        if how == "delete" and path:
            doc = _set_path(doc, path, None, delete=True)
        elif how == "add":
            parent = path[:-1]
            target = doc
            for k in parent:
                target = target[k]
            if isinstance(target, dict):
                target[draw(st.text(min_size=1, max_size=8))] = draw(JSON_VALUES)
            else:
                doc = _set_path(doc, path, draw(JSON_VALUES))
        else:
            doc = _set_path(doc, path, draw(JSON_VALUES))
    return json.dumps(doc).encode()


def _check_contract(code: int, out: str, err: str, *, allow_problems: bool = False) -> None:
    """Exit 0 or 1; on 1 exactly one ``error:`` line (``store check`` prints problems instead)."""
    assert code in (0, 1), (code, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    if code == 1 and not allow_problems:
        lines = [ln for ln in err.splitlines() if "error:" in ln]
        assert len(lines) == 1, err
        assert len(lines[0]) < 2000, lines[0]


def _dump(path: Path) -> None:
    if os.environ.get("SEMISAM_FUZZ_DUMP"):
        shutil.copyfile(path, os.environ["SEMISAM_FUZZ_DUMP"])


# -------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def store_template(work):
    root = make_store(work / "store", work, n_cases=2)
    LabeledStore(root).add_unlabeled(small_scan(work, "unl.nii.gz"), scan_id="scan_0001")
    return root


@pytest.fixture(scope="module")
def model_template(work):
    """A model folder whose manifest is real; the weights are a tiny safetensors file (verify only)."""
    from safetensors.numpy import save_file

    d = work / "model"
    d.mkdir()
    save_file({"w": np.zeros(4, np.float32)}, str(d / mf.WEIGHTS_NAME))
    man = mf.new_manifest("mamba_unet", ["lesion"], "CT")
    man.sha256 = mf.sha256_file(d / mf.WEIGHTS_NAME)
    man.inference = {"roi_size": [-1, -1], "overlap": 0.25, "sw_batch_size": 4, "mode": "gaussian"}
    (d / mf.MANIFEST_NAME).write_text(man.to_json())
    return d


# ---------------------------------------------------------------------------------------- JSON kinds
def test_fuzz_manifest(model_template, tmp_path, capsys):
    d = tmp_path / "model"
    shutil.copytree(model_template, d)
    valid = json.loads((d / mf.MANIFEST_NAME).read_text())

    @_settings("manifest")
    @given(data=mutated_json(valid))
    def prop(data):
        (d / mf.MANIFEST_NAME).write_bytes(data)
        before = tree_digest(d)
        code, out, err = run_cli(capsys, ["model", "verify", d])
        _check_contract(code, out, err)
        if code == 1:  # the file named: the manifest, or the weights its sha256 no longer matches
            assert "manifest.json" in err or "weights.safetensors" in err, err
        assert tree_digest(d) == before

    prop()


ROI_SIDES = st.one_of(
    st.sampled_from([-2, -1, 0, 1, 15, 16, 17, 31, 32, 48, 64, 96, 128, 4096, 4097, 2**31]),
    st.integers(-3, 5000),
)
#: Hostile ``inference`` blocks: each key present or not, each value near a bound, off it, or absurd.
INFERENCE_BLOCKS = st.fixed_dictionaries(
    {},
    optional={
        "roi_size": st.one_of(
            st.lists(ROI_SIDES, min_size=2, max_size=3), st.lists(ROI_SIDES, max_size=5), HOSTILE
        ),
        "overlap": st.one_of(
            st.sampled_from([0, 0.25, 0.5, 0.75, 0.7500001, 0.9, 0.99, 1, -0.1]), st.floats(-1, 2), HOSTILE
        ),
        "sw_batch_size": st.one_of(
            st.sampled_from([1, 2, 16, 256, 257, 4096]), st.integers(-2, 5000), HOSTILE
        ),
        "mode": st.one_of(st.sampled_from(["constant", "gaussian"]), HOSTILE),
        "min_component_voxels": st.one_of(st.integers(-2, 10**6), HOSTILE),
    },
)

#: Blocks within or at the schema's ranges, so that examples reach the work estimate and the sliding
#: window itself (hostile blocks alone mostly stop at the schema).
PLAUSIBLE_BLOCKS = st.fixed_dictionaries(
    {},
    optional={
        "roi_size": st.lists(
            st.sampled_from([-1, 16, 32, 48, 64, 96, 128, 256, 4096]), min_size=2, max_size=3
        ),
        "overlap": st.one_of(st.sampled_from([0.0, 0.75]), st.floats(0, 0.75)),
        "sw_batch_size": st.one_of(st.sampled_from([1, 256]), st.integers(1, 256)),
        "mode": st.sampled_from(["constant", "gaussian"]),
        "min_component_voxels": st.integers(0, 5000),
    },
)


@pytest.fixture(scope="module")
def specialists(work):
    """Real tiny model folders (2.5D ``mamba_unet``, 3D ``unet3d``) working at 1 x 1 x 2 mm."""
    from semisam.specialists import build_specialist

    out = {}
    for arch, kwargs in (
        ("mamba_unet", {"channels": [8, 16, 16, 32, 32]}),
        ("unet3d", {"channels": [4, 8, 8, 8, 8]}),
    ):
        man = mf.new_manifest(arch, ["lesion"], "CT", kwargs=kwargs, target_spacing=(1, 1, 2))
        mf.save_model(work / f"specialist-{arch}", build_specialist(man.arch, **man.kwargs), man)
        out[arch] = work / f"specialist-{arch}"
    return out


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="the per-example time bound needs SIGALRM")
def test_fuzz_manifest_inference(specialists, tmp_path, capsys):
    """``segment`` with hostile sliding-window values: exit 0 with a mask on the scan's grid, or exit 1
    with one line naming manifest.json (or the scan), each example within EXAMPLE_SECONDS."""
    from semisam.scan.volume import Volume, read_mask, read_volume, write_volume

    a = np.full((12, 64, 64), -800, np.int16)
    a[3:9, 16:48, 16:48] = 40
    scan = write_volume(Volume(a, (1.0, 1.0, 2.0)), tmp_path / "scan.nii.gz")
    reference = read_volume(scan)
    d, out = tmp_path / "model", tmp_path / "mask.nii.gz"

    @settings(_settings("manifest_inference"), deadline=datetime.timedelta(seconds=EXAMPLE_SECONDS))
    @given(
        arch=st.sampled_from(sorted(specialists)),
        inference=st.one_of(PLAUSIBLE_BLOCKS, PLAUSIBLE_BLOCKS, INFERENCE_BLOCKS, HOSTILE),
    )
    def prop(arch, inference):
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(specialists[arch], d)
        data = json.loads((d / mf.MANIFEST_NAME).read_text())
        data["inference"] = inference
        (d / mf.MANIFEST_NAME).write_text(json.dumps(data))
        out.unlink(missing_ok=True)
        before = tree_digest(d), sha(scan)
        argv = ["segment", scan, "--model", d, "--output", out, "--device", "cpu", "--no-progress"]
        with time_bound(EXAMPLE_SECONDS):
            code, stdout, err = run_cli(capsys, argv)
        _check_contract(code, stdout, err)
        if code == 1:
            assert "manifest.json" in err or "scan.nii.gz" in err, err
            assert not out.exists()
        else:
            assert read_mask(out, reference=reference).array.shape == reference.shape
        assert (tree_digest(d), sha(scan)) == before

    prop()


STORE_FILES = {
    "case.json": "cases/case_0001/case.json",
    "semisam_store.json": "semisam_store.json",
    "scan.json": "unlabeled/scan_0001/scan.json",
    "registry.json": "models/versions/v0001/registry.json",
    "active.json": "models/active.json",
}


@pytest.mark.parametrize("kind", sorted(STORE_FILES))
def test_fuzz_store_files(store_template, tmp_path, capsys, kind):
    root = shutil.copytree(store_template, tmp_path / "store", symlinks=True)
    rel = STORE_FILES[kind]
    valid = json.loads((root / rel).read_text())

    @_settings("store_json")
    @given(data=mutated_json(valid), command=st.sampled_from(["list", "check", "export"]))
    def prop(data, command):
        (root / rel).write_bytes(data)
        before = tree_digest(root)
        dest = tmp_path / "exported"
        shutil.rmtree(dest, ignore_errors=True)
        argv = ["store", command, root] + ([dest] if command == "export" else [])
        code, out, err = run_cli(capsys, argv)
        _check_contract(code, out, err, allow_problems=command == "check")
        if code == 1 and command == "export":
            assert not dest.exists()
        assert tree_digest(root) == before

    prop()


def test_fuzz_prompts(work, tmp_path, capsys):
    scan = small_scan(tmp_path)
    prompts = tmp_path / "p.json"
    valid = {
        "axis": "axial",
        "prompts": [{"slice": 3, "box": [4, 4, 11, 11]}, {"slice": 4, "point": [6, 6], "positive": False}],
    }

    @_settings("prompts")
    @given(data=mutated_json(valid))
    def prop(data):
        prompts.write_bytes(data)
        before = sha(scan), sha(prompts)
        # "sam" without a checkpoint fails fast after the prompts were accepted: no model runs.
        argv = ["propagate", scan, "--prompts", prompts, "--output", tmp_path / "m.nii.gz", "--model", "sam"]
        code, out, err = run_cli(capsys, argv)
        _check_contract(code, out, err)
        assert code == 1 and not (tmp_path / "m.nii.gz").exists()
        assert (sha(scan), sha(prompts)) == before

    prop()


def test_fuzz_dataset_json(store_template, tmp_path, capsys):
    src = tmp_path / "msd"
    code, _, err = run_cli(capsys, ["store", "export", store_template, src, "--layout", "msd"])
    assert code == 0, err
    valid = json.loads((src / "dataset.json").read_text())
    counter = iter(range(10**6))

    @_settings("dataset")
    @given(data=mutated_json(valid))
    def prop(data):
        (src / "dataset.json").write_bytes(data)
        before = tree_digest(src)
        dest = tmp_path / f"imported{next(counter)}"
        code, out, err = run_cli(capsys, ["store", "import", src, dest])
        _check_contract(code, out, err)
        if code == 1:
            assert not dest.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
        assert tree_digest(src) == before

    prop()


@pytest.mark.parametrize(
    "kind, valid",
    [
        (
            "train_config",
            {"method": "semisam_plus", "iterations": 200, "seed": 0, "device": "cpu", "generalists": ["a"],
             "batch_size": 2, "lr": 1e-3},
        ),
        ("checkpoint_meta", {"arch": "mamba_unet", "kwargs": {}, "iteration": 3, "seed": 0, "config": {}}),
        ("splits_final", [{"train": ["a", "b"], "val": ["c"]}]),
    ],
)  # fmt: skip
def test_fuzz_schema_only_kinds(kind, valid):
    """Kinds read by other parts (the training job): validate() passes or raises one SchemaError line."""

    @_settings("schema_only")
    @given(data=mutated_json(valid))
    def prop(data):
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            return
        try:
            validate(kind, doc, f"{kind}.json")
        except SchemaError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(f"{kind}.json: ")

    prop()


# --------------------------------------------------------------------------------------- image headers
@pytest.fixture(scope="module")
def nifti_template(work):
    a = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    path = work / "t.nii"
    sitk.WriteImage(sitk.GetImageFromArray(a), str(path))
    return path.read_bytes()


def test_fuzz_nifti_header(nifti_template, tmp_path, capsys):
    path = tmp_path / "f.nii"
    #: header fields worth hitting: dims, datatype, bitpix, pixdim, vox_offset, scl, qform/sform, magic
    spots = [0, 40, 42, 44, 46, 48, 70, 72, 76, 80, 84, 88, 108, 112, 116, 252, 254, 256, 280, 344]

    @_settings("nifti_header")
    @given(
        edits=st.lists(
            st.tuples(
                st.one_of(st.sampled_from(spots), st.integers(0, 351)),
                st.one_of(
                    st.binary(min_size=1, max_size=4),
                    st.sampled_from(
                        [b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\xff\xff\xff\xff", b"\x00" * 4]
                    ),
                ),
            ),
            min_size=1,
            max_size=3,
        )
    )
    def prop(edits):
        raw = bytearray(nifti_template)
        for pos, value in edits:
            raw[pos : pos + len(value)] = value
        path.write_bytes(bytes(raw))
        _dump(path)
        before = sha(path)
        code, out, err = run_cli(capsys, ["info", path])
        _check_contract(code, out, err)
        if code == 0:
            info = json.loads(out)
            assert all(np.isfinite(info["spacing_mm"])) and all(np.isfinite(info["origin_ras_mm"]))
        assert sha(path) == before

    prop()


HEADER_VALUES = st.one_of(
    st.sampled_from(
        ["0", "-1", "1e6", "1e-300", "nan", "inf", "", "abc", "2 2", "100000 100000 100000", "4 5 6 7",
         "(1,0,0) (1,0,0) (0,0,1)", "(1,0.5,0) (0,1,0) (0,0,1)", "(nan,0,0) (0,1,0) (0,0,1)", "none",
         "double", "uchar", "gzip", "big", "MET_DOUBLE", "MET_UCHAR_ARRAY", "True", "False", "3", "2", "4"]
    ),
    st.text(alphabet="0123456789 .-e(),", max_size=20),
)  # fmt: skip


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_fuzz_text_headers(tmp_path, capsys, suffix):
    a = np.random.default_rng(1).normal(size=(4, 5, 6)).astype(np.float32)
    template = tmp_path / f"t{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(a), str(template), False)
    raw = template.read_bytes()
    sep = b"\n\n" if suffix == ".nrrd" else b"ElementDataFile = LOCAL\n"
    head, _, body = raw.partition(sep)
    lines = head.decode().split("\n")
    fields = [i for i, ln in enumerate(lines) if (":" in ln or "=" in ln) and not ln.startswith("#")]
    path = tmp_path / f"f{suffix}"

    @_settings("text_header")
    @given(edits=st.lists(st.tuples(st.sampled_from(fields), HEADER_VALUES), min_size=1, max_size=3))
    def prop(edits):
        new = list(lines)
        for i, value in edits:
            key, mark, _ = new[i].partition(": " if suffix == ".nrrd" else " = ")
            new[i] = f"{key}{mark}{value}"
        path.write_bytes("\n".join(new).encode() + sep + body)
        _dump(path)
        before = sha(path)
        code, out, err = run_cli(capsys, ["info", path])
        _check_contract(code, out, err)
        assert sha(path) == before

    prop()


# ------------------------------------------------------------------------------ real child processes
def _child(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.run(
        [sys.executable, "-m", "semisam", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_child_processes_give_one_line_and_exit_1(model_template, store_template, tmp_path):
    d = shutil.copytree(model_template, tmp_path / "model")
    (d / mf.MANIFEST_NAME).write_text(
        (d / mf.MANIFEST_NAME).read_text().replace('"mode": "gaussian"', '"mode": "Seems to be OOM"')
    )
    root = shutil.copytree(store_template, tmp_path / "store", symlinks=True)
    (root / "models" / "active.json").write_text("[]")
    nan = tmp_path / "nan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 5, 6), np.nan, np.float32)), str(nan))
    for args, needle in [
        (("model", "verify", d), "inference.mode"),
        (("store", "list", root), "active.json"),
        (("info", nan), "NaN or infinite"),
    ]:
        proc = _child(*args)
        assert proc.returncode == 1, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert "Traceback" not in proc.stderr and len(lines) == 1 and needle in lines[0], proc.stderr


def test_example_counts_are_stated():
    assert Path(__file__).read_text().count("EXAMPLES[") >= 1 and sum(EXAMPLES.values()) > 0
