"""Pseudo-labels for unlabeled cases: the specialist prompts a frozen generalist, the answer teaches back.

For each unlabeled case (``(Z, Y, X)`` on the model grid) and each axial slice where the specialist
predicts a class (its main 3D components, then each slice's connected components of ``prob >= 0.5``,
:mod:`semisam.training.methods.semi.prompting`):

1. prompts come from the specialist's own probability map (box + points; ``rounds`` draws), never from
   a label: unlabeled cases have none (``CaseData.mask is None``) and nothing here reads one;
2. every generalist answers every round from its slice embedding (:class:`.embedding_store.
   EmbeddingStore`, encoded once per slice content); a class's probability on the
   slice is the max over its components' answers, then the mean ``p`` over rounds and generalists;
3. confidence, per slice: the mean predicted IoU ``s`` of the answers, and the Dice ``a`` between the
   generalist's mask (``p > 0.5``) and the specialist's; a slice teaches only when ``s >= min_score``
   and ``a >= min_agreement`` (a generalist answer that has nothing to do with what was asked for is
   dropped). Per pixel: ``w = s * clip(1 - 2 std, 0, 1) * |2 p - 1|`` where ``std`` is the spread over
   rounds/generalists: pixels whose answer changes with the prompt or the model, and the boundary band
   where ``p`` is near 0.5, count less;
4. the pseudo-label is ``argmax`` of ``(1 - max_c p_c, p_1, ...)``; slices without any prompt get
   weight 0 (the generalist said nothing there).

With a presence probe (:meth:`PseudoLabeler.set_presence`, :mod:`.presence`), a class the
specialist predicts on a slice where the probe says it is absent is not prompted there (*refused*); the
pixels the specialist gave it then teach background at ``absent_weight`` (0 by default: nothing).

Two case-level gates keep a weak specialist's noise from teaching (a prompt made from noise gets an
answer about noise, and the per-slice gate alone cannot tell: a box drawn around a speck always gets a
speck-sized answer):

* **localisation** (before any prompt): the specialist's *coherence* for a class, the share of its
  predicted foreground voxels inside the main 3D components (:func:`.prompting.coherence`), must be
  ``>= min_coherence``; otherwise that class is not prompted in this case (and costs no encoder run).
  A specialist that still predicts scattered specks scores low; one that has localised the structure
  (one solid component per part) scores near 1.
* **case agreement** (after): the Dice, over the prompted slices, between the generalist's pseudo-label
  and the specialist's main components must be ``>= min_case_agreement`` for every prompted class;
  otherwise the whole case gets weight 0 until the next refresh.

Results are cached on disk under ``cache_dir/<generalists+settings digest>/<case>-<case sha>-<specialist
sha>[-<probe digest>].npz`` (label uint8, weight fp16, per-slice score/agreement), so a second run with the same
specialist weights costs a file read; a better specialist (new weights sha) gets new pseudo-labels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semisam.generalists.base import PromptableModel, model_identity
from semisam.generalists.view import answer_box, mark
from semisam.metrics import dice

from .embedding_store import EmbeddingStore
from .presence import PresenceProbe
from .prompting import PromptConfig, coherence, main_components_mask, prompts_from_prediction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConfidenceConfig:
    """When a generalist answer teaches (see the module docstring: step 3, the gates, the presence probe)."""

    min_score: float = 0.5
    min_agreement: float = 0.5
    min_coherence: float = 0.6
    min_case_agreement: float = 0.5
    #: weight of the background taught on a slice where the specialist predicted the class but the
    #: presence probe (:mod:`.presence`) says it is absent; 0 = such a slice teaches nothing
    absent_weight: float = 0.0
    #: teach only the pixels where the generalist's label equals the specialist's own (argmax of its main
    #: components): a pixel the two models disagree on teaches nothing
    consensus: bool = False

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        for k in ("absent_weight", "consensus"):  # at their defaults: caches made before them stay valid
            if not out[k]:
                del out[k]
        return out


@dataclass
class PseudoLabel:
    """One case's pseudo-label on the model grid.

    Attributes:
        label: ``(Z, Y, X)`` uint8 class indices.
        weight: ``(Z, Y, X)`` float32 per-pixel confidence in [0, 1] (0 = does not teach).
        score: ``(Z,)`` mean predicted IoU of the generalist answers (0 where not prompted).
        agreement: ``(Z,)`` Dice between the generalist's and the specialist's masks (NaN where not prompted).
        prompted: ``(Z,)`` bool, slices where the specialist's prediction prompted the generalist.
        from_cache: loaded from disk rather than computed.
    """

    label: np.ndarray
    weight: np.ndarray
    score: np.ndarray
    agreement: np.ndarray
    prompted: np.ndarray
    from_cache: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


def weights_sha(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state (names, shapes and bytes in key order): the specialist's version key."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def predict_volume(
    student: torch.nn.Module, image: torch.Tensor, device: torch.device, chunk: int = 8
) -> np.ndarray:
    """The student's class probabilities ``(C, Z, Y, X)`` float32 for ``image`` ``(Z, Y, X)`` in [0, 1].

    2.5D students see stacks of ``in_slices`` neighbours (edge slices repeated, as inference does);
    3D students the whole volume padded to a multiple of 16. Eval mode during the call, restored after.
    """
    was_training = student.training
    student.eval()
    try:
        x = image.to(device=device, dtype=torch.float32)
        if str(getattr(student, "input_kind", "3d")) == "2.5d":
            depth = x.shape[0]
            r = int(getattr(student, "in_slices", 1)) // 2
            out = []
            for z0 in range(0, depth, chunk):
                z1 = min(z0 + chunk, depth)
                idx = torch.arange(z0 - r, z1 + r, device=x.device).clamp_(0, depth - 1)
                stacks = x[idx].unfold(0, 2 * r + 1, 1).permute(0, 3, 1, 2).contiguous()
                out.append(torch.softmax(student(stacks).float(), dim=1).cpu())
            return torch.cat(out).permute(1, 0, 2, 3).numpy()
        pads = [(-s) % 16 for s in x.shape]
        xp = torch.nn.functional.pad(x[None, None], (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate")
        prob = torch.softmax(student(xp).float(), dim=1)[0]
        return prob[:, : x.shape[0], : x.shape[1], : x.shape[2]].cpu().numpy()
    finally:
        student.train(was_training)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))


class PseudoLabeler:
    """Pseudo-labels from one or more frozen generalists prompted by a specialist's prediction.

    Args:
        generalists: the frozen generalists (several are fused: mean probability).
        embeddings: the shared slice-embedding store.
        cache_dir: pseudo-label cache folder (``STORE/cache/pseudo_labels``), or ``None`` for no cache.
        prompt: prompt sampling settings.
        confidence: when an answer teaches.
        seed: seeds the point draws (with the case sha, slice, class and specialist sha).
    """

    def __init__(
        self,
        generalists: Sequence[PromptableModel],
        embeddings: EmbeddingStore,
        cache_dir: str | os.PathLike | None,
        prompt: PromptConfig | None = None,
        confidence: ConfidenceConfig | None = None,
        seed: int = 0,
    ) -> None:
        if not generalists:
            raise ValueError("pseudo-labelling needs at least one generalist")
        self.generalists = list(generalists)
        self.embeddings = embeddings
        self.prompt = prompt or PromptConfig()
        self.confidence = confidence or ConfidenceConfig()
        self.seed = int(seed)
        self.decoder_calls = 0
        #: set by the caller (:meth:`set_presence`): refuses prompts on slices without the structure
        self.presence: PresenceProbe | None = None
        self._cache_root = None if cache_dir is None else Path(cache_dir)
        self.rekey()

    def rekey(self) -> None:
        """Name the cache folder after the generalists as they answer now: call it after a decoder was
        trained in place (the ``cotrain`` part), so no pseudo-label of the previous decoder is read back."""
        settings = {
            "generalists": [model_identity(g) for g in self.generalists],
            # the identity names the encoder (embeddings are shared); an adapted decoder answers otherwise
            "decoders": [
                weights_sha(g.mask_decoder)[:16] if hasattr(g, "mask_decoder") else None
                for g in self.generalists
            ],
            "prompt": self.prompt.to_json(),
            "confidence": self.confidence.to_json(),
            "seed": self.seed,
            "format": 2,
        }
        self.settings_sha = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        self.cache_dir = None if self._cache_root is None else self._cache_root / self.settings_sha[:16]

    def _answer(self, g, whole, prompt, image2d: np.ndarray):
        """``g``'s answer to ``prompt`` on the ``(H, W)`` slice ``image2d``, through a closer view where the
        product's Propagate would look closer (:attr:`PromptConfig.views`); counts decoder calls."""
        if not self.prompt.views:
            self.decoder_calls += 1
            return g.predict(whole, prompt)

        def view_embedding(v):
            self.decoder_calls += 1  # the view's answer is a second decoder call
            return mark(self.embeddings.get_or_encode(g, v.crop(image2d)), v, image2d.shape)

        self.decoder_calls += 1
        return answer_box(g, whole, view_embedding, prompt, image2d.shape)

    def set_presence(self, probe: PresenceProbe | None) -> None:
        """Use a fitted presence probe from now on (``None``: none); it is part of the cache key."""
        self.presence = probe

    # ------------------------------------------------------------------ cache
    def cache_path(self, case_id: str, case_sha: str, specialist_sha: str) -> Path | None:
        if self.cache_dir is None:
            return None
        probe = f"-{self.presence.digest[:8]}" if self.presence is not None else ""
        return self.cache_dir / f"{case_id}-{(case_sha or 'nosha')[:16]}-{specialist_sha[:16]}{probe}.npz"

    def _load(self, path: Path | None) -> PseudoLabel | None:
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return PseudoLabel(
                    label=z["label"],
                    weight=z["weight"].astype(np.float32),
                    score=z["score"],
                    agreement=z["agreement"],
                    prompted=z["prompted"],
                    from_cache=True,
                    stats=json.loads(str(z["stats"])),
                )
        except (OSError, ValueError, KeyError) as exc:
            log.warning("pseudo-label cache file %s is unreadable (%s); recomputing", path, exc)
            return None

    @staticmethod
    def _save(path: Path | None, pl: PseudoLabel) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez_compressed(
            tmp,
            label=pl.label,
            weight=pl.weight.astype(np.float16),
            score=pl.score,
            agreement=pl.agreement,
            prompted=pl.prompted,
            stats=np.asarray(json.dumps(pl.stats)),
        )
        os.replace(tmp, path)

    # ------------------------------------------------------------------ labelling
    def label_case(
        self,
        case_id: str,
        case_sha: str,
        image: np.ndarray,
        prob: np.ndarray,
        specialist_sha: str,
    ) -> PseudoLabel:
        """The pseudo-label of one case (cached).

        Args:
            case_id, case_sha: the case (the sha is the content digest: an edited scan is another key).
            image: ``(Z, Y, X)`` float32 in [0, 1] on the model grid (what the specialist saw).
            prob: ``(C, Z, Y, X)`` the specialist's class probabilities for ``image``.
            specialist_sha: :func:`weights_sha` of the specialist that produced ``prob``.
        """
        # Long: one case's pseudo-label, from cache key to weights, is one sequence of dependent steps (cache, encode, prompt rounds, 3D checks, confidence) that reads best in order.
        path = self.cache_path(case_id, case_sha, specialist_sha)
        cached = self._load(path)
        if cached is not None and cached.label.shape == image.shape:
            return cached
        n_classes, depth = prob.shape[0], image.shape[0]
        label = np.zeros(image.shape, dtype=np.uint8)
        weight = np.zeros(image.shape, dtype=np.float32)
        score = np.zeros(depth, dtype=np.float32)
        agreement = np.full(depth, np.nan, dtype=np.float32)
        prompted = np.zeros(depth, dtype=bool)
        refused = np.zeros(depth, dtype=bool)  # predicted there, but the presence probe says absent
        refused_px = np.zeros(image.shape, dtype=bool)  # the pixels predicted for refused classes
        case_key = int.from_bytes(
            hashlib.sha256(f"{case_sha}|{specialist_sha}".encode()).digest()[:4], "little"
        )
        main = [prob[0]]
        coh = []
        for c in range(1, n_classes):
            keep = main_components_mask(prob[c], self.prompt)  # labelled once for both uses
            coh.append(coherence(prob[c], self.prompt, keep))
            # Not localised yet: this class prompts nothing in this case (module docstring, gates).
            localised = coh[-1] >= self.confidence.min_coherence
            main.append(
                np.where(keep, prob[c], 0.0).astype(prob.dtype) if localised else np.zeros_like(prob[c])
            )
        prob = np.stack(main)
        for z in range(depth):
            gen_p, confs, scores, agrees = [], [], [], []
            absent = None
            embs: dict[int, Any] = {}  # per generalist, read once per slice for every class and the probe

            def embedding(g, z=z, embs=embs):
                if id(g) not in embs:
                    embs[id(g)] = self.embeddings.get_or_encode(g, image[z])
                return embs[id(g)]

            for c in range(1, n_classes):
                rng = np.random.default_rng([self.seed, case_key, z, c])
                rounds = prompts_from_prediction(prob[c, z], self.prompt, rng)
                if rounds and self.presence is not None:
                    if absent is None:
                        absent = self.presence.absent(embedding(self.presence.generalist))
                    if absent[c - 1]:
                        refused[z] = True
                        refused_px[z] |= prob[c, z] >= self.prompt.threshold
                        rounds = []
                if not rounds:
                    gen_p.append(np.zeros(image.shape[1:], dtype=np.float32))
                    continue
                answers, ious = [], []
                for g in self.generalists:
                    emb = embedding(g)
                    for prompts in rounds:
                        p = np.zeros(image.shape[1:], dtype=np.float32)
                        sc = []
                        for pr in prompts:
                            pred = self._answer(g, emb, pr, image[z])
                            p = np.maximum(p, _sigmoid(pred.logits.astype(np.float32)))
                            sc.append(float(pred.score))
                        answers.append(p)
                        ious.append(float(np.mean(sc)))
                stack = np.stack(answers)
                p_mean = stack.mean(0)
                spread = stack.std(0)
                s = float(np.mean(ious))
                a = dice(p_mean > 0.5, prob[c, z] >= self.prompt.threshold)
                ok = s >= self.confidence.min_score and a >= self.confidence.min_agreement
                conf = (s if ok else 0.0) * np.clip(1.0 - 2.0 * spread, 0.0, 1.0) * np.abs(2.0 * p_mean - 1.0)
                gen_p.append(p_mean)
                confs.append(conf)
                scores.append(s)
                agrees.append(a)
            if not confs:
                # Label stays 0 there: background where the specialist put a class that is not on the slice.
                weight[z][refused_px[z]] = self.confidence.absent_weight
                continue
            prompted[z] = True
            pc = np.stack(gen_p)  # (C-1, Y, X)
            best = pc.argmax(0)
            label[z] = np.where(pc.max(0) > 0.5, best + 1, 0).astype(np.uint8)
            weight[z] = np.min(np.stack(confs), axis=0)
            if self.confidence.consensus:
                spec = np.where(prob[1:, z].max(0) >= self.prompt.threshold, prob[1:, z].argmax(0) + 1, 0)
                weight[z][label[z] != spec] = 0.0
            score[z] = float(np.mean(scores))
            agreement[z] = float(np.mean(agrees))
        case_agree = []
        for c in range(1, n_classes):
            spec = prob[c][prompted] >= self.prompt.threshold
            if spec.any():
                case_agree.append(dice(label[prompted] == c, spec))
        gated = bool(case_agree) and min(case_agree) < self.confidence.min_case_agreement
        if gated:
            weight[:] = 0.0
        refused &= ~prompted
        stats = {
            "coherence": [round(float(v), 4) for v in coh],
            "case_agreement": [round(float(v), 4) for v in case_agree],
            "gated": gated,
            "prompted_slices": int(prompted.sum()),
            "refused_slices": int(refused.sum()),
            "teaching_slices": int((weight.reshape(depth, -1).max(1) > 0).sum()),
            "mean_score": float(score[prompted].mean()) if prompted.any() else None,
            "mean_agreement": float(np.nanmean(agreement)) if prompted.any() else None,
            "foreground_voxels": int((label > 0).sum()),
        }
        # The cache stores fp16 weights; hand out the same values now, so a result never depends on
        # whether the pseudo-label came from the cache.
        weight = weight.astype(np.float16).astype(np.float32)
        pl = PseudoLabel(label, weight, score, agreement, prompted, stats=stats)
        self._save(path, pl)
        return pl


