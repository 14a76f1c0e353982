"""Model directories: ``manifest.json`` + ``weights.safetensors``; never pickles.

A model directory holds exactly what is needed to rebuild and run a specialist::

    DIR/manifest.json          architecture name + constructor kwargs, labels, modality, preprocessing,
                               inference settings, created, parent version, sha256 of the weights,
                               training summary and metrics, format_version
    DIR/weights.safetensors    the state dict (safetensors: a JSON header + raw tensors, no code)

:func:`save_model` writes both into a temporary folder beside ``DIR`` and renames it into place, so a
reader never sees half a model. :func:`load_model` verifies the folder first (:func:`verify_model_dir`):
files present, format version known, weights really safetensors (a pickle/zip from ``torch.save`` is
refused before anything is deserialised) and their sha256 equal to the manifest's. The ``inference``
settings are checked by type and range (:func:`check_inference`: window sides a multiple of the
network's downsampling factor, overlap and batch bounded) when a built-in architecture's manifest is
read, and for any architecture once its network is built.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from semisam.fileio import fsync_dir, fsync_file, sha256_file, tmp_name

if TYPE_CHECKING:  # torch is imported only to save or load weights: reading/verifying a manifest
    import torch  # (the store, the Slicer Train module) must not pay its multi-second import

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.safetensors"
FORMAT_VERSION = 1
#: Weight files that are pickles (or zip archives of pickles) and therefore never loaded.
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")

#: Default preprocessing, in (i, j, k) order for spacing. 0.8 x 0.8 x 1.5 mm is close to the native
#: in-plane spacing of clinical CT (0.6-0.9 mm), so small lesions keep their shape, while 1.5 mm slices
#: bound the work for thin-slice scans; both specialists share it (the benchmark states it).
DEFAULT_TARGET_SPACING = (0.8, 0.8, 1.5)
DEFAULT_ORIENTATION = "LPS"
DEFAULT_CT_WINDOW = (-1000.0, 1000.0)
DEFAULT_MR_PERCENTILES = (0.5, 99.5)


#: Sliding-window bounds of a manifest's ``inference`` block (schemas/manifest.json states the same
#: numbers; a test keeps them equal). A window side is ``-1`` (the whole axis) or a multiple of the
#: network's downsampling factor of at least ``max(MIN_ROI_VOXELS, 2 x factor)``: below two bottleneck
#: voxels per axis MONAI's 3D U-Net fails (instance norm over one voxel) and the 2.5D network sees one
#: token; below 16 voxels (13 mm at 0.8 mm) a window holds no context, while the number of windows grows
#: as 1 / side^dims (``roi_size [1, 1]`` on a 128 x 128 x 20 crop ran past 60 s, against 5 s for the
#: whole slice).
MIN_ROI_VOXELS = 16
#: Largest window side (voxels of the model grid): the largest slice a resampling may produce is
#: 4096 x 4096 (:data:`semisam.scan.checks.MAX_SLICE_PIXELS`); a larger window is padding only.
MAX_ROI_VOXELS = 4096
#: Largest overlap of neighbouring windows. MONAI's default is 0.25 and nnU-Net's 0.5; at 0.75 a 3D
#: voxel is computed 4^3 = 64 times, and the cost grows as 1 / (1 - overlap)^dims beyond (x1000 at 0.9;
#: ``roi_size [16, 16]`` with overlap 0.99 ran past 100 s on a 128 x 128 x 20 crop).
MAX_OVERLAP = 0.75
#: Largest number of windows per network call. The defaults are 16 slices (2.5D) and one 128^3 window
#: (3D); past a few dozen windows a GPU is saturated and a bigger batch only multiplies peak memory
#: (4096 windows of 4096 x 4096 asked for 13.5 GB). The memory a batch needs is also checked against
#: the machine's before any compute (:mod:`semisam.budget`).
MAX_SW_BATCH_SIZE = 256
#: Input kind -> axes of a sliding window, in the model grid's array order (Z = slices, Y = rows, X = columns).
WINDOW_AXES = {"2.5d": ("rows", "columns"), "3d": ("slices", "rows", "columns")}


class CheckpointError(ValueError):
    """A model directory is missing, malformed, tampered with or unsafe; the message names the file."""


@dataclass
class ModelManifest:
    """Everything about a specialist except its weights (the content of ``manifest.json``).

    Attributes:
        arch: registered architecture name (:data:`semisam.specialists.SPECIALIST_REGISTRY`).
        kwargs: constructor keyword arguments for ``build_specialist(arch, **kwargs)``.
        labels: label name -> label value written in output masks (values 1..255, class i+1 in order).
        modality: ``"CT"`` or ``"MR"`` (drives the intensity normalisation).
        preprocessing: ``{"target_spacing": [si, sj, sk] mm, "orientation": "LPS",
            "intensity": {"mode": "ct", "window": [lo, hi]} | {"mode": "percentile", "lower": p, "upper": q}}``.
        created: ISO-8601 UTC time of creation.
        parent: version/name of the model this one was trained from, or ``None``.
        sha256: hex digest of ``weights.safetensors`` (filled in by :func:`save_model`).
        training: summary of how it was trained (method, cases, epochs...); ``{}`` when untrained.
        metrics: validation metrics (e.g. ``{"dice": 0.8}``); ``{}`` when untrained.
        format_version: version of this directory format.
        inference: sliding-window settings ``{"roi_size": [...], "overlap": f, "sw_batch_size": n,
            "mode": "constant"|"gaussian"}`` and post-processing ``{"min_component_voxels": n}``;
            ``roi_size`` in model-grid voxels, ``[rows, columns]`` (2.5D) or ``[slices, rows, columns]``
            (3D), bounded by :func:`check_inference`.
    """

    arch: str
    kwargs: dict[str, Any]
    labels: dict[str, int]
    modality: str
    preprocessing: dict[str, Any]
    created: str = ""
    parent: str | None = None
    sha256: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    inference: dict[str, Any] = field(default_factory=dict)
    #: Where this manifest was read from (:func:`read_manifest` sets it), for messages that name the
    #: file; a class variable, not a field, so it is never written to ``manifest.json``.
    source: ClassVar[str] = MANIFEST_NAME

    @property
    def n_classes(self) -> int:
        """Background + one class per label."""
        return 1 + len(self.labels)

    def class_values(self) -> list[int]:
        """Label value written for each class index (index 0 = background = 0)."""
        return [0] + [int(v) for v in self.labels.values()]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False)


def default_preprocessing(modality: str, target_spacing=DEFAULT_TARGET_SPACING) -> dict[str, Any]:
    """Preprocessing block for a new model of ``modality`` (``CT``: window clip; else percentiles)."""
    if modality.upper() == "CT":
        intensity = {"mode": "ct", "window": list(DEFAULT_CT_WINDOW)}
    else:
        intensity = {
            "mode": "percentile",
            "lower": DEFAULT_MR_PERCENTILES[0],
            "upper": DEFAULT_MR_PERCENTILES[1],
        }
    return {
        "target_spacing": [float(s) for s in target_spacing],
        "orientation": DEFAULT_ORIENTATION,
        "intensity": intensity,
    }


def new_manifest(
    arch: str,
    labels: dict[str, int] | list[str],
    modality: str,
    kwargs: dict[str, Any] | None = None,
    target_spacing=DEFAULT_TARGET_SPACING,
    parent: str | None = None,
) -> ModelManifest:
    """Manifest of a new, untrained model; ``labels`` as names (values 1, 2, ...) or ``{name: value}``."""
    if isinstance(labels, list | tuple):
        labels = {name: i + 1 for i, name in enumerate(labels)}
    kw = dict(kwargs or {})
    kw["n_classes"] = 1 + len(labels)
    man = ModelManifest(
        arch=arch,
        kwargs=kw,
        labels=dict(labels),
        modality=modality.upper(),
        preprocessing=default_preprocessing(modality, target_spacing),
        created=_now(),
        parent=parent,
    )
    _validate(man, "new manifest")
    return man


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


# ------------------------------------------------------------------------------------------- reading


def read_manifest(model_dir: str | os.PathLike) -> ModelManifest:
    """Parse and check ``DIR/manifest.json`` (does not touch the weights).

    Raises:
        CheckpointError: missing folder/file, invalid JSON, missing or ill-typed fields.
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise CheckpointError(f"{d}: model directory does not exist")
    path = d / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a model directory needs {MANIFEST_NAME} and {WEIGHTS_NAME}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}") from exc
    from semisam.json_schema import validate

    if (
        isinstance(data, dict)
        and isinstance(data.get("kwargs"), dict)
        and isinstance(data.get("inference"), dict)
    ):
        # Window axes first: "a 2.5d network slides 2D windows" says more than a range error on the
        # third entry of roi_size [1, 1, 1].
        geometry = arch_geometry(str(data.get("arch")), data["kwargs"])
        if geometry is not None:
            _check_roi_axes(data["inference"].get("roi_size"), geometry[0], path)
    # Types and value ranges (spacing, window, overlap, ROI size...) come from schemas/manifest.json: the
    # sha256 covers the weights, not this hand-editable file.
    validate("manifest", data, path, error=CheckpointError)
    known = {f.name for f in dataclasses.fields(ModelManifest)}
    unknown = sorted(set(data) - known)
    if unknown:
        log.warning("%s: ignoring unknown field(s) %s", path, ", ".join(unknown))
    man = ModelManifest(**{k: v for k, v in data.items() if k in known})
    _validate(man, str(path))
    man.source = str(path)
    return man


