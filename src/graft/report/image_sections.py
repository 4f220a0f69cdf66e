"""Report sections built from images: the most confident mistakes and Grad-CAM overlays."""

from __future__ import annotations

from typing import Any

import numpy as np

from graft.report import html as H
from graft.report.inputs import Figures, RunFiles, val_arrays

__all__ = ["top_losses_section", "gradcam_section"]

N_TOP_LOSSES = 12  # images in the top-losses grid
N_GRADCAM = 8  # Grad-CAM overlays (half wrong at most): keeps the report a few seconds


def _preprocessing(rf: RunFiles):
    from graft.transforms.eval import Preprocessing

    pre = rf.model_config.get("preprocessing") or (rf.metrics.get("backbone") or {}).get("preprocessing")
    return Preprocessing.from_dict(pre) if pre else Preprocessing()


def _ranked(rf: RunFiles) -> tuple[list[str], np.ndarray, np.ndarray, list[str], np.ndarray] | None:
    va = val_arrays(rf)
    if va is None:
        return None
    paths, y, probs, classes = va
    loss = -np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))
    return paths, y, probs, classes, np.argsort(-loss, kind="stable")


def top_losses_section(rf: RunFiles, figs: Figures) -> str | None:
    r = _ranked(rf)
    if r is None:
        return None
    paths, y, probs, classes, order = r
    from graft.explain.target import prepare_image

    pre = _preprocessing(rf)
    images = []
    caps = []
    cols = []
    missing = 0
    outside = 0
    for i in order[:N_TOP_LOSSES]:
        path = rf.dataset_image(paths[i])
        if path is None:
            outside += 1
            continue
        try:
            images.append(prepare_image(path, pre))
        except Exception:  # noqa: BLE001 - dataset moved or file changed since training
            missing += 1
            continue
        pred = int(probs[i].argmax())
        caps.append(
            f"true {classes[y[i]][:16]}\npred {classes[pred][:16]} ({probs[i, pred]:.2f})\np(true) {probs[i, y[i]]:.3f}"
        )
        cols.append("#b22" if pred != y[i] else "#222")
    n_wrong = int((probs.argmax(1) != y).sum())
    out = [
        H.note(
            f"The {len(images)} validation images with the highest loss (-log p(true class)); "
            f"red: misclassified ({n_wrong} of {len(y)} validation images are)."
        )
    ]
    if images:
        out.append(figs.add_photos("top_losses", images, caps, cols=6, colours=cols))
    if missing:
        out.append(H.note(f"{missing} image(s) could not be read any more (moved since training?).", warn=True))
    if outside:
        out.append(H.note(_outside_note(rf, outside), warn=True))
    return "".join(out)


def _outside_note(rf: RunFiles, n: int) -> str:
    return (
        f"{n} image(s) listed in val_predictions.json are not images of the run's dataset folder "
        f"({rf.run.get('data_dir') or 'not recorded'}) and were not read."
    )


def gradcam_section(rf: RunFiles, figs: Figures) -> str | None:
    r = _ranked(rf)
    if r is None or not (rf.dir / "model" / "config.json").exists():
        return None
    paths, y, probs, classes, order = r
    from graft.explain import gradcam_batch, load_target, overlay_heatmap, prepare_image

    target = load_target(rf.dir / "model")
    pred = probs.argmax(1)
    wrong = [int(i) for i in order if pred[i] != y[i]][: N_GRADCAM // 2]
    right = np.flatnonzero(pred == y)
    rng = np.random.default_rng(0)
    take: Any = rng.choice(right, size=min(len(right), N_GRADCAM - len(wrong)), replace=False) if len(right) else []
    groups = {"correct": sorted(int(i) for i in take), "wrong": wrong}
    images = []
    owners = []
    outside = 0
    for name, idx in groups.items():
        for i in idx:
            path = rf.dataset_image(paths[i])
            if path is None:
                outside += 1
                continue
            try:
                images.append(prepare_image(path, target.preprocessing))
                owners.append((name, i))
            except Exception:  # noqa: BLE001 - unreadable now; the rest still shows
                continue
    results = gradcam_batch(target, images, top_k=1) if images else []
    layer = results[0].layer if results else "?"
    out = [
        H.note(
            f"Where the model looks: Grad-CAM of the predicted class on layer {layer} "
            "(red: strongest evidence), for a sample of correct and wrong validation predictions."
        )
    ]
    for name in groups:
        ims = []
        caps = []
        for (owner, i), res in zip(owners, results):
            if owner == name:
                ims.append(overlay_heatmap(res.image, res.cam))
                caps.append(f"true {classes[y[i]][:16]}\npred {res.label[:16]} ({res.probability:.2f})")
        out.append(f"<h3>{name} predictions ({len(ims)})</h3>")
        if ims:
            out.append(figs.add_photos(f"gradcam_{name}", ims, caps, cols=4))
        else:
            out.append(H.note(f"No {name} predictions on the validation set."))
    if outside:
        out.append(H.note(_outside_note(rf, outside), warn=True))
    return "".join(out)


# --------------------------------------------------------------------------- facts
