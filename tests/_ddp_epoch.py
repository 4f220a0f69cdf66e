"""One fine-tuning epoch from fixed weights, run alone or as each rank of a torchrun job (test helper).

    python tests/_ddp_epoch.py DATA WEIGHTS OUT.safetensors
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_ddp_epoch.py DATA WEIGHTS OUT.safetensors

Both start from the same backbone weights and the same seeded head, so the trained
weights they write (rank 0) can be compared element by element.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from graft import distributed
from graft.backbones import create_backbone
from graft.network import GraftNet, HeadSpec, build_head
from graft.training.finetune.policy import FineTunePolicy
from graft.training.finetune.train import FineTuneConfig, TrainEnv, train_network


def main(data: Path, weights: Path, out: Path) -> None:
    distributed.init("cpu")
    torch.manual_seed(0)
    bb = create_backbone("test_efficientnet", weights=weights)
    classes = sorted(p.name for p in (data / "train").iterdir())
    head = build_head(HeadSpec("linear", int(bb.model.num_features), len(classes), dropout=0.0))
    net = GraftNet(bb.model, head)

    def split(name: str) -> tuple[list[str], np.ndarray]:
        files = [(str(f), i) for i, c in enumerate(classes) for f in sorted((data / name / c).iterdir())]
        return [f for f, _ in files], np.array([y for _, y in files])

    (tp, ty), (vp, vy) = split("train"), split("val")
    res = train_network(
        net,
        net.backbone,
        (tp, ty),
        (vp, vy),
        transforms=(bb.preprocessing, bb.preprocessing),
        config=FineTuneConfig(epochs=2, lr=1e-3, batch_size=len(tp), patience=5),
        policy=FineTunePolicy(unfreeze=-1, backbone_lr_ratio=1.0),
        env=TrainEnv(num_workers=0),
    )
    if distributed.is_main():
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out))
        out.with_suffix(".json").write_text(json.dumps(res.history))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
