"""SAM 2 and MedSAM2 (the ``sam2`` package's video predictor) behind the generalist protocol.

Two ways to use it:

* per slice, like every generalist: :meth:`Sam2Model.encode` / :meth:`Sam2Model.predict` (SAM 2's image
  path: backbone features + the no-memory embedding, prompt encoder, mask decoder with high-res features);
* per volume with SAM 2's memory bank: :meth:`Sam2Model.propagate_volume` treats the slices as video
  frames. The predictor's ``init_state`` reads a folder of JPEG frames; :func:`init_state_from_frames`
  builds the same inference state from an in-memory ``(Z, H, W)`` float array instead (no lossy round trip).

Geometry is SAM 2's own: each slice is resized (not padded) to ``image_size`` squared and normalised with
ImageNet mean/std; masks come back at the slice's ``(H, W)``.

Configs come from the package's Hydra YAML files (``sam2/configs/sam2*/``), chosen by the checkpoint's
shapes (trunk width and block count; ``no_obj_embed_spatial`` tells 2.1 from 2.0). A ``.safetensors``
file written by :func:`save_sam2` carries its full model config in its metadata (``semisam_sam2_config``),
which is how models of other sizes (the tests' tiny one) load through the same code.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from semisam.fileio import atomic_path
from semisam.prompts import PromptError

from .base import SliceEmbedding, SlicePrediction, SlicePrompt
from .sam_family import BINARY_MASK_LOGIT
from .user_checkpoint import CheckpointError, checkpoint_sha256, load_strict, read_state_dict

log = logging.getLogger(__name__)

IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)
METADATA_KEY = "semisam_sam2_config"
#: (trunk embed_dim, trunk blocks) -> config stem
VARIANTS = {(96, 12): "hiera_t", (96, 16): "hiera_s", (112, 24): "hiera_b+", (144, 48): "hiera_l"}
#: MedSAM2 (Ma et al. 2025) is a SAM 2.1 Hiera-T fine-tuned at 512 px
DEFAULT_IMAGE_SIZE = {"sam2": 1024, "medsam2": 512}
#: settings the sam2 video predictor builder applies (build_sam2_video_predictor); fill_hole_area stays 0
#: because the hole filling needs sam2's CUDA extension, which is not built here.
VIDEO_OVERRIDES = {
    "sam_mask_decoder_extra_args": {
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": 0.05,
        "dynamic_multimask_stability_thresh": 0.98,
    },
    "binarize_mask_from_pts_for_mem_enc": True,
    "fill_hole_area": 0,
}


def _package_config(stem: str, v21: bool) -> dict[str, Any]:
    """The ``model`` section of one of the sam2 package's YAML configs, as a plain dict."""
    import sam2
    from omegaconf import OmegaConf

    folder, prefix = ("sam2.1", "sam2.1_") if v21 else ("sam2", "sam2_")
    path = Path(sam2.__file__).parent / "configs" / folder / f"{prefix}{stem}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path).model, resolve=True)


def set_image_size(cfg: dict[str, Any], size: int) -> dict[str, Any]:
    """Set ``image_size`` and the memory attention's RoPE feature sizes (``size / 16``) consistently."""
    cfg = json.loads(json.dumps(cfg))
    cfg["image_size"] = int(size)
    layer = cfg["memory_attention"]["layer"]
    for att in ("self_attention", "cross_attention"):
        layer[att]["feat_sizes"] = [size // 16, size // 16]
    return cfg


def infer_sam2_config(state: Mapping[str, torch.Tensor], path: str | Path, name: str) -> dict[str, Any]:
    """The package config matching a released SAM 2 / 2.1 checkpoint's shapes."""
    try:
        width = int(state["image_encoder.trunk.patch_embed.proj.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointError(
            f"checkpoint {path}: not a SAM 2 checkpoint (no Hiera image encoder: missing {exc}); "
            "a SAM/MedSAM file goes with --model sam or medsam"
        ) from exc
    rx = re.compile(r"image_encoder\.trunk\.blocks\.(\d+)\.")
    blocks = len({m.group(1) for k in state if (m := rx.match(k))})
    stem = VARIANTS.get((width, blocks))
    if stem is None:
        raise CheckpointError(
            f"checkpoint {path}: a Hiera trunk of width {width} with {blocks} blocks matches no released "
            f"SAM 2 config ({', '.join(sorted(set(VARIANTS.values())))}); save it with its config "
            f"(semisam.generalists.sam2_model.save_sam2)"
        )
    cfg = _package_config(stem, v21="no_obj_embed_spatial" in state)
    return set_image_size(cfg, DEFAULT_IMAGE_SIZE.get(name, 1024))


def build_sam2_module(cfg: Mapping[str, Any], name: str = "sam2") -> Sam2Model:
    """Instantiate a randomly initialised SAM 2 video predictor from a model config dict (eval, CPU)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    full = json.loads(json.dumps(dict(cfg)))
    full["_target_"] = "sam2.sam2_video_predictor.SAM2VideoPredictor"
    for k, v in VIDEO_OVERRIDES.items():
        full[k] = v
    predictor = instantiate(OmegaConf.create(full), _recursive_=True)
    return Sam2Model(name, predictor.eval(), dict(cfg))


def save_sam2(model: Sam2Model, path: str | Path) -> Path:
    """Write weights + the model config as ``.safetensors`` (config in the metadata), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.predictor.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={METADATA_KEY: json.dumps(model.config)})
    return path


def _metadata_config(path: Path) -> dict[str, Any] | None:
    if path.suffix != ".safetensors":
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception:  # unreadable files are reported by read_state_dict with a clear message
        return None
    if METADATA_KEY not in meta:
        return None
    try:
        cfg = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"checkpoint {path}: its {METADATA_KEY!r} metadata is not valid JSON ({exc}); re-save it with "
            "semisam.generalists.sam2_model.save_sam2"
        ) from exc
    if not isinstance(cfg, dict) or "image_size" not in cfg:
        raise CheckpointError(
            f"checkpoint {path}: its {METADATA_KEY!r} metadata is not a SAM 2 model config "
            f"(expected an object with 'image_size', got {type(cfg).__name__})"
        )
    return cfg


