"""Bounded work: estimate windows, encoder calls and peak memory from a manifest (or prompts) and a
scan's shape, and refuse before any compute when an estimate exceeds a bound or the machine's memory.

* :func:`plan_sliding_window` (``semisam segment``, Auto-segment): the windows MONAI's sliding window
  will run over the model grid, the windows per network call and the peak memory of a batch with the
  accumulators around it. Refused with :class:`~semisam.model_folder.CheckpointError` naming the
  manifest's field (``inference.roi_size``, ``overlap``, ``sw_batch_size``) when the windows exceed
  :data:`MAX_WINDOWS` or the memory the machine (or the GPU) has free; with
  :class:`~semisam.scan.volume.GridTooLargeError` naming the scan when even the smallest settings do not fit.
* :func:`check_propagation` (``semisam propagate``): the encoder calls the prompts can cause along the
  propagation axis and the memory the propagated masks keep; refused with
  :class:`~semisam.prompts.PromptError` naming the scan and the prompts file.

Everything here is arithmetic on shapes: nothing is allocated, no network runs.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from semisam.model_folder import (
    CheckpointError,
    ModelManifest,
    check_inference,
    min_roi_voxels,
    network_multiple,
)
from semisam.prompts import PromptError
from semisam.scan.errors import GridTooLargeError

log = logging.getLogger(__name__)

#: Most windows one segmentation may slide. Each window costs a fixed overhead besides its voxels
#: (MONAI's loop, a forward call): measured 0.4-0.6 ms per 32^2-64^2 window of ``mamba_unet`` (batches
#: of 16) and 11 ms per 32^3 window of ``unet3d``, one thread. The defaults need one window per slice
#: (2.5D: ~1,200 on a whole-body CT at 1.5 mm) or ~640 windows of 128^3 (3D, same scan); 100,000 is
#: 80x that, about a minute of overhead alone for the smallest 2.5D windows. ``roi_size [1, 1]`` on a
#: 128 x 128 x 20 crop asked for 327,680 windows.
MAX_WINDOWS = 100_000
#: Peak bytes a network holds per voxel of the windows of one call (activations, inference mode), as the
#: growth of the process's peak RSS with the default channels, one thread: ``mamba_unet`` 61-63 B per
#: pixel for 2-16 slices of 384^2-1024^2, ``unet3d`` 108-137 B per voxel for 128^3-160^3 windows (up to
#: 350 B on windows of 32 x 64^2 .. 96^3, where fixed buffers of < 250 MiB dominate); x1.5 for margin.
#: Whole ``semisam segment`` runs measured 2-3x below the full estimate (e.g. 0.5 GiB of growth against
#: 1.3 GiB estimated for 64 slices of 256^2), so a refusal is never a near miss.
NETWORK_BYTES_PER_VOXEL = {"2.5d": 96, "3d": 200}
#: First-level width of the measured networks: a manifest whose ``kwargs.channels`` starts wider or
#: narrower scales :data:`NETWORK_BYTES_PER_VOXEL` by the ratio (activations grow with the width), by no
#: less than :data:`MIN_WIDTH_SCALE` (the input, output and skip tensors do not shrink with it).
# (``unet2d`` is not measured: counted as ``mamba_unet``, so its default first width of 16 doubles it.)
MEASURED_FIRST_WIDTH = {"mamba_unet": 8, "unet3d": 16, "unet2d": 8}
#: First-level width of each architecture's default ``channels`` (a manifest without ``channels`` has it).
DEFAULT_FIRST_WIDTH = {"mamba_unet": 8, "unet3d": 16, "unet2d": 16}
MIN_WIDTH_SCALE = 0.25
#: Slices per post-processing chunk in :mod:`semisam.inference.segment` (bounds its temporaries).
POST_CHUNK = 16

#: Most encoder calls one propagation may make (a 2D generalist encodes each slice a track visits; a
#: SAM 2-family model every slice of the axis). The longest axis of a clinical scan is a whole-body CT
#: at 0.5 mm, ~3,600 slices; 8,192 covers one with key slices anywhere (between two key slices more than
#: :data:`CACHED_SLICES` apart, a slice can be encoded twice). A LiteMedSAM encode took 1.16 s on one
#: core of the development machine (onnxruntime), so the bound is already ~2.5 h of encoding; a track
#: usually stops where the structure ends, long before. A 16 x 16 x 10,000-voxel scan prompted on one
#: slice (10,000 calls) is refused at once instead.
MAX_ENCODER_CALLS = 8192
#: Generalists (registry names) that propagate with a memory bank over the whole axis
#: (``propagate_volume``, :mod:`semisam.generalists.sam2_model`): they encode every slice.
VIDEO_GENERALISTS = ("sam2", "medsam2")
#: Bytes a propagation keeps per pixel of each slice a track visits: float32 logits of the slice's
#: :class:`~semisam.propagation.step.SliceResult` plus the float32 windowed slice and bool masks made
#: for the step (a SAM 2-family model stacks every slice as a float32 frame and keeps its logits).
PROPAGATION_BYTES_PER_PIXEL = 12
#: The embedding cache's bound (:class:`semisam.generalists.cache.EmbeddingCache` default), counted in
#: the propagation's memory.
EMBEDDING_CACHE_BYTES = 512 * 2**20
#: Slices that cache holds: a LiteMedSAM or SAM embedding is 256 x 64 x 64 float32 = 4 MiB.
CACHED_SLICES = EMBEDDING_CACHE_BYTES // (256 * 64 * 64 * 4)

GIB = 2**30


# ------------------------------------------------------------------------------------------- memory
def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _cgroup_headroom() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 or v1), ``None`` when unlimited."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        if controllers == "":  # v2
            base = "/sys/fs/cgroup" + rel.rstrip("/")
            limit, used = _read_int(f"{base}/memory.max"), _read_int(f"{base}/memory.current")
        elif "memory" in controllers.split(","):  # v1
            base = "/sys/fs/cgroup/memory" + rel.rstrip("/")
            limit = _read_int(f"{base}/memory.limit_in_bytes")
            used = _read_int(f"{base}/memory.usage_in_bytes")
            if limit is not None and limit >= 1 << 60:  # v1 writes "no limit" as a huge number
                limit = None
        else:
            continue
        if limit is not None and used is not None:
            return max(0, limit - used)
    return None


def _address_space_headroom() -> int | None:
    """Bytes left under ``ulimit -v`` (RLIMIT_AS), ``None`` when unlimited or unknown."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return max(0, soft - int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _windows_available() -> int | None:
    import ctypes

    class MemoryStatusEx(ctypes.Structure):
        _fields_ = [
            ("dwLength", ctypes.c_ulong),
            ("dwMemoryLoad", ctypes.c_ulong),
            ("ullTotalPhys", ctypes.c_ulonglong),
            ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong),
            ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong),
            ("ullAvailVirtual", ctypes.c_ulonglong),
            ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    status = MemoryStatusEx()
    status.dwLength = ctypes.sizeof(MemoryStatusEx)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
        return None
    return int(status.ullAvailPhys)