def _validate(man: ModelManifest, where: str) -> None:
    def bad(msg: str) -> CheckpointError:
        return CheckpointError(f"{where}: {msg}")

    from semisam.json_schema import validate

    # The same schema as a manifest read from disk: a model is never saved with values it cannot load.
    validate("manifest", dataclasses.asdict(man), where, error=CheckpointError)

    if (
        not isinstance(man.format_version, int)
        or man.format_version > FORMAT_VERSION
        or man.format_version < 1
    ):
        raise bad(
            f"format_version {man.format_version!r} is not supported (this build reads 1..{FORMAT_VERSION})"
        )
    if not isinstance(man.arch, str) or not man.arch:
        raise bad("arch must be a non-empty string")
    if not isinstance(man.kwargs, dict):
        raise bad("kwargs must be an object")
    if not isinstance(man.labels, dict) or not man.labels:
        raise bad("labels must be a non-empty object {name: value}")
    values = list(man.labels.values())
    if not all(isinstance(v, int) and 1 <= v <= 255 for v in values) or len(set(values)) != len(values):
        raise bad(f"label values must be distinct integers 1..255, got {values}")
    n_classes = man.kwargs.get("n_classes", man.n_classes)
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes != man.n_classes:
        raise bad(
            f"kwargs.n_classes={man.kwargs.get('n_classes')} but there are {len(values)} label(s) + background"
        )
    if not isinstance(man.modality, str) or not man.modality:
        raise bad("modality must be a string such as 'CT' or 'MR'")
    pre = man.preprocessing
    if not isinstance(pre, dict):
        raise bad("preprocessing must be an object")
    ts = pre.get("target_spacing")
    if not (
        isinstance(ts, list | tuple)
        and len(ts) == 3
        and all(isinstance(s, int | float) and s > 0 for s in ts)
    ):
        raise bad(f"preprocessing.target_spacing must be three positive numbers (mm), got {ts!r}")
    orient = pre.get("orientation", DEFAULT_ORIENTATION)
    if not (isinstance(orient, str) and len(orient) == 3 and {c for c in orient.upper()} <= set("RLAPSI")):
        raise bad(f"preprocessing.orientation must be a 3-letter code such as 'LPS', got {orient!r}")
    intensity = pre.get("intensity")
    mode = intensity.get("mode") if isinstance(intensity, dict) else None
    if mode not in ("ct", "percentile"):
        raise bad(f"preprocessing.intensity.mode must be 'ct' or 'percentile', got {mode!r}")
    lo_hi = (
        intensity.get("window", DEFAULT_CT_WINDOW)
        if mode == "ct"
        else (
            intensity.get("lower", DEFAULT_MR_PERCENTILES[0]),
            intensity.get("upper", DEFAULT_MR_PERCENTILES[1]),
        )
    )
    if not (
        isinstance(lo_hi, list | tuple)
        and len(lo_hi) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in lo_hi)
        and lo_hi[0] < lo_hi[1]
    ):
        what = "window" if mode == "ct" else "lower/upper"
        raise bad(f"preprocessing.intensity.{what} must be two numbers, low < high, got {list(lo_hi)!r}")
    if man.inference is not None and not isinstance(man.inference, dict):
        raise bad(f"inference must be an object, got {type(man.inference).__name__}")
    geometry = arch_geometry(man.arch, man.kwargs)
    if geometry is not None:  # other architectures are checked once built (load_model, segment)
        check_inference(man.inference or {}, *geometry, where)


