"""Worker for test_training_ddp: run under ``torch.distributed.run --nproc_per_node=2``.

Trains a few iterations with the real Trainer (DDP on gloo) and writes, per rank, a digest of the
student's and the mean teacher's weights and the loss terms it saw to ``OUT/rank<r>.json``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from semisam.model_folder import new_manifest
from semisam.specialists import build_specialist
from semisam.store import LabeledStore
from semisam.training import ddp
from semisam.training.config import TrainConfig
from semisam.training.data import load_labeled, load_unlabeled
from semisam.training.methods import build_parts
from semisam.training.methods.base import TrainContext
from semisam.training.trainer import Trainer


def digest(tensors) -> str:
    h = hashlib.sha256()
    for v in tensors:
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    store_root, out = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)
    dist = ddp.init(ddp.from_env(), torch.device("cpu"))
    store = LabeledStore(store_root, clean=False)
    man = new_manifest(
        "mamba_unet", ["lesion"], "CT", kwargs={"channels": [8, 16, 24, 32, 48], "mamba_depth": 1}
    )
    cfg = TrainConfig(
        method="mean_teacher",
        iterations=3,
        device="cpu",
        crop_size=[48, 48],
        batch_size=2,
        checkpoint_every=100,
        warmup=0,
    )
    torch.manual_seed(cfg.seed)  # as the job does: the same initial weights on every rank
    student = build_specialist(man.arch, **man.kwargs).train()
    ctx = TrainContext(
        config=cfg,
        device=torch.device("cpu"),
        student=student,
        manifest=man,
        store=store,
        cache=store_root / "cache",
        rank=dist.rank,
        world_size=dist.world_size,
    )
    ctx.labeled = load_labeled(store, store.train_ids(), man)
    ctx.unlabeled = load_unlabeled(store, [r.scan_id for r in store.unlabeled()], man)
    parts = build_parts(cfg.part_names, {}, ctx)
    for p in parts:
        p.setup(ctx)
    losses = []
    ctx.emit = lambda e: losses.append(e["losses"]) if e["event"] == "iteration" else None
    trainer = Trainer(ctx, parts, dist, out / f"run{dist.rank}", {"config": cfg.to_json()})
    trainer.run(0)
    (out / f"rank{dist.rank}.json").write_text(
        json.dumps(
            {
                "student": digest(student.parameters()),
                "buffers": digest(student.buffers()),
                "teacher": digest(parts[1].teacher.parameters()),
                "losses": losses,
                "world_size": dist.world_size,
                "backend": dist.backend,
            }
        )
    )
    ddp.shutdown(dist)


if __name__ == "__main__":
    main()