def available_memory(device: Any = "cpu") -> int | None:
    """Bytes this process can still allocate on ``device``; ``None`` when it cannot be told.

    CPU: the least of the system's available memory (``MemAvailable``: free plus reclaimable cache), the
    headroom under this process's cgroup limit (a container) and under ``ulimit -v``. CUDA: the free
    memory of that GPU (``torch.cuda.mem_get_info``).
    """
    dev_type = getattr(device, "type", str(device).split(":")[0])
    if dev_type == "cuda":
        import torch

        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError, ValueError) as exc:
            log.debug("cannot ask the GPU for its free memory: %s", exc)
            return None
    found: list[int] = []
    if sys.platform == "win32":
        try:
            win = _windows_available()
        except (OSError, AttributeError):
            win = None
        if win is not None:
            found.append(win)
    else:
        for value in (_meminfo_available(), _cgroup_headroom(), _address_space_headroom()):
            if value is not None:
                found.append(value)
        if not found:  # macOS and other systems without /proc
            try:
                found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
            except (ValueError, OSError, AttributeError):
                pass
    return min(found) if found else None


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / 2**20:.0f} MiB"


def _dims(shape: Iterable[int]) -> str:
    return " x ".join(str(int(s)) for s in shape)


# ---------------------------------------------------------------------------------- sliding windows
@dataclass(frozen=True)
class SlidingWindowPlan:
    """What one :func:`semisam.inference.segment` call will run (all sizes in model-grid voxels).

    Attributes:
        kind: ``"2.5d"`` (windows over each slice's rows x columns) or ``"3d"`` (slices x rows x columns).
        roi: the window actually slid, one side per window axis: the manifest's ``roi_size`` with ``-1``
            and sides longer than the grid resolved (see :func:`plan_sliding_window`).
        overlap: fraction of a window shared with its neighbour, in ``0..MAX_OVERLAP``.
        sw_batch_size: the manifest's batch (2.5D: also the slices processed together).
        windows: windows over the whole scan.
        batch_windows: windows per network call (at most ``sw_batch_size``).
        peak_bytes: estimated peak memory of the run.
        available_bytes: memory free on the device when planned (``None``: unknown, not checked).
    """

    kind: str
    roi: tuple[int, ...]
    overlap: float
    sw_batch_size: int
    windows: int
    batch_windows: int
    peak_bytes: int
    available_bytes: int | None