def arch_geometry(arch: str, kwargs: dict[str, Any]) -> tuple[str, int] | None:
    """``(input kind, downsampling factor)`` of a built-in architecture, without importing torch.

    The factor is what every window side must be a multiple of: ``mamba_unet`` halves a slice 5 times
    (32); ``unet3d`` and ``unet2d`` by the product of their ``strides`` (16 by default). ``None`` for other architectures
    (their module's ``input_kind`` and ``pad_multiple`` attributes say it once built). A test checks both
    agree with the built networks.
    """
    if arch == "mamba_unet":
        return "2.5d", 32
    if arch in ("unet3d", "unet2d"):
        kind = "3d" if arch == "unet3d" else "2.5d"
        strides = kwargs.get("strides", (2, 2, 2, 2))
        channels = kwargs.get(
            "channels", (16, 32, 64, 128, 256) if arch == "unet3d" else (16, 32, 64, 128, 128)
        )
        if not (
            isinstance(strides, list | tuple)
            and isinstance(channels, list | tuple)
            and all(_is_int(s) and s >= 1 for s in strides)
        ):
            return kind, 16  # the constructor refuses such values with its own message
        # MONAI's UNet uses the first len(channels) - 1 strides, one per downsampling level.
        return kind, max(1, math.prod(strides[: max(0, len(channels) - 1)]))
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def network_multiple(model: Any) -> int:
    """What a built specialist's window sides must be a multiple of: its ``pad_multiple`` (1 if none)."""
    m = getattr(model, "pad_multiple", 1)
    return int(m) if _is_int(m) and m >= 1 else 1


