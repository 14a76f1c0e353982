"""Tiny, randomly initialised models of each real generalist family, for the tests.

They are the real architectures (TinyViT + SAM decoder, SAM ViT, SAM 2 Hiera) with small widths and
depths, so saving one and loading it back exercises exactly the loading code used for real checkpoints.
Their masks mean nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch

#: LiteMedSAM family, small: the last stage must keep 320 channels (TinyViT-SAM's stride-1 rule).
TINY_LITEMEDSAM = {
    "embed_dims": [8, 16, 16, 320],
    "depths": [1, 1, 1, 1],
    "num_heads": [1, 1, 1, 1],
    "window_sizes": [7, 7, 7, 7],
    "mlp_ratio": 1.0,
    "mbconv_expand_ratio": 1.0,
    "decoder_depth": 1,
    "decoder_mlp_dim": 32,
    "decoder_heads": 8,
    "iou_head_depth": 2,
    "iou_head_hidden_dim": 16,
    "mask_in_chans": 4,
}

#: SAM ViT family, small: 128 px input, 8x8 embedding, one windowed and one global block.
TINY_SAM = {
    "img_size": 128,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "global_attn_indexes": [1],
    "window_size": 4,
    "out_chans": 32,
    "mask_in_chans": 4,
    "decoder_depth": 1,
    "decoder_mlp_dim": 32,
    "decoder_heads": 8,
    "iou_head_depth": 2,
    "iou_head_hidden_dim": 16,
}


def tiny_sam2_config(image_size: int = 128) -> dict:
    """SAM 2.1 Hiera-T's config shrunk: width 8, 1-2 blocks per stage, 32-wide memory and decoder."""
    from semisam.generalists.sam2_model import _package_config, set_image_size

    cfg = _package_config("hiera_t", v21=True)
    trunk = cfg["image_encoder"]["trunk"]
    # a global-attention block must not be the first (pooling) block of a stage: block 3 is mid-stage
    trunk.update(embed_dim=8, num_heads=1, stages=[1, 1, 2, 1], global_att_blocks=[3])
    neck = cfg["image_encoder"]["neck"]
    neck.update(d_model=32, backbone_channel_list=[64, 32, 16, 8])
    neck["position_encoding"]["num_pos_feats"] = 32
    mem = cfg["memory_attention"]
    mem.update(d_model=32, num_layers=1)
    layer = mem["layer"]
    layer.update(d_model=32, dim_feedforward=32)
    layer["self_attention"].update(embedding_dim=32)
    layer["cross_attention"].update(embedding_dim=32, kv_in_dim=16)
    enc = cfg["memory_encoder"]
    enc.update(out_dim=16, in_dim=32)
    enc["position_encoding"]["num_pos_feats"] = 16
    enc["mask_downsampler"]["embed_dim"] = 32
    enc["fuser"]["layer"]["dim"] = 32
    enc["fuser"]["num_layers"] = 1
    cfg["num_maskmem"] = 3
    return set_image_size(cfg, image_size)


def tiny_litemedsam(seed: int = 0):
    from semisam.generalists.litemedsam import build_litemedsam_module

    torch.manual_seed(seed)
    return build_litemedsam_module(TINY_LITEMEDSAM)


def tiny_sam(seed: int = 0, name: str = "sam"):
    from semisam.generalists.sam import build_sam_module

    torch.manual_seed(seed)
    return build_sam_module(TINY_SAM, name)


def tiny_sam2(seed: int = 0, name: str = "sam2"):
    from semisam.generalists.sam2_model import build_sam2_module

    torch.manual_seed(seed)
    return build_sam2_module(tiny_sam2_config(), name)


def save_tiny(model, path: str | Path) -> Path:
    """Save a tiny model the way users' checkpoints come: a state dict (``.pth``) or ``.safetensors``."""
    from semisam.generalists.sam2_model import Sam2Model, save_sam2
    from semisam.generalists.user_checkpoint import save_state_dict

    if isinstance(model, Sam2Model):
        return save_sam2(model, path)
    return save_state_dict(model, path)