def _windows_along(size: int, roi: int, overlap: float) -> int:
    """Windows MONAI's ``dense_patch_slices`` places along one axis of ``size`` (already >= ``roi``)."""
    if roi >= size:
        return 1
    step = max(1, int(roi * (1 - overlap)))
    return math.ceil((size - roi) / step) + 1


def _width_scale(manifest: ModelManifest) -> float:
    base = MEASURED_FIRST_WIDTH.get(manifest.arch)
    channels = manifest.kwargs.get("channels") if isinstance(manifest.kwargs, dict) else None
    if base is None:
        return 1.0
    if not isinstance(channels, list | tuple) or not channels:
        channels = [DEFAULT_FIRST_WIDTH.get(manifest.arch, base)]
    first = channels[0]
    ok = isinstance(first, int | float) and not isinstance(first, bool) and first > 0
    return max(MIN_WIDTH_SCALE, float(first) / base) if ok else 1.0


def _peak_bytes(
    kind: str,
    grid: tuple[int, int, int],
    input_voxels: int,
    roi: tuple[int, ...],
    windows_per_image: int,
    sw: int,
    n_classes: int,
    in_slices: int,
    per_voxel: float,
) -> tuple[int, int]:
    """``(peak bytes, windows per network call)`` of :func:`semisam.inference.segment` with batch ``sw``."""
    z, h, w = grid
    grid_vox = z * h * w
    roi_vox = math.prod(roi)
    c, f = n_classes, 4  # float32
    # Held for the whole run: the model grid (x), its labels and uncertainty; on the input grid the
    # float32 copy made for resampling, the output labels and uncertainty and a resampling temporary.
    persistent = grid_vox * (f + 1 + f) + input_voxels * (f + 1 + f + f)
    if kind == "2.5d":
        slices = min(sw, z)  # slices (stacks) per chunk, each with windows_per_image windows
        plane = h * w
        padded = max(h, roi[0]) * max(w, roi[1])
        batch = min(sw, slices * windows_per_image)
        stacks = slices * in_slices * plane * f * 2  # gathered neighbours + the contiguous stack
        monai = (slices * in_slices * padded * f if padded > plane else 0) + slices * c * padded * f
        monai += padded * f + roi_vox * f  # count map, importance map
        post = slices * plane * (2 * c * f + f + 1)
        window_in = in_slices
    else:
        padded = math.prod(max(s, r) for s, r in zip(grid, roi, strict=True))
        batch = min(sw, windows_per_image)
        stacks = 0
        monai = (padded * f if padded > grid_vox else 0) + c * padded * f + padded * f + roi_vox * f
        post = POST_CHUNK * h * w * (2 * c * f + f + 1)
        window_in = 1
    network = batch * roi_vox * (per_voxel + f * (window_in + 2 * c))  # activations, window in/out
    return int(persistent + stacks + monai + network + post), batch


