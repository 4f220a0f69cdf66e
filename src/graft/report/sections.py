"""The report's sections: each takes the run files and returns HTML, or None when it has nothing to show."""

from __future__ import annotations

import shlex
from typing import Any

import numpy as np

from graft.report import html as H
from graft.report import plots as P
from graft.report.inputs import Figures, RunFiles, chosen_c, val_arrays

__all__ = [
    "dataset_section",
    "training_section",
    "baseline_section",
    "evaluation_section",
    "calibration_section",
    "facts_section",
    "learning_curve_section",
    "unlabeled_line",
]

_STAGE_TITLES = {
    "head": "head (frozen features)",
    "fine_tune": "fine-tuning",
    "baseline": "from-scratch baseline",
    "ladder": "transfer ladder (curves: the held-out slice of train, not val)",
}


def _metrics(rf: RunFiles) -> dict[str, Any] | None:
    """Validation metrics recomputed from val_predictions.json (cached on ``rf``)."""
    if not hasattr(rf, "_val_metrics"):
        from graft.metrics import compute_metrics

        va = val_arrays(rf)
        rf._val_metrics = compute_metrics(va[1], va[2], va[3]) if va else None  # type: ignore[attr-defined]
    return rf._val_metrics  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- dataset
def dataset_section(rf: RunFiles, figs: Figures) -> str | None:
    d = rf.data
    counts: dict[str, dict[str, int]] = d.get("counts") or rf.metrics.get("counts") or {}
    classes: list[str] = d.get("classes") or rf.metrics.get("classes") or []
    if not counts or not classes:
        return None
    splits = list(counts)
    rows = [[c] + [int(counts[s].get(c, 0)) for s in splits] for c in classes]
    rows.append(["total"] + [int(sum(counts[s].values())) for s in splits])
    out = [
        H.kv_table(
            [
                ("folder", d.get("root", rf.run.get("data_dir", "?"))),
                ("layout", d.get("layout", "?")),
                ("classes", len(classes)),
                ("imbalance (largest / smallest class)", float(d.get("imbalance_ratio") or 1.0)),
            ]
        ),
        "<h3>Images per class</h3>",
        H.table(["class"] + splits, rows),
        figs.add("class_counts", P.class_counts_figure(counts, classes), "images per class and split"),
    ]
    sizes = d.get("image_sizes") or {}
    if any(sizes.values()):
        srows = []
        for s, wh in sizes.items():
            if wh:
                a = np.asarray(wh)
                px = a[:, 0] * a[:, 1]
                lo = int(np.argmin(px))
                hi = int(np.argmax(px))
                srows.append(
                    [
                        s,
                        len(a),
                        f"{a[lo, 0]}x{a[lo, 1]}",
                        f"{int(np.median(a[:, 0]))}x{int(np.median(a[:, 1]))}",
                        f"{a[hi, 0]}x{a[hi, 1]}",
                    ]
                )
        out += [
            "<h3>Image sizes</h3>",
            H.table(["split", "images", "smallest", "median (w x h)", "largest"], srows),
            figs.add("image_sizes", P.image_sizes_figure(sizes), "image sizes scatter"),
        ]
    skipped = d.get("skipped") or rf.metrics.get("skipped") or []
    out.append(f"<h3>Skipped files ({len(skipped)})</h3>")
    if skipped:
        out.append(H.table(["file", "reason"], [[s.get("path", "?"), s.get("reason", "?")] for s in skipped[:200]]))
        if len(skipped) > 200:
            out.append(H.note(f"... and {len(skipped) - 200} more (see data.json)"))
    else:
        out.append(H.note("Every image file was readable."))
    ignored = d.get("ignored") or []
    if ignored:
        shown = ", ".join(str(i) for i in ignored[:20]) + (" ..." if len(ignored) > 20 else "")
        out.append(H.note(f"{len(ignored)} non-image files ignored: {shown}"))
    return "".join(out)


