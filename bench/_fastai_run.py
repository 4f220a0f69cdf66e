"""fastai ``vision_learner`` + ``fine_tune(2)`` on the same weights and split (runs in bench/.venv-fastai)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main(name: str) -> None:
    import pandas as pd
    from fastai.vision.all import ImageDataLoaders, Resize, accuracy, vision_learner

    from graft.backbones import create_backbone
    from graft.data.scan import scan_dataset

    t0 = time.perf_counter()
    splits = scan_dataset(REPO.parent / "shared" / "datasets" / name, seed=0)
    # fastai joins ``path`` and the file column as strings: give it paths relative to "/".
    rows = [
        (str(Path(r.path).resolve())[1:], splits.classes[r.label], s == "val")
        for s in ("train", "val")
        for r in splits.splits[s]
    ]
    df = pd.DataFrame(rows, columns=["path", "label", "is_valid"])
    dls = ImageDataLoaders.from_df(
        df,
        path="/",
        fn_col="path",
        label_col="label",
        valid_col="is_valid",
        item_tfms=Resize(224),
        bs=32,
        num_workers=1,
    )

    def arch(pretrained: bool = True, **kw):
        return create_backbone("efficientnet_lite0").model  # same offline ImageNet weights

    learn = vision_learner(dls, arch, metrics=accuracy, n_out=len(splits.classes), cut=None, pretrained=True)
    learn.fine_tune(2)
    acc = float(learn.validate()[1])
    print(json.dumps({"dataset": name, "val_acc": acc, "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main(sys.argv[1])