def plan_sliding_window(
    model: Any,
    manifest: ModelManifest,
    model_shape: Sequence[int],
    settings: dict[str, Any],
    *,
    input_shape: Sequence[int] = (),
    device: Any = "cpu",
    scan: str | None = None,
    available: int | None | str = "ask",
) -> SlidingWindowPlan:
    """Check ``settings`` (the manifest's ``inference`` merged over the defaults) for ``model`` and a
    scan whose model grid is ``model_shape`` ``(Z', Y', X')``; return the plan or refuse.

    Windows: ``-1`` is the whole axis; a side longer than the grid is cut to the grid (2.5D: the network
    pads a slice itself) or to the grid rounded up to the network's downsampling factor and at least
    :func:`~semisam.model_folder.min_roi_voxels` (3D: MONAI pads the grid to the window), since padding
    beyond adds nothing but zeros to compute.

    Args:
        input_shape: the scan's ``(Z, Y, X)`` (its resampled copies count in the memory).
        device: where the run happens (its free memory is the bound).
        scan: the scan's file, for a message about the scan itself.
        available: bytes free; ``"ask"``: :func:`available_memory` of ``device``; ``None``: unchecked.

    Raises:
        CheckpointError: ``"<manifest>: inference.<field>: ..."``: settings a network of this kind cannot
            run, more than :data:`MAX_WINDOWS` windows, or a batch that does not fit in memory.
        GridTooLargeError: even one window of the smallest size does not fit (names the scan).
    """
    # Long: one check per setting (windows, overlap, batch, memory), each with its own refusal text.
    where = manifest.source
    kind = settings["kind"]
    multiple = network_multiple(model)
    check_inference(settings, kind, multiple, where)
    grid = tuple(int(s) for s in model_shape)
    spatial = grid[1:] if kind == "2.5d" else grid
    lowest = min_roi_voxels(multiple)
    roi_req = [int(r) for r in settings["roi_size"]]
    roi: list[int] = []
    for size, r in zip(spatial, roi_req, strict=True):
        full = size if kind == "2.5d" else max(-(-size // multiple) * multiple, lowest)
        roi.append(full if r == -1 else min(r, full))
    overlap = float(settings["overlap"])
    sw = int(settings["sw_batch_size"])
    padded = [max(s, r) for s, r in zip(spatial, roi, strict=True)]
    per_image = math.prod(_windows_along(p, r, overlap) for p, r in zip(padded, roi, strict=True))
    windows = per_image * (grid[0] if kind == "2.5d" else 1)
    if windows > MAX_WINDOWS:
        raise CheckpointError(
            f"{where}: inference.roi_size {roi_req} with overlap {overlap:g}: would slide {windows:,} windows "
            f"of {_dims(roi)} voxels over this scan's model grid of {_dims(grid)} (at most {MAX_WINDOWS:,}); "
            f"use larger windows (-1 = the whole axis) or less overlap"
        )
    n_classes = int(getattr(model, "n_classes", manifest.n_classes))
    in_slices = int(getattr(model, "in_slices", 1))
    per_voxel = NETWORK_BYTES_PER_VOXEL.get(kind, NETWORK_BYTES_PER_VOXEL["3d"]) * _width_scale(manifest)
    n_input = math.prod(int(s) for s in input_shape) if input_shape else math.prod(grid)

    def peak(batch_size: int, window: Sequence[int]) -> tuple[int, int]:
        wins = math.prod(_windows_along(max(s, r), r, overlap) for s, r in zip(spatial, window, strict=True))
        return _peak_bytes(
            kind, grid, n_input, tuple(window), wins, batch_size, n_classes, in_slices, per_voxel
        )

    need, batch = peak(sw, roi)
    free = available_memory(device) if available == "ask" else available
    plan = SlidingWindowPlan(kind, tuple(roi), overlap, sw, windows, batch, need, free)  # type: ignore[arg-type]
    log.debug(
        "sliding window: %d windows of %s, %d per call, ~%s peak, %s free",
        windows,
        _dims(roi),
        batch,
        _gib(need),
        "?" if free is None else _gib(free),
    )
    if free is None or need <= free:
        return plan
    have = f"more than the {_gib(free)} of memory free on {getattr(device, 'type', device)}"
    if sw > 1 and peak(1, roi)[0] <= free:
        fits = max(k for k in range(1, sw + 1) if k == 1 or peak(k, roi)[0] <= free)
        raise CheckpointError(
            f"{where}: inference.sw_batch_size {sw}: {batch} windows of {_dims(roi)} per call would need "
            f"~{_gib(need)} with the rest of the run, {have}; {fits} fit (set sw_batch_size to {fits} or less)"
        )
    smallest = [min(r, max(lowest, 1)) for r in roi]
    if any(r > s for r, s in zip(roi, smallest, strict=True)) and peak(1, smallest)[0] <= free:
        raise CheckpointError(
            f"{where}: inference.roi_size {roi_req}: windows of {_dims(roi)} (sw_batch_size {sw}) would need "
            f"~{_gib(need)} with the rest of the run, {have}; use smaller windows"
        )
    raise GridTooLargeError(
        f"segmenting needs ~{_gib(need)} (model grid {_dims(grid)} at the model's target_spacing "
        f"{list(manifest.preprocessing.get('target_spacing', []))} mm), {have}; crop the scan or free memory",
        scan,
    )


# -------------------------------------------------------------------------------------- propagation
def _track_extent(n_slices: int, keys: Iterable[int]) -> tuple[list[int], int, int, list[int]]:
    """``(sorted key slices, slices below, slices above, gaps between)`` the tracks may visit."""
    ks = sorted({int(k) for k in keys})
    if len(ks) < 2:  # one key slice: its tracks may run to both ends of the axis
        return ks, ks[0] if ks else 0, n_slices - 1 - ks[0] if ks else 0, []
    gaps = [b - a - 1 for a, b in zip(ks, ks[1:], strict=False)]
    reach = math.ceil((max(gaps) + 1) / 2) + 1
    return ks, min(ks[0], reach), min(n_slices - 1 - ks[-1], reach), gaps


def propagation_encoder_calls(
    n_slices: int, keys: Iterable[int], video: bool = False, views: bool = False
) -> int:
    """Most encoder calls a propagation from key slices ``keys`` along an axis of ``n_slices`` can make.

    A 2D generalist encodes each key slice, then each slice a track visits: from the outermost key
    slices to the ends of the axis (with two or more key slices, at most half the largest gap plus one
    beyond them, as :func:`semisam.propagation.engine._outward_reach` bounds it), and between two key
    slices both tracks may visit every slice (counted twice when the gap is longer than the
    :data:`CACHED_SLICES` the embedding cache holds). With closer ``views``
    (:mod:`semisam.generalists.view`) a key slice is encoded twice: whole and through a view. A SAM
    2-family model (``video``) encodes every slice of the axis once.
    """
    if video:
        return n_slices
    ks, below, above, gaps = _track_extent(n_slices, keys)
    if not ks:
        return 0
    calls = len(ks) + below + above + sum(g if g <= CACHED_SLICES else 2 * g for g in gaps)
    return calls + len(ks) if views else calls


def views_possible(volume_shape: Sequence[int], axis_index: int, field_of_view: str) -> bool:
    """Whether a propagation across ``axis_index`` may look through closer views: ``field_of_view`` is
    ``"auto"`` and a slice is large enough for one (:func:`semisam.generalists.view.view_around`: a view
    of at least 32 px must be under half the slice's longer side)."""
    in_plane = [int(s) for i, s in enumerate(volume_shape) if i != axis_index]
    return field_of_view == "auto" and max(in_plane) > 64


def check_propagation(
    volume_shape: Sequence[int],
    axis_index: int,
    keys: Iterable[int],
    *,
    video: bool = False,
    views: bool = False,
    scan: str | None = None,
    prompts: str | None = None,
    available: int | None | str = "ask",
) -> tuple[int, int]:
    """Refuse a propagation whose encoder calls or memory would explode; return ``(calls, bytes)``.

    Args:
        volume_shape: the scan's ``(Z, Y, X)``.
        axis_index: array axis the slices are taken across (axial 0, coronal 1, sagittal 2).
        keys: the prompted slice indices along that axis.
        video: a SAM 2-family model (encodes and stacks every slice).
        views: closer views may be encoded besides the whole slices (:func:`views_possible`).
        scan, prompts: the files, for the message.
        available: bytes free; ``"ask"``: :func:`available_memory` (CPU); ``None``: unchecked.

    Raises:
        PromptError: more than :data:`MAX_ENCODER_CALLS` calls, or more memory than is free.
    """
    shape = [int(s) for s in volume_shape]
    n = shape[axis_index]
    pixels = math.prod(shape) // max(1, n)
    keys = sorted({int(k) for k in keys})
    calls = propagation_encoder_calls(n, keys, video, views)
    what = f"{scan}: " if scan else ""
    src = f" from {prompts}" if prompts else ""
    if calls > MAX_ENCODER_CALLS:
        raise PromptError(
            f"{what}propagating the prompts{src} across {n:,} slices could take up to {calls:,} encoder "
            f"calls (at most {MAX_ENCODER_CALLS:,}); crop the scan to the structure, or add key slices "
            "that bound it"
        )
    # Slice masks kept: every slice a track visits (both tracks between two key slices keep theirs).
    ks, below, above, gaps = _track_extent(n, keys)
    visited = n if video else len(ks) + below + above + 2 * sum(gaps)
    need = visited * pixels * PROPAGATION_BYTES_PER_PIXEL + math.prod(shape) + EMBEDDING_CACHE_BYTES
    free = available_memory("cpu") if available == "ask" else available
    if free is not None and need > free:
        raise PromptError(
            f"{what}propagating the prompts{src} over up to {visited:,} slices of {pixels:,} pixels would "
            f"need ~{_gib(need)}, more than the {_gib(free)} of memory free; crop the scan to the structure"
        )
    return calls, need


__all__ = [
    "MAX_ENCODER_CALLS",
    "VIDEO_GENERALISTS",
    "MAX_WINDOWS",
    "SlidingWindowPlan",
    "available_memory",
    "check_propagation",
    "plan_sliding_window",
    "propagation_encoder_calls",
]