# --------------------------------------------------------------------------- training
def training_section(rf: RunFiles, figs: Figures) -> str | None:
    hist = rf.history
    if not hist:
        return None
    opts = rf.run.get("options") or {}
    stages = rf.metrics.get("stages") or {}
    rows = [
        [name, float(st.get("val_accuracy", float("nan"))), float(st.get("seconds", float("nan")))]
        for name, st in stages.items()
    ]
    out = [H.table(["stage", "val accuracy", "seconds"], rows)] if rows else []
    ladder = rf.metrics.get("ladder")
    if ladder:
        out.append(_ladder_html(ladder, rf.metrics.get("budget_seconds")))
    elif rf.metrics.get("kept_stage"):
        out.append(H.note(f"Kept model: {rf.metrics['kept_stage']} (the stage with the better validation result)."))
    for key, records in hist.items():
        if not records:
            continue
        title = _STAGE_TITLES.get(key, key)
        out.append(f"<h3>{H.esc(title)}</h3>")
        if "C" in records[0]:
            c = chosen_c(rf)
            out.append(
                H.note(
                    "The default linear head is fitted by L-BFGS for each regularisation strength C; "
                    f"cross-validation on the training set picks C{f' = {c:g}' if c is not None else ''}."
                )
            )
            out.append(
                figs.add(f"curves_{key}", P.cv_path_figure(records, c), f"{title}: CV accuracy and log-loss vs C")
            )
            continue
        max_ep = (
            (opts.get("baseline_epochs") or opts.get("epochs"))
            if key == "baseline"
            else (opts.get("epochs") if key == "fine_tune" else None)
        )
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            groups.setdefault(str(r.get("stage", key)), []).append(r)
        for sub, recs in groups.items():
            name = title if len(groups) == 1 else f"{title}: {sub}"
            out.append(
                figs.add(
                    f"curves_{key}_{sub}".replace(" ", "_"),
                    P.epoch_curves_figure(recs, name, max_ep),
                    f"{name}: loss and accuracy per epoch",
                )
            )
    return "".join(out)


def _ladder_html(rungs: list[dict[str, Any]], budget: float | None) -> str:
    """The ``--budget`` ladder: one row per rung; the choice was made on held-out training images."""
    rows = [
        [
            f"{r['rung']} ({r['what']})",
            f"{r['epochs_run']}/{r['epochs_planned']}" if r["rung"] != "head" else "-",
            "-" if r.get("held_out_accuracy") is None else float(r["held_out_accuracy"]),
            "-" if r.get("held_out_loss") is None else float(r["held_out_loss"]),
            "-" if r.get("val_accuracy") is None else float(r["val_accuracy"]),
            float(r.get("seconds", 0.0)),
            "kept" if r.get("kept") else (r.get("note") or ""),
        ]
        for r in rungs
    ]
    head = ["rung", "epochs run/planned", "held-out accuracy", "held-out loss", "val accuracy", "seconds", ""]
    text = (f"The transfer ladder under a {budget / 60:.1f}-minute budget. " if budget else "The transfer ladder. ") + (
        "Each rung was early-stopped and judged on a stratified 10% of the training images held out of all of "
        "them (the frozen head was refitted without it); the kept rung is the most accurate there. An exact tie "
        "goes to the lower held-out loss (cross-entropy on the same images), and a full tie to the cheaper rung. "
        "Validation accuracy is shown, never used to choose."
    )
    return H.table(head, rows) + H.note(text)


def baseline_section(rf: RunFiles, figs: Figures) -> str | None:
    stages = rf.metrics.get("stages") or {}
    base = stages.get("baseline_scratch")
    if not base:
        return None
    accs = {("transfer: " + n): float(s["val_accuracy"]) for n, s in stages.items() if n != "baseline_scratch"}
    accs["from scratch"] = float(base["val_accuracy"])
    rows = [[n, a] for n, a in accs.items()]
    best_tl = max(v for k, v in accs.items() if k != "from scratch") if len(accs) > 1 else float("nan")
    return "".join(
        [
            H.note(
                f"The same architecture trained from random initialisation for {base.get('epochs', '?')} epochs "
                f"(best epoch {base.get('best_epoch', '?')}, {float(base.get('seconds', 0)):.1f} s) reaches "
                f"{accs['from scratch']:.3f} validation accuracy; transfer learning reaches {best_tl:.3f}."
            ),
            H.table(["model", "val accuracy"], rows),
            figs.add(
                "baseline", P.stage_comparison_figure(accs), "validation accuracy: transfer learning vs from scratch"
            ),
        ]
    )


# --------------------------------------------------------------------------- evaluation
def evaluation_section(rf: RunFiles, figs: Figures) -> str | None:
    m = _metrics(rf)
    if m is None:
        return None
    k = m["top_k"]
    out = [
        H.note(f"{m['n']} validation images, predicted by the kept model ({rf.metrics.get('kept_stage', '?')})."),
        H.kv_table(
            [
                ("accuracy", m["accuracy"]),
                (f"top-{k} accuracy", m.get(f"top{k}_accuracy", float("nan"))),
                ("macro F1", m["macro_f1"]),
                ("balanced accuracy", m["balanced_accuracy"]),
                ("log-loss", m.get("log_loss", float("nan"))),
                ("ECE", m.get("ece", float("nan"))),
            ]
        ),
        "<h3>Per class</h3>",
        H.table(
            ["class", "precision", "recall", "F1", "support"],
            [[c, pc["precision"], pc["recall"], pc["f1"], pc["support"]] for c, pc in m["per_class"].items()],
        ),
        "<h3>Confusion matrix</h3>",
        figs.add("confusion", P.confusion_figure(m["confusion_matrix"], m["classes"]), "confusion matrix"),
    ]
    return "".join(out)