def build_sam2(
    checkpoint: str | Path | None, device: torch.device | str = "cpu", name: str = "sam2"
) -> Sam2Model:
    """SAM 2 / MedSAM2 from a user checkpoint (``.pt`` from the releases, or ``.safetensors`` from save_sam2).

    Raises:
        CheckpointError: no file given, or the file is missing, corrupt, pickled objects, or not SAM 2.
    """
    if checkpoint is None:
        raise CheckpointError(
            f"generalist {name!r} needs a checkpoint file (e.g. --model {name}:/path/to/sam2.1_hiera_tiny.pt); "
            "no weights are bundled"
        )
    path = Path(checkpoint)
    state = read_state_dict(path)
    cfg = _metadata_config(path) or infer_sam2_config(state, path, name)
    try:
        model = build_sam2_module(cfg, name)
    except Exception as exc:  # hydra wraps whatever a bad config raises in its own exception types
        raise CheckpointError(
            f"checkpoint {path}: its model config does not build a SAM 2 model ({type(exc).__name__}: {exc})"
        ) from exc
    load_strict(model.predictor, state, path, "SAM 2")
    model.checkpoint_path = str(path)
    model.weights_digest = checkpoint_sha256(path)
    return model.to(device)


class Sam2Model:
    """A SAM 2 video predictor behind :class:`~semisam.generalists.base.PromptableModel`.

    Attributes:
        predictor: the ``sam2.sam2_video_predictor.SAM2VideoPredictor`` (an ``nn.Module``).
        config: the model config it was built from (saved with the weights by :func:`save_sam2`).
    """

    def __init__(self, name: str, predictor, config: dict[str, Any]) -> None:
        self.name = name
        self.predictor = predictor
        self.config = config
        self.image_size = int(predictor.image_size)
        self.checkpoint_path: str | None = None
        #: SHA-256 of the checkpoint file (set by :func:`build_sam2`), else of the state dict (computed at
        #: the first :attr:`identity`)
        self.weights_digest: str | None = None
        s = self.image_size
        self._feat_sizes = [(s // 4, s // 4), (s // 8, s // 8)]

    @property
    def device(self) -> torch.device:
        return next(self.predictor.parameters()).device

    @property
    def identity(self) -> str:
        """The embedding cache's model key: name, weights digest, runtime and device (see SamLikeModel)."""
        if self.weights_digest is None:
            from .onnx_cache import weights_sha256

            self.weights_digest = weights_sha256(self.predictor)
        return f"{self.name}|weights:{self.weights_digest[:16]}|eager|{self.device}"

    def to(self, device) -> Sam2Model:
        self.predictor.to(device)
        return self

    def frames_to_model(self, frames: np.ndarray) -> torch.Tensor:
        """``(Z, H, W)`` or ``(H, W)`` float ``[0, 1]`` -> ``(Z, 3, S, S)`` normalised frames on the device."""
        f = torch.as_tensor(np.ascontiguousarray(frames, dtype=np.float32), device=self.device)
        if f.ndim == 2:
            f = f[None]
        if f.ndim != 3:
            raise ValueError(f"{self.name}: expected (Z, H, W) or (H, W) frames, got shape {tuple(f.shape)}")
        f = F.interpolate(
            f[:, None], size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        f = f.expand(-1, 3, -1, -1)
        mean = torch.tensor(IMG_MEAN, device=f.device).view(1, 3, 1, 1)
        std = torch.tensor(IMG_STD, device=f.device).view(1, 3, 1, 1)
        return ((f - mean) / std).contiguous()

    # ------------------------------------------------------------------ per-slice protocol
    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> SliceEmbedding:
        """Encode one slice ``(H, W)`` in ``[0, 1]``; ``features`` = ``(1, C, S/16, S/16)``, high-res in extras."""
        if np.asarray(image).ndim != 2:
            raise ValueError(f"{self.name}: encode expects one 2D slice (H, W), got shape {np.shape(image)}")
        p = self.predictor
        backbone_out = p.forward_image(self.frames_to_model(image))
        _, vision_feats, _, _ = p._prepare_backbone_features(backbone_out)
        if p.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + p.no_mem_embed
        sizes = self._feat_sizes + [(self.image_size // 16, self.image_size // 16)]
        feats = [f.permute(1, 2, 0).reshape(1, -1, *sz) for f, sz in zip(vision_feats, sizes, strict=True)]
        return SliceEmbedding(
            features=feats[-1],
            slice_shape=(int(image.shape[0]), int(image.shape[1])),
            extras={"high_res_0": feats[0], "high_res_1": feats[1]},
        )

    def _to_model_xy(self, xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        h, w = shape
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return (xy * np.array([self.image_size / w, self.image_size / h])).astype(np.float32)

    def _sparse_inputs(self, prompt: SlicePrompt, shape: tuple[int, int]):
        """``(coords (1, N, 2), labels (1, N))`` in model pixels; a box becomes points labelled 2 and 3."""
        h, w = shape
        coords, labels = [], []
        if prompt.box is not None:
            box = np.asarray(prompt.box, dtype=np.float64).reshape(4)
            if not np.all(np.isfinite(box)) or box[2] < box[0] or box[3] < box[1]:
                raise PromptError(f"box {tuple(box)} must be finite with x0 <= x1 and y0 <= y1")
            if box[2] < 0 or box[3] < 0 or box[0] > w - 1 or box[1] > h - 1:
                raise PromptError(f"box {tuple(box)} lies outside the slice of shape (H={h}, W={w})")
            coords.append(self._to_model_xy(box, shape))
            labels.append(np.array([2, 3]))
        if prompt.points is not None and len(prompt.points):
            pts = np.asarray(prompt.points, dtype=np.float64).reshape(-1, 2)
            lab = (
                np.ones(len(pts))
                if prompt.point_labels is None
                else np.asarray(prompt.point_labels).reshape(-1)
            )
            if len(lab) != len(pts):
                raise PromptError(f"{len(pts)} points but {len(lab)} point labels")
            out = (pts[:, 0] < -0.5) | (pts[:, 0] > w - 0.5) | (pts[:, 1] < -0.5) | (pts[:, 1] > h - 0.5)
            if out.any():
                raise PromptError(f"points {pts[out].tolist()} lie outside the slice of shape (H={h}, W={w})")
            coords.append(self._to_model_xy(pts, shape))
            labels.append(lab)
        if not coords:
            return None
        c = torch.as_tensor(np.concatenate(coords)[None], device=self.device)
        lab_t = torch.as_tensor(np.concatenate(labels)[None], dtype=torch.int32, device=self.device)
        return c, lab_t

    @torch.inference_mode()
    def predict(self, embedding: SliceEmbedding, prompt: SlicePrompt) -> SlicePrediction:
        """Answer one prompt from a cached embedding (SAM 2's image path); logits at the slice's ``(H, W)``."""
        p = self.predictor
        shape = embedding.slice_shape
        points = self._sparse_inputs(prompt, shape)
        masks = None
        if prompt.mask is not None:
            m = np.asarray(prompt.mask)
            if m.shape != tuple(shape):
                raise PromptError(f"mask prompt has shape {m.shape}, the slice is {tuple(shape)}")
            if m.dtype == bool:
                m = np.where(m, BINARY_MASK_LOGIT, -BINARY_MASK_LOGIT)
            side = p.sam_prompt_encoder.mask_input_size[0]
            masks = F.interpolate(
                torch.as_tensor(m, dtype=torch.float32, device=self.device)[None, None],
                size=(side, side),
                mode="bilinear",
                align_corners=False,
            )
        if points is None and masks is None:
            raise PromptError("an empty prompt: give a box, points or a mask")
        multimask = prompt.box is None and masks is None and points is not None and points[0].shape[1] == 1
        sparse, dense = p.sam_prompt_encoder(points=points, boxes=None, masks=masks)
        low_res, iou, _, _ = p.sam_mask_decoder(
            image_embeddings=embedding.features,
            image_pe=p.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=False,
            high_res_features=[embedding.extras["high_res_0"], embedding.extras["high_res_1"]],
        )
        best = int(torch.argmax(iou[0])) if multimask else 0
        logits = F.interpolate(
            low_res[:, best : best + 1].float(), size=shape, mode="bilinear", align_corners=False
        )
        return SlicePrediction(logits=logits[0, 0].cpu().numpy(), score=float(iou[0, best].clamp(0, 1)))

    # ------------------------------------------------------------------ volume propagation (memory bank)
    @torch.inference_mode()
    def propagate_volume(
        self, frames: np.ndarray, prompts: Mapping[int, SlicePrompt]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Segment a volume from prompts on key slices with SAM 2's memory bank (slices as video frames).

        Args:
            frames: ``(Z, H, W)`` float32 slices in ``[0, 1]`` (one axis of a windowed volume).
            prompts: slice index -> prompt on that slice (box and/or points, or a mask), slice pixels.

        Returns:
            ``logits`` ``(Z, H, W)`` float32 (``> 0`` = object; SAM 2 writes -1024 on slices where it
            decides the object is absent) and ``scores`` ``(Z,)`` in ``[0, 1]``: the
            sigmoid of SAM 2's object-presence logit on each slice (low where the structure has ended).
        """
        frames = np.asarray(frames)
        if frames.ndim != 3:
            raise ValueError(f"frames must be (Z, H, W), got shape {frames.shape}")
        if not prompts:
            raise PromptError("propagate_volume needs at least one prompted slice")
        z = frames.shape[0]
        bad = [k for k in prompts if not 0 <= int(k) < z]
        if bad:
            raise PromptError(f"prompted slices {bad} outside 0..{z - 1}")
        p = self.predictor
        state = init_state_from_frames(p, self.frames_to_model(frames), frames.shape[1:])
        shape = (int(frames.shape[1]), int(frames.shape[2]))
        for k in sorted(prompts):
            pr = prompts[k]
            if pr.mask is not None and pr.box is None and pr.points is None:
                p.add_new_mask(
                    state, frame_idx=int(k), obj_id=1, mask=torch.as_tensor(np.asarray(pr.mask) > 0)
                )
                continue
            pts = self._sparse_inputs(pr, shape)
            if pts is None:
                raise PromptError(f"slice {k}: an empty prompt")
            coords, labels = pts
            # Our coordinates are already in model pixels, so normalize_coords=False.
            p.add_new_points_or_box(
                state, frame_idx=int(k), obj_id=1, points=coords[0], labels=labels[0], normalize_coords=False
            )
        # NaN marks "not produced yet": every slice must be written by one of the two passes.
        logits = np.full((z,) + shape, np.nan, dtype=np.float32)
        first = min(prompts)
        for reverse in (False, True):
            for idx, _, masks in p.propagate_in_video(state, start_frame_idx=first, reverse=reverse):
                logits[idx] = masks[0, 0].float().cpu().numpy()
        missing = np.nonzero(np.isnan(logits).any(axis=(1, 2)))[0]
        if len(missing):
            raise RuntimeError(f"SAM 2 propagation produced no output for slices {missing.tolist()}")
        scores = np.zeros(z, dtype=np.float32)
        out = state["output_dict_per_obj"][0]
        for kind in ("non_cond_frame_outputs", "cond_frame_outputs"):
            for idx, o in out[kind].items():
                scores[idx] = float(torch.sigmoid(o["object_score_logits"].float()).reshape(-1)[0])
        return logits, scores


def init_state_from_frames(predictor, images: torch.Tensor, slice_shape: tuple[int, int]) -> dict[str, Any]:
    """SAM 2's video inference state built from in-memory frames instead of a JPEG folder.

    Mirrors ``SAM2VideoPredictor.init_state`` field by field, with ``images`` already resized to
    ``image_size`` and normalised (``(Z, 3, S, S)`` float32 on the model's device) and the "video"
    resolution set to the slice's ``(H, W)`` so outputs come back at slice pixels.
    """
    h, w = slice_shape
    dev = predictor.device
    state: dict[str, Any] = {
        "images": images,
        "num_frames": int(images.shape[0]),
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": False,
        "video_height": int(h),
        "video_width": int(w),
        "device": dev,
        "storage_device": dev,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }
    return state
