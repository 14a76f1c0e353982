"""Benchmark: where LiteMedSAM's encoder spends its time on this CPU, how fast it could possibly be, and what
each faster alternative costs in masks.

Prints one JSON object:

* ``gemm``: the hardware ceiling, the throughput of a 2048x2048 matrix product on all cores: fp32 in torch
  and onnxruntime, int8 (``MatMulInteger``, u8 x s8) in onnxruntime.
* ``flops``: the encoder's FLOP per 256x256 slice by aten op (``torch.utils.flop_counter.FlopCounterMode``).
* ``profile``: onnxruntime's time per op type for one encode of the shipped export (median of ``--repeats``).
* ``floor``: seconds per slice if every FLOP ran at the fp32 GEMM peak, and the measured time of the
  matrix ops alone (Gemm, Conv, MatMul), as if every other op were free.
* ``alternatives``: seconds per slice and Dice against eager fp32 (the label's box on every lesion slice of
  lung1, brain1 and breast1, same decoder) for the shipped path (onnxruntime fp32, one session on all
  cores), one 1-thread session per core in parallel (throughput), dynamic int8 (MatMul/Gemm), static int8
  (QDQ, per channel, calibrated on every third lesion slice, which are among the 13 scored: a favourable
  setting that still fails) and ROI encoding (a crop of the model frame aligned to TinyViT's 56-pixel window grid,
  decoded from the crop's tokens with the matching slice of the positional encoding).

Run: ``python Testing/benchmarks/encoder_floor.py [--repeats 5] [--roi 168]``. Takes ~5 min on 2 cores.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from bench_common import machine_info, median_seconds
from encoder import lesion_slices

from semisam.generalists import SlicePrompt, build_generalist
from semisam.generalists.geometry import ResizeLongestSide
from semisam.generalists.onnx_cache import cpu_session
from semisam.metrics import dice

#: TinyViT's windows repeat every 56 input pixels (stage 1: 7 tokens x 2 px, stage 2: 14 x 4, stage 3: 7 x 4)
WINDOW_GRID_PX = 56


def gemm_ceiling(n: int = 2048, repeats: int = 5) -> dict:
    """Best-of-``repeats`` GOP/s of an ``n x n`` matrix product on all cores (fp32 torch/ORT, int8 ORT)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def ort_matmul(op: str, a: np.ndarray, b: np.ndarray, out_type: int) -> float:
        t = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.uint8): TensorProto.UINT8}
        t[np.dtype(np.int8)] = TensorProto.INT8
        graph = helper.make_graph(
            [helper.make_node(op, ["a", "b"], ["c"])],
            "g",
            [helper.make_tensor_value_info("a", t[a.dtype], [n, n])]
            + [helper.make_tensor_value_info("b", t[b.dtype], [n, n])],
            [helper.make_tensor_value_info("c", out_type, [n, n])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        so = ort.SessionOptions()
        so.intra_op_num_threads = os.cpu_count() or 1
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feeds = {"a": a, "b": b}
        sess.run(None, feeds)
        return 2 * n**3 / min(median_seconds(lambda: sess.run(None, feeds), 1) for _ in range(repeats)) / 1e9

    a = torch.randn(n, n)
    a @ a
    torch_fp32 = 2 * n**3 / min(median_seconds(lambda: a @ a, 1) for _ in range(repeats)) / 1e9
    rng = np.random.default_rng(0)
    f = rng.random((n, n), dtype=np.float32)
    u8 = rng.integers(0, 255, (n, n), dtype=np.uint8)
    s8 = rng.integers(-127, 127, (n, n), dtype=np.int8)
    return {
        "n": n,
        "fp32_torch_gflops": round(torch_fp32, 1),
        "fp32_onnxruntime_gflops": round(ort_matmul("MatMul", f, f, TensorProto.FLOAT), 1),
        "int8_onnxruntime_gops": round(ort_matmul("MatMulInteger", u8, s8, TensorProto.INT32), 1),
    }


def flop_breakdown(encoder: torch.nn.Module, size: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        encoder(torch.rand(1, 3, size, size))
    by_op = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    return {"total_gflop": round(counter.get_total_flops() / 1e9, 2)} | {
        k: round(v / 1e9, 2) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])
    }


def ort_profile(path: Path, x: np.ndarray, repeats: int) -> dict:
    """Median ms per op type over ``repeats`` encodes, from onnxruntime's own profiler, in a session with
    the shipped options (:func:`~semisam.generalists.onnx_cache.cpu_session`)."""
    with tempfile.TemporaryDirectory(prefix="semisam-ortprof-") as tmp:
        sess = cpu_session(path, os.cpu_count() or 1, profile_prefix=str(Path(tmp) / "encoder"))
        for _ in range(repeats + 1):  # the first run is a warm-up, dropped below
            sess.run(None, {"image": x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    # a run's node events come before its "model_run" event, which onnxruntime writes when the run ends
    runs, current = [], collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            current[e["args"]["op_name"]] += e["dur"] / 1e3
        elif e.get("name") == "model_run":
            runs.append(current)
            current = collections.Counter()
    per_op = collections.defaultdict(list)
    for r in runs[1:]:  # the first run is the warm-up
        for op, ms in r.items():
            per_op[op].append(ms)
    med = {op: statistics.median(v) for op, v in per_op.items()}
    total = sum(med.values())
    return {
        "total_ms": round(total, 1),
        "by_op_ms": {op: round(ms, 1) for op, ms in sorted(med.items(), key=lambda kv: -kv[1])},
        "matrix_ops_ms": round(sum(ms for op, ms in med.items() if op in MATRIX_OPS), 1),
    }


MATRIX_OPS = {"Gemm", "Conv", "MatMul", "FusedMatMul", "FusedConv", "QLinearConv", "QLinearMatMul"}


def tinyvit_at(model, size: int) -> torch.nn.Module:
    """LiteMedSAM's TinyViT rebuilt for a ``size x size`` input with the same weights (a multiple of 56)."""
    from semisam.generalists.litemedsam import LITEMEDSAM_ARCH, build_tinyvit

    enc = build_tinyvit(LITEMEDSAM_ARCH, size)
    enc.load_state_dict(model.image_encoder.state_dict())
    enc.eval()
    grid = size // 4

    def forward(x):  # the wheel's forward_features hard-codes a 64x64 token grid
        x = enc.patch_embed(x)
        for layer in enc.layers:
            x = layer(x)
        return enc.neck(x.view(x.shape[0], grid, grid, -1).permute(0, 3, 1, 2))

    enc.forward = forward
    return enc


def roi_crop(model, size: int, image: np.ndarray, box):
    """The ``size``-pixel crop of the model frame around ``box``, its origin on TinyViT's window grid and
    inside the frame: ``(full frame (1, 3, S, S), crop, x0, y0, transform, box in model pixels)``."""
    frame = model.preprocess(image)
    s = model.image_size
    tf = ResizeLongestSide(image.shape, s)
    b = tf.coords_to_model(np.asarray(box, float))
    last = (s - size) // WINDOW_GRID_PX * WINDOW_GRID_PX

    def origin(c: float) -> int:
        return int(np.clip(round((c - size / 2) / WINDOW_GRID_PX) * WINDOW_GRID_PX, 0, last))

    x0, y0 = origin((b[0] + b[2]) / 2), origin((b[1] + b[3]) / 2)
    return frame, frame[..., y0 : y0 + size, x0 : x0 + size], x0, y0, tf, b


@torch.inference_mode()
def roi_mask(model, encoder, size: int, image: np.ndarray, box) -> tuple[np.ndarray, float]:
    """Box prompt answered from the crop's features (eager decoder, the matching slice of the positional
    encoding): ``(mask (H, W), relative feature error in the crop's central third vs the full encode)``."""
    frame, crop, x0, y0, tf, b = roi_crop(model, size, image, box)
    feats = encoder(crop)
    g, e = size // 4, model.image_size // 4
    full = model.image_encoder(frame)[..., y0 // 4 : y0 // 4 + g, x0 // 4 : x0 // 4 + g]
    c = slice(g // 3, g - g // 3)
    err = float((feats - full)[..., c, c].abs().mean() / full[..., c, c].abs().mean())
    ys = (torch.arange(y0 // 4, y0 // 4 + g) + 0.5) / e
    xs = (torch.arange(x0 // 4, x0 // 4 + g) + 0.5) / e
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    pe = model.prompt_encoder.pe_layer._pe_encoding(torch.stack([xx, yy], -1)).permute(2, 0, 1)[None]
    sparse, dense = model.prompt_encoder(points=None, boxes=torch.as_tensor(b[None]).float(), masks=None)
    low, _ = model.mask_decoder(
        image_embeddings=feats,
        image_pe=pe,
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense[..., :g, :g],
        multimask_output=False,
    )
    canvas = torch.full((1, 1, model.image_size, model.image_size), -20.0)
    canvas[..., y0 : y0 + size, x0 : x0 + size] = low
    return (tf.logits_to_slice(canvas)[0, 0] > 0).numpy(), err


def quantized(src: Path, out_dir: Path, calib: list[np.ndarray]) -> dict[str, Path]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out_dir / "pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"image": x}

    dyn, sta = out_dir / "dynamic.onnx", out_dir / "static.onnx"
    # dynamic: matrix products only (ConvInteger measured 2x slower than fp32 Conv here)
    quantize_dynamic(
        str(pre),
        str(dyn),
        op_types_to_quantize=["MatMul", "Gemm"],
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    quantize_static(
        str(pre),
        str(sta),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Conv", "MatMul", "Gemm"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return {"ort_int8_dynamic": dyn, "ort_int8_static": sta}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--roi", type=int, default=168, help="ROI crop side in model pixels (multiple of 56)")
    args = ap.parse_args(argv)
    if args.roi % WINDOW_GRID_PX or not WINDOW_GRID_PX <= args.roi < 256:
        ap.error(f"--roi must be a multiple of {WINDOW_GRID_PX} below the 256-pixel model frame")
    torch.set_grad_enabled(False)
    logging_quiet()

    slices = lesion_slices("lung1") + lesion_slices("brain1") + lesion_slices("breast1")
    if not slices:
        print(json.dumps({"error": "no sample data found (semisam samples fetch)"}))
        return 1
    model = build_generalist("litemedsam", device="cpu", backend="onnxruntime")
    threads = os.cpu_count() or 1
    x0 = model.preprocess(slices[0][1]).numpy()
    model.encode(slices[0][1])  # exports (or reuses) the shipped ONNX file
    shipped = model._fast_encoder.path
    prompts = [SlicePrompt(box=tuple(float(v) for v in box)) for _, _, box in slices]

    model.use_eager_encoder()  # reference: eager encoder and decoder
    reference = [
        model.predict(model.encode(img), p).mask for (_, img, _), p in zip(slices, prompts, strict=True)
    ]

    def score(masks) -> dict:
        d = [dice(m, r) for m, r in zip(masks, reference, strict=True)]
        return {"dice_min": round(min(d), 4), "dice_mean": round(float(np.mean(d)), 4)}

    def session_masks(sess) -> list:
        model.set_fast_encoder(lambda t: torch.from_numpy(sess.run(None, {"image": t.numpy()})[0]), "bench")
        return [
            model.predict(model.encode(img), p).mask for (_, img, _), p in zip(slices, prompts, strict=True)
        ]

    alt: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="semisam-quant-") as tmp:
        calib = [model.preprocess(img).numpy() for i, (_, img, _) in enumerate(slices) if i % 3 == 0]
        paths = {"ort_fp32": shipped} | quantized(shipped, Path(tmp), calib)
        for name, path in paths.items():
            sess = cpu_session(path, threads)
            sess.run(None, {"image": x0})
            alt[name] = {
                "s_per_slice": round(
                    median_seconds(lambda s=sess: s.run(None, {"image": x0}), args.repeats), 3
                )
            }
            alt[name] |= score(session_masks(sess))

    singles = [cpu_session(shipped, 1) for _ in range(threads)]
    for s in singles:
        s.run(None, {"image": x0})
    t = time.perf_counter()
    workers = [
        threading.Thread(target=lambda s=s: [s.run(None, {"image": x0}) for _ in range(args.repeats)])
        for s in singles
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    alt["ort_fp32_1thread_per_core"] = {
        "s_per_slice": round((time.perf_counter() - t) / (threads * args.repeats), 3),
        "note": "throughput of 1-thread sessions encoding different slices at once; same masks as ort_fp32",
    }

    model.use_eager_encoder()
    roi_enc = tinyvit_at(model, args.roi)
    crop = torch.rand(1, 3, args.roi, args.roi)
    roi_enc(crop)
    full = torch.from_numpy(x0)
    alt["eager_fp32"] = {
        "s_per_slice": round(median_seconds(lambda: model.image_encoder(full), args.repeats), 3)
    }
    alt[f"eager_roi_{args.roi}"] = {
        "s_per_slice": round(median_seconds(lambda: roi_enc(crop), args.repeats), 3),
        "area_fraction": round(args.roi**2 / model.image_size**2, 3),
    }
    roi = [roi_mask(model, roi_enc, args.roi, img, box) for _, img, box in slices]
    alt[f"eager_roi_{args.roi}"] |= score([m for m, _ in roi])
    # why the masks change: window attention and local convs carry the crop's border into its centre
    alt[f"eager_roi_{args.roi}"]["centre_feature_rel_err_mean"] = round(
        float(np.mean([e for _, e in roi])), 3
    )

    gemm = gemm_ceiling()
    flops = flop_breakdown(model.image_encoder, model.image_size)
    prof = ort_profile(shipped, x0, args.repeats)
    result = {
        "benchmark": "encoder_floor",
        "model": "litemedsam",
        "slices_compared": len(slices),
        "gemm": gemm,
        "flops": flops,
        "profile_onnxruntime_fp32": prof,
        "floor": {
            "s_per_slice_at_fp32_gemm_peak": round(flops["total_gflop"] / gemm["fp32_torch_gflops"], 3),
            "s_per_slice_at_int8_gemm_peak": round(flops["total_gflop"] / gemm["int8_onnxruntime_gops"], 3),
            "s_per_slice_matrix_ops_only": round(prof["matrix_ops_ms"] / 1e3, 3),
            "gflops_needed_for_2_slices_per_s": round(2 * flops["total_gflop"], 1),
        },
        "alternatives": alt,
        "machine": machine_info(onnxruntime=__import__("onnxruntime").__version__),
    }
    print(json.dumps(result, indent=1))
    return 0


def logging_quiet() -> None:
    """onnxruntime's quantizer logs every tensor it calibrates; keep the JSON on stdout readable."""
    import logging

    logging.getLogger("root").setLevel(logging.WARNING)
    warnings.simplefilter("ignore")


if __name__ == "__main__":
    sys.exit(main())