def calibration_section(rf: RunFiles, figs: Figures) -> str | None:
    m = _metrics(rf)
    if m is None or "reliability" not in m:
        return None
    parts = [
        H.note(
            "Bars: accuracy of the predictions in each confidence bin; a calibrated model's bars touch the "
            "diagonal. ECE is the gap averaged over bins, weighted by the number of images."
        ),
        figs.add("reliability", P.reliability_figure(m["reliability"], m["ece"]), "reliability diagram"),
    ]
    t = rf.metrics.get("temperature")
    va = val_arrays(rf)
    if t and va is not None and abs(float(t) - 1.0) > 1e-6:
        from graft.metrics import expected_calibration_error

        # softmax(z * T) is p ** T renormalised: the head's probabilities before temperature scaling.
        raw = np.power(np.clip(va[2], 1e-300, 1.0), float(t))
        raw /= raw.sum(1, keepdims=True)
        ece0, bins0 = expected_calibration_error(raw, va[1])
        source = (
            "the fine-tuned network's logits on a held-out slice of the training images"
            if rf.metrics.get("kept_stage") == "fine_tune"
            else "the out-of-fold logits of the head's cross-validation"
        )
        parts.insert(
            1,
            H.note(
                f"Temperature scaling (T = {float(t):.3f}, fitted on {source}, "
                f"never on validation) took the validation ECE from {ece0:.4f} to {m['ece']:.4f}."
            ),
        )
        parts.append(figs.add("reliability_uncalibrated", P.reliability_figure(bins0, ece0), "before calibration"))
    return "".join(parts)


def unlabeled_line(u: dict[str, Any]) -> str:
    """``--unlabeled``'s outcome in one line (graft train's summary and the report): what was used, or why not, and what was left out."""
    cv: dict[str, Any] = u["cv_accuracy"] if isinstance(u.get("cv_accuracy"), dict) else {}
    method = str(u.get("method", "none"))
    if method != "none":
        line = f"{u.get('images', '?')} images, {method} labelled {u.get('pseudo_labelled', '?')}"
        if isinstance(cv.get("none"), float) and isinstance(cv.get(method), float):
            line += f" (train CV {cv['none']:.4f} -> {cv[method]:.4f})"
    else:
        line = f"{u.get('images', '?')} images, not used: {u.get('why', 'no method clearly helped')}"
    left = {"leaks of val/test": u.get("leaks_of_val_or_test"), "copies": u.get("copies_of_train_or_repeats")}
    gone = ", ".join(f"{n} {what}" for what, n in left.items() if n)
    if u.get("in_kept_model") is False:
        line += "; the wide-features rung kept does not use them"
    rungs = u.get("rungs")
    if isinstance(rungs, dict) and rungs.get("pseudo_labelled"):
        line += f"; the budget's fine-tuning rungs trained on {rungs['pseudo_labelled']} of them pseudo-labelled"
    return line + (f"; left out {gone}" if gone else "")


def facts_section(rf: RunFiles, figs: Figures) -> str | None:
    run = rf.run
    m = rf.metrics
    items: list[tuple[str, Any]] = []
    if run.get("argv"):
        items.append(("command", " ".join(shlex.quote(str(a)) for a in run["argv"])))
    for key in ("data_dir", "seed", "device", "started"):
        if key in run:
            items.append((key, run[key]))
    bb = m.get("backbone") or {}
    for key in ("name", "architecture", "weights_source", "weights_sha256"):
        if bb.get(key) is not None:
            items.append((f"backbone {key}", bb[key]))
    feats = m.get("features") or {}
    if feats.get("cv_accuracy") or feats.get("taps"):
        cv = ", ".join(f"{k} {float(v):.4f}" for k, v in (feats.get("cv_accuracy") or {}).items())
        kind = f"multi-depth: final + pooled block stages {feats['taps']}" if feats.get("taps") else "final"
        items.append(("features", kind + (f" (chosen by cross-validation on train: {cv})" if cv else "")))
    if isinstance(m.get("unlabeled"), dict):
        items.append(("unlabeled images", unlabeled_line(m["unlabeled"])))
    for k, v in (run.get("versions") or {}).items():
        items.append((f"version {k}", v))
    for k, v in (run.get("hardware") or {}).items():
        items.append((f"hardware {k}", v))
    out = ["<h3>Run</h3>", H.kv_table(items)]
    timings = dict(m.get("timings") or run.get("timings") or {})
    for name, st in (m.get("stages") or {}).items():
        if "seconds" in st and name not in timings:
            timings[name] = st["seconds"]
    if m.get("train_seconds") is not None:
        timings["total (train_seconds)"] = m["train_seconds"]
    if timings:
        out += ["<h3>Times (seconds)</h3>", H.table(["step", "seconds"], [[k, float(v)] for k, v in timings.items()])]
    params = {**(run.get("params") or {}), **{f"option {k}": v for k, v in (run.get("options") or {}).items()}}
    if params:
        out += ["<h3>Parameters</h3>", H.kv_table([(k, "" if v is None else v) for k, v in params.items()])]
    return "".join(out)