def min_roi_voxels(multiple: int) -> int:
    """Smallest window side (voxels) for a network whose downsampling factor is ``multiple``."""
    m = max(1, int(multiple))
    return -(-max(MIN_ROI_VOXELS, 2 * m) // m) * m


def _check_roi_axes(roi: Any, kind: str, where: str | os.PathLike) -> None:
    axes = WINDOW_AXES.get(kind, ())
    if isinstance(roi, list | tuple) and axes and len(roi) != len(axes):
        raise CheckpointError(
            f"{where}: inference.roi_size: a {kind} network slides {len(axes)}D windows ({', '.join(axes)}): "
            f"expected {len(axes)} entries, got {len(roi)} ({_short_list(roi)})"
        )


def _short_list(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def check_inference(inference: dict[str, Any], kind: str, multiple: int, where: str | os.PathLike) -> None:
    """Refuse sliding-window settings a network of ``kind`` (``"2.5d"`` / ``"3d"``) cannot run, or
    cannot run in bounded time (types and plain ranges are the schema's).

    Checks: ``roi_size`` has one entry per window axis (2 for 2.5D: rows, columns; 3 for 3D: slices,
    rows, columns), each ``-1`` or a multiple of ``multiple`` within
    ``min_roi_voxels(multiple)..MAX_ROI_VOXELS``; ``overlap`` in ``0..MAX_OVERLAP``; ``sw_batch_size`` in
    ``1..MAX_SW_BATCH_SIZE``.

    Raises:
        CheckpointError: ``"<where>: inference.<field>: <problem>"``.
    """

    def bad(field_name: str, msg: str) -> CheckpointError:
        return CheckpointError(f"{where}: inference.{field_name}: {msg}")

    if not isinstance(inference, dict):
        raise CheckpointError(f"{where}: inference: expected an object, got {type(inference).__name__}")
    axes = WINDOW_AXES.get(kind)
    if axes is None:
        raise CheckpointError(
            f"{where}: the network's input_kind must be one of {sorted(WINDOW_AXES)}, got {kind!r}"
        )
    roi = inference.get("roi_size")
    if roi is not None:
        if not isinstance(roi, list | tuple) or not all(_is_int(r) for r in roi):
            raise bad("roi_size", f"expected a list of integers, got {_short_list(roi)}")
        _check_roi_axes(roi, kind, where)
        lo = min_roi_voxels(multiple)
        for i, r in enumerate(roi):
            if r != -1 and not (lo <= r <= MAX_ROI_VOXELS and r % max(1, multiple) == 0):
                raise bad(
                    f"roi_size[{i}]",
                    f"expected -1 (the whole axis) or a multiple of {multiple} (the network's downsampling "
                    f"factor) from {lo} to {MAX_ROI_VOXELS} voxels, got {r}",
                )
    overlap = inference.get("overlap")
    if overlap is not None and not (
        isinstance(overlap, int | float) and not isinstance(overlap, bool) and 0 <= overlap <= MAX_OVERLAP
    ):
        raise bad("overlap", f"expected a number in 0..{MAX_OVERLAP}, got {overlap!r}")
    batch = inference.get("sw_batch_size")
    if batch is not None and not (_is_int(batch) and 1 <= batch <= MAX_SW_BATCH_SIZE):
        raise bad("sw_batch_size", f"expected an integer 1..{MAX_SW_BATCH_SIZE}, got {batch!r}")


#: Architectures of :data:`semisam.specialists.SPECIALIST_REGISTRY` known without importing torch
#: (a test checks both agree); any other name is looked up in the registry itself.
BUILTIN_ARCHS = ("mamba_unet", "unet3d", "unet2d")


def check_arch_known(arch: str, where: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``arch`` is a registered specialist architecture."""
    if arch in BUILTIN_ARCHS:
        return
    from semisam.specialists import SPECIALIST_REGISTRY

    if arch not in SPECIALIST_REGISTRY:
        raise CheckpointError(
            f"{where}: arch: unknown specialist architecture {arch!r}; choose one of {sorted(SPECIALIST_REGISTRY)}"
        )


def _check_safetensors(path: Path) -> None:
    """Refuse anything that is not a safetensors file, without deserialising it."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if head[:2] == b"PK" or head[:1] == b"\x80":
            raise CheckpointError(
                f"{path}: is a pickle (torch.save output), not safetensors; pickles can run code and are "
                "refused. Convert it with safetensors.torch.save_file(state_dict, ...)"
            )
        if len(head) < 8:
            raise CheckpointError(f"{path}: too short to be a safetensors file ({size} bytes)")
        n = struct.unpack("<Q", head)[0]
        if n <= 1 or 8 + n > size:
            raise CheckpointError(f"{path}: not a safetensors file (bad header length {n})")
        first = fh.read(1)
        if first != b"{":
            raise CheckpointError(f"{path}: not a safetensors file (header is not JSON)")


def verify_model_dir(model_dir: str | os.PathLike) -> ModelManifest:
    """Check a model directory completely and return its manifest.

    Checks: manifest valid (:func:`read_manifest`); ``weights.safetensors`` present, a real safetensors
    file (pickles refused), sha256 equal to the manifest's; no pickled weight files beside it.

    Raises:
        CheckpointError: the first problem found, naming the file.
    """
    d = Path(model_dir)
    man = read_manifest(d)
    weights = d / WEIGHTS_NAME
    if not weights.is_file():
        pickles = sorted(p.name for p in d.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        hint = f" (found {', '.join(pickles)}: pickled weights are refused)" if pickles else ""
        raise CheckpointError(f"{weights}: missing{hint}")
    _check_safetensors(weights)
    if not man.sha256:
        raise CheckpointError(f"{d / MANIFEST_NAME}: no sha256 recorded for {WEIGHTS_NAME}")
    actual = sha256_file(weights)
    if actual != man.sha256:
        raise CheckpointError(
            f"{weights}: sha256 {actual[:16]}... does not match the manifest's {man.sha256[:16]}...; "
            "the weights were modified or corrupted after saving"
        )
    return man


# -------------------------------------------------------------------------------------- save / load
def save_model(
    model_dir: str | os.PathLike, model: torch.nn.Module, manifest: ModelManifest, overwrite: bool = False
) -> ModelManifest:
    """Write ``model``'s weights and ``manifest`` as a model directory, atomically.

    Both files go into a temporary folder beside ``model_dir`` which is then renamed into place; with
    ``overwrite`` an existing directory is replaced (moved aside first, deleted after the swap).
    Returns the manifest as saved (``sha256`` and ``created`` filled in).

    Raises:
        CheckpointError: ``model_dir`` exists and ``overwrite`` is false; or the manifest is invalid.
    """
    dest = Path(model_dir)
    if dest.exists() and not overwrite:
        raise CheckpointError(f"{dest}: already exists; choose a new folder (or pass overwrite=True)")
    _validate(manifest, "manifest to save")
    from safetensors.torch import save_file

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(dest.parent, dest.name)
    tmp.mkdir()
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"arch": manifest.arch})
        saved = dataclasses.replace(
            manifest, sha256=sha256_file(tmp / WEIGHTS_NAME), created=manifest.created or _now()
        )
        (tmp / MANIFEST_NAME).write_text(saved.to_json() + "\n", encoding="utf-8")
        for f in (tmp / WEIGHTS_NAME, tmp / MANIFEST_NAME):
            fsync_file(f)
        fsync_dir(tmp)
        old = None
        if dest.exists():
            # Moved aside under a leftover name the store's clean-up recognises; put back on failure.
            old = tmp_name(dest.parent, f"{dest.name}.old")
            os.replace(dest, old)
        try:
            os.replace(tmp, dest)
        except BaseException:
            if old is not None:
                os.replace(old, dest)
            raise
        fsync_dir(dest.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved %s model to %s (sha256 %s)", saved.arch, dest, saved.sha256[:12])
    return saved


def load_model(
    model_dir: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, ModelManifest]:
    """Verify ``model_dir`` and return ``(model in eval mode on device, manifest)``.

    Raises:
        CheckpointError: verification failed, or the weights do not fit the architecture.
    """
    import torch
    from safetensors.torch import load_file

    from semisam.specialists import build_specialist

    man = verify_model_dir(model_dir)
    try:
        model = build_specialist(man.arch, **man.kwargs)
    except (ValueError, TypeError, RuntimeError, KeyError, IndexError, ZeroDivisionError) as exc:
        # TypeError: kwargs the constructor does not take; the others: values it cannot build from
        raise CheckpointError(f"{Path(model_dir) / MANIFEST_NAME}: {exc}") from exc
    # Architectures registered beside the built-in ones are checked here, from what the network says.
    check_inference(
        man.inference or {}, getattr(model, "input_kind", "3d"), network_multiple(model), man.source
    )
    weights = Path(model_dir) / WEIGHTS_NAME
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise CheckpointError(f"{weights}: cannot be read as safetensors: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: weights do not fit {man.arch} {man.kwargs}: {exc}") from exc
    return model.to(torch.device(device)).eval(), man
