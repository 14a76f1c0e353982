"""A faster prompt path for CPU: prompt encoder + mask decoder exported once to ONNX, run by onnxruntime.

The exported graph follows segment-anything's own ONNX recipe (``segment_anything.utils.onnx``): points and
box corners enter as one padded point list with labels (-1 padding, 0 negative, 1 positive, 2/3 box
corners), the mask prompt with a ``has_mask_input`` flag. It returns all four low-resolution masks and
their predicted IoU; choosing between them and resizing to the slice stay in :class:`SamLikeModel`, so the
eager and the fast path share that code. Cached like the encoder export (see :mod:`.fast_encoder`).
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from semisam.fileio import atomic_path

from .onnx_cache import cached_session, onnx_cache_dir, weights_sha256

#: bump when the decoder graph changes, so stale cached exports are not reused
DECODER_VERSION = "2"

log = logging.getLogger(__name__)


class _DecoderGraph(nn.Module):
    """``(embeddings, coords, labels, mask_input, has_mask)`` -> ``(low_res (1, 4, m, m), iou (1, 4))``."""

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module, image_size: int) -> None:
        super().__init__()
        self.pe = prompt_encoder
        self.dec = mask_decoder
        self.image_size = image_size

    def forward(self, embeddings, coords, labels, mask_input, has_mask):
        pe = self.pe
        # PromptEncoder._embed_points, written without data-dependent control flow (as in SAM's ONNX export)
        pts = (coords + 0.5) / self.image_size
        emb = pe.pe_layer._pe_encoding(pts)
        lab = labels.unsqueeze(-1).expand_as(emb)
        emb = emb * (lab != -1) + pe.not_a_point_embed.weight * (lab == -1)
        for i in range(pe.num_point_embeddings):
            emb = emb + pe.point_embeddings[i].weight * (lab == i)
        dense = has_mask * pe.mask_downscaling(mask_input)
        dense = dense + (1 - has_mask) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return self._predict_masks(embeddings + dense, pe.get_dense_pe(), emb)

    def _predict_masks(self, src, pos, sparse):
        """``MaskDecoder.predict_masks`` for one image, with the upscaling kept channels-last.

        The two 2x2/stride-2 transposed convolutions become a matrix product plus a depth-to-space
        reshuffle (the same arithmetic: the kernel windows do not overlap), and LayerNorm2d becomes a
        last-axis layer norm. onnxruntime runs ConvTranspose and the channel-axis ReduceMean of the NCHW
        form slowly on CPU: 33 + 17 of ~210 ms per prompt in a single-thread profile under load.
        """
        dec = self.dec
        tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)[None]
        tokens = torch.cat((tokens, sparse), dim=1)
        _, c, h, w = src.shape
        hs, x = dec.transformer(src, pos, tokens)  # x: (1, h*w, c) image tokens, row-major
        up0, ln, act0, up1, act1 = dec.output_upscaling
        x = _deconv2x2_channels_last(x.reshape(h, w, c), up0)  # (2h, 2w, c/4)
        x = act0(torch.nn.functional.layer_norm(x, (x.shape[-1],), ln.weight, ln.bias, ln.eps))
        x = act1(_deconv2x2_channels_last(x, up1))  # (4h, 4w, c/8)
        mask_tokens = hs[:, 1 : 1 + dec.num_mask_tokens, :]
        hyper = torch.stack(
            [mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1
        )  # (1, n, c/8)
        hh, ww, cc = x.shape
        masks = (hyper @ x.reshape(hh * ww, cc).transpose(0, 1)).reshape(1, -1, hh, ww)
        iou = dec.iou_prediction_head(hs[:, 0, :])
        return masks, iou


def _deconv2x2_channels_last(x: torch.Tensor, deconv: nn.ConvTranspose2d) -> torch.Tensor:
    """``ConvTranspose2d(kernel 2, stride 2)`` on a channels-last ``(H, W, Cin)`` map -> ``(2H, 2W, Cout)``."""
    h, w, cin = x.shape
    weight = deconv.weight  # (Cin, Cout, 2, 2)
    cout = weight.shape[1]
    wm = weight.permute(0, 2, 3, 1).reshape(cin, 4 * cout)  # columns ordered (a, b, cout)
    y = (x.reshape(h * w, cin) @ wm).reshape(h, w, 2, 2, cout)
    y = y.permute(0, 2, 1, 3, 4).reshape(2 * h, 2 * w, cout)
    return y + deconv.bias


class OrtDecoder:
    """Runs the exported decoder; exports (or reuses the cached file) lazily at the first call."""

    def __init__(self, model, threads: int = 1) -> None:
        self.model = model
        # One thread: a prompt is ~3.5 GFLOP of small matrix products, where a second thread mostly adds
        # synchronisation. Measured interleaved on the shared 2-core machine: 1 thread 123 ms wall /
        # 83 CPU-ms median vs 2 threads 201-208 ms / 130-136 CPU-ms.
        self.threads = threads
        self._session = None
        self._lock = threading.Lock()
        self.path: Path | None = None

    def _export(self, path: Path) -> None:
        m = self.model
        graph = _DecoderGraph(m.prompt_encoder, m.mask_decoder, m.image_size).eval()
        c = m.prompt_encoder.embed_dim
        e = m.prompt_encoder.image_embedding_size
        side = m.mask_input_size
        dummy = (
            torch.randn(1, c, e[0], e[1]),
            torch.rand(1, 3, 2) * m.image_size,
            torch.tensor([[1.0, 2.0, 3.0]]),
            torch.zeros(1, 1, side, side),
            torch.zeros(1),
        )
        with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                dummy,
                str(tmp),
                input_names=["embeddings", "coords", "labels", "mask_input", "has_mask"],
                output_names=["masks", "iou"],
                dynamic_axes={"coords": {1: "points"}, "labels": {1: "points"}},
                opset_version=17,
                dynamo=False,
            )

    def _ensure(self):
        with self._lock:
            if self._session is None:
                m = self.model
                key = weights_sha256(nn.ModuleList([m.prompt_encoder, m.mask_decoder]))[:32]
                path = onnx_cache_dir() / f"decoder-{key}-s{m.image_size}-v{DECODER_VERSION}.onnx"
                self._session = cached_session(path, self._export, self.threads, "prompt decoder")
                self.path = path
            return self._session

    def __call__(
        self,
        embeddings: torch.Tensor,
        coords: np.ndarray,
        labels: np.ndarray,
        mask_input: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All four low-res masks ``(1, 4, m, m)`` and IoU ``(1, 4)`` as CPU tensors.

        Args:
            embeddings: ``(1, C, h, w)`` image features.
            coords: ``(N, 2)`` model-frame points (box corners included), labels ``(N,)`` in -1..3.
            mask_input: ``(1, 1, m, m)`` mask logits or ``None``.
        """
        sess = self._ensure()
        side = self.model.mask_input_size
        mask = np.zeros((1, 1, side, side), np.float32) if mask_input is None else mask_input.cpu().numpy()
        feeds = {
            "embeddings": np.ascontiguousarray(embeddings.detach().cpu().numpy(), dtype=np.float32),
            "coords": np.asarray(coords, np.float32)[None],
            "labels": np.asarray(labels, np.float32)[None],
            "mask_input": np.ascontiguousarray(mask, dtype=np.float32),
            "has_mask": np.array([0.0 if mask_input is None else 1.0], np.float32),
        }
        masks, iou = sess.run(["masks", "iou"], feeds)
        return torch.from_numpy(masks), torch.from_numpy(iou)