# --------------------------------------------------------------------------- learning curve
def learning_curve_section(rf: RunFiles, figs: Figures) -> str | None:
    """``graft curve DATA --out RUN_DIR``'s curve.json (and figure), with the scratch baseline beside it."""
    from graft.artifact.run_folder import RunFolder

    c = RunFolder(rf.dir).read("curve.json")
    if not c.get("mean") or not c.get("sizes"):
        return None
    base = (rf.metrics.get("stages") or {}).get("baseline_scratch") or {}
    scratch = base.get("val_accuracy") if c.get("metric") != "map" else None  # subset accuracy is not mAP
    last = len(c["sizes"]) - 1
    rows: list[list[Any]] = [
        [f"all ({k} max)" if i == last else str(k), int(n), len(accs), float(m), float(s)]
        for i, (k, n, accs, m, s) in enumerate(zip(c["sizes"], c["n_images"], c["per_seed"], c["mean"], c["std"]))
    ]
    if scratch is not None:
        rows.append(["from scratch, all", int(c["n_images"][-1]), 1, float(scratch), "-"])
    seeds = max(len(a) for a in c["per_seed"])
    multi = c.get("metric") == "map"
    what = (
        "Validation mAP of graft's multi-label head" if multi else "Validation accuracy of graft's default linear head"
    )
    out = [
        H.note(
            f"{what} on frozen {c.get('backbone') or '?'} features "
            f"({c.get('n_val', '?')} validation images), refitted on k training images per "
            f"{'label' if multi else 'class'}: the mean and "
            f"standard deviation over {seeds} random subsets per size (one at the full size, where every subset is "
            "the same). Written by graft curve from cached features, without augmented views, so its last point can "
            "differ slightly from the trained model's accuracy."
        ),
        f"<p><b>{H.esc(c.get('verdict', ''))}</b></p>",
    ]
    png = figs.out / "curve.png"
    if png.is_file():
        out.append(H.img_tag(png, "validation accuracy against training images per class"))
    header = ["images per label" if multi else "images per class", "training images", "seeds"]
    out.append(H.table(header + ["val mAP" if multi else "val accuracy", "sd"], rows))
    if scratch is not None:
        match = next((k for k, m in zip(c["sizes"], c["mean"]) if m >= float(scratch)), None)
        out.append(
            H.note(
                f"The same network trained from scratch on all {c['n_images'][-1]} training images reached "
                f"{float(scratch):.3f}; transfer learning "
                + (f"matches that with {match} image(s) per class" if match else "stays below it at every size")
                + f" and reaches {c['mean'][-1]:.3f} with all of them."
            )
        )
    out += _curve_mismatches(c, rf)
    return "".join(out)


def _curve_mismatches(c: dict[str, Any], rf: RunFiles) -> list[str]:
    """Warnings where the curve and the run did not see the same data or the same validation split."""
    out = []
    curve_data = c.get("data_dir")
    run_data = rf.run.get("data_dir")
    if curve_data and run_data and curve_data != run_data:
        out.append(H.note(f"The curve was computed on {curve_data}, the run trained on {run_data}.", warn=True))
    split = c.get("split") or {}
    params = rf.run.get("params") or {}
    if any(k in split and k in params and split[k] != params[k] for k in ("seed", "val_fraction")):
        out.append(
            H.note(
                f"The curve used seed {split.get('seed')} and val_fraction {split.get('val_fraction')}, "
                f"the run seed {params.get('seed')} and val_fraction "
                f"{params.get('val_fraction')}: without a val/ folder their validation images differ.",
                warn=True,
            )
        )
    return out