def label_cases(
    labeler: PseudoLabeler,
    student: torch.nn.Module,
    cases: Sequence[Any],
    device: torch.device,
    progress: Callable[[int, int], None] | None = None,
    keep: dict[str, np.ndarray] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[PseudoLabel] | None:
    """Pseudo-labels for ``cases`` (:class:`~semisam.training.methods.base.CaseData`; ``mask`` is never read).

    ``keep``: when given, receives ``case_id -> (C, Z, Y, X)`` the specialist's probabilities of each case
    it predicted (not those read from the cache), for a caller that needs them next (``cotrain``).
    ``cancel``: checked after each case; ``None`` is returned once it is true (a refresh over whole scans
    takes minutes, and the run's cancel must not wait for it)."""
    sha = weights_sha(student)
    out = []
    for i, case in enumerate(cases):
        image = case.image.detach().to("cpu", torch.float32).numpy()
        path = labeler.cache_path(case.case_id, case.sha256, sha)
        cached = labeler._load(path)
        if cached is not None and cached.label.shape == image.shape:
            out.append(cached)
        else:
            prob = predict_volume(student, case.image, device)
            out.append(labeler.label_case(case.case_id, case.sha256, image, prob, sha))
            if keep is not None:
                keep[case.case_id] = prob
        if progress is not None:
            progress(i + 1, len(cases))
        if cancel is not None and cancel():
            return None
    return out
