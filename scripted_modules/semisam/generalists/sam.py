"""SAM and MedSAM: segment-anything's ViT image encoder (B/L/H) with its prompt encoder and mask decoder.

The variant is read from the checkpoint's tensor shapes (:func:`infer_sam_arch`): embedding width from
``pos_embed``, depth from the block count, head count from the relative-position tables, global-attention
blocks from which tables span the whole image. So ViT-B/L/H, MedSAM (a ViT-B at 1024 px) and smaller
models of the family all load through the same code.

Pixel normalisation: SAM was trained on ImageNet-normalised 0..255 RGB; MedSAM on the ``[0, 1]`` image, each
resized slice stretched to its own min..max, fed directly to the encoder (as its inference script does).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch

from .sam_family import MEDSAM_PIXEL_NORM, SAM_PIXEL_NORM, SamLikeModel
from .user_checkpoint import CheckpointError, checkpoint_sha256, load_strict, read_state_dict

log = logging.getLogger(__name__)

PATCH_SIZE = 16
#: known variants by (embed_dim, depth), for log messages only
VARIANTS = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def infer_sam_arch(state: Mapping[str, torch.Tensor], path: str | Path) -> dict[str, Any]:
    """Constructor arguments of the SAM ViT model whose weights are ``state``.

    Raises:
        CheckpointError: "not a SAM ViT checkpoint" when the keys/shapes do not fit the family.
    """
    try:
        pos = state["image_encoder.pos_embed"]  # (1, S/16, S/16, embed_dim)
        embed_dim = int(pos.shape[-1])
        grid = int(pos.shape[1])
        depth = _count(state, r"image_encoder\.blocks\.(\d+)\.")
        rel = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"] for i in range(depth)]
        head_dim = int(rel[0].shape[1])
        if head_dim < 1 or embed_dim < 1:
            raise CheckpointError(
                f"checkpoint {path}: not a SAM ViT checkpoint: zero-size attention tables "
                f"(rel_pos_h {tuple(rel[0].shape)}, embedding width {embed_dim})"
            )
        sizes = [(int(r.shape[0]) + 1) // 2 for r in rel]
        global_idx = [i for i, s in enumerate(sizes) if s == grid]
        windows = {s for s in sizes if s != grid}
        out_chans = int(state["image_encoder.neck.0.weight"].shape[0])
        arch = {
            "img_size": grid * PATCH_SIZE,
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": embed_dim // head_dim,
            "mlp_ratio": state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / embed_dim,
            "global_attn_indexes": global_idx,
            "window_size": windows.pop() if windows else 0,
            "out_chans": out_chans,
            "mask_in_chans": int(state["prompt_encoder.mask_downscaling.3.weight"].shape[0]),
            "decoder_depth": _count(state, r"mask_decoder\.transformer\.layers\.(\d+)\."),
            "decoder_mlp_dim": int(state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]),
            "decoder_heads": 8,  # not visible in the shapes; every released SAM decoder uses 8
            "iou_head_depth": _count(state, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\."),
            "iou_head_hidden_dim": int(state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]),
        }
    except (KeyError, IndexError) as exc:
        raise CheckpointError(
            f"checkpoint {path}: not a SAM ViT checkpoint (segment-anything image encoder + prompt encoder + "
            f"mask decoder): missing {exc}"
        ) from exc
    except ZeroDivisionError as exc:
        raise CheckpointError(f"checkpoint {path}: not a SAM ViT checkpoint: zero-size tensors") from exc
    # Crafted shapes (a zero-width table or layer) must not reach the constructors, whose asserts and
    # divisions would fail with no file named.
    widths = {
        "pos_embed": embed_dim,
        "pos_embed grid": grid,
        "rel_pos_h width": head_dim,
        "neck": out_chans,
        "mlp": int(state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0]),
        **{k: int(arch[k]) for k in ("mask_in_chans", "decoder_depth", "decoder_mlp_dim", "iou_head_depth")},
        "iou_head_hidden_dim": int(arch["iou_head_hidden_dim"]),
    }
    empty = sorted(k for k, v in widths.items() if v < 1)
    if empty:
        raise CheckpointError(f"checkpoint {path}: not a SAM ViT checkpoint: zero-size {', '.join(empty)}")
    if (
        depth == 0
        or windows
        or embed_dim % head_dim
        or not math.isfinite(arch["mlp_ratio"])
        or min(sizes) < 1
        or grid > 1024
    ):
        raise CheckpointError(f"checkpoint {path}: not a SAM ViT checkpoint: inconsistent block shapes")
    return arch


def build_sam_module(arch: Mapping[str, Any], name: str = "sam") -> SamLikeModel:
    """A randomly initialised SAM-family model for the given constructor arguments (eval mode, CPU)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer

    a = dict(arch)
    size = int(a["img_size"])
    grid = size // PATCH_SIZE
    encoder = ImageEncoderViT(
        depth=int(a["depth"]),
        embed_dim=int(a["embed_dim"]),
        img_size=size,
        mlp_ratio=float(a["mlp_ratio"]),
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=int(a["num_heads"]),
        patch_size=PATCH_SIZE,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=tuple(a["global_attn_indexes"]),
        window_size=int(a["window_size"]),
        out_chans=int(a["out_chans"]),
    )
    dim = int(a["out_chans"])
    prompt_encoder = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(grid, grid),
        input_image_size=(size, size),
        mask_in_chans=int(a.get("mask_in_chans", 16)),
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=int(a.get("decoder_depth", 2)),
            embedding_dim=dim,
            mlp_dim=int(a.get("decoder_mlp_dim", 2048)),
            num_heads=int(a.get("decoder_heads", 8)),
        ),
        transformer_dim=dim,
        iou_head_depth=int(a.get("iou_head_depth", 3)),
        iou_head_hidden_dim=int(a.get("iou_head_hidden_dim", 256)),
    )
    norm = MEDSAM_PIXEL_NORM if name == "medsam" else SAM_PIXEL_NORM
    return SamLikeModel(name, encoder, prompt_encoder, decoder, size, norm).eval()


def build_sam(
    checkpoint: str | Path | None, device: torch.device | str = "cpu", name: str = "sam"
) -> SamLikeModel:
    """SAM (``name="sam"``) or MedSAM (``name="medsam"``) from a user checkpoint file.

    Raises:
        CheckpointError: no checkpoint given (no SAM weights are bundled), or the file is missing,
            corrupt, pickled objects, or not a SAM ViT checkpoint.
    """
    if checkpoint is None:
        raise CheckpointError(
            f"generalist {name!r} needs a checkpoint file (e.g. --model {name}:/path/to/"
            f"{'medsam_vit_b.pth' if name == 'medsam' else 'sam_vit_b_01ec64.pth'}); no weights are bundled"
        )
    path = Path(checkpoint)
    state = read_state_dict(path)
    arch = infer_sam_arch(state, path)
    try:
        model = build_sam_module(arch, name)
    except (AssertionError, ValueError, RuntimeError, ZeroDivisionError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {path}: not a SAM ViT checkpoint: its shapes do not build a model ({exc})"
        ) from exc
    load_strict(model, state, path, "SAM ViT")
    model.checkpoint_path = str(path)
    model.weights_digest = checkpoint_sha256(path)
    log.info(
        "loaded %s %s (embed %d, depth %d) from %s",
        name,
        VARIANTS.get((arch["embed_dim"], arch["depth"]), "custom ViT"),
        arch["embed_dim"],
        arch["depth"],
        path,
    )
    return model.eval().to(device)
