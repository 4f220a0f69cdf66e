"""``graft train DATA_DIR``: fit a classifier and write a run directory."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from graft.backbones.options import BackboneOptions
from graft.cli import options as opt
from graft.cli._common import command_argv, console, launch_if_asked, make_progress, on_interrupt, process_seconds
from graft.data.options import ManifestOptions, SplitOptions
from graft.features.options import EmbedOptions
from graft.network.heads import HEAD_TYPES
from graft.training.finetune.options import BASELINES, SCHEDULES, FineTuneConfig
from graft.training.head.options import CLASS_WEIGHTS, FEATURE_MODES, HeadOptions
from graft.transforms.eval import AUGMENT_STRENGTHS

_RESUME_HINT = "The run folder is kept: continue with `graft train --resume {out}`"


HeadType = opt.choices("HeadType", HEAD_TYPES)
Schedule = opt.choices("Schedule", SCHEDULES)
Baseline = opt.choices("Baseline", BASELINES)
ClassWeight = opt.choices("ClassWeight", CLASS_WEIGHTS)
Features = opt.choices("Features", FEATURE_MODES)
Augment = opt.choices("Augment", AUGMENT_STRENGTHS)
HEAD, TUNE = HeadOptions(), FineTuneConfig()


def default_run_dir(data_dir: Path) -> Path:
    return Path("runs") / f"{data_dir.resolve().name}-{time.strftime('%Y%m%d-%H%M%S')}"


@opt.with_options(*opt.DATA_OPTIONS)
def train(
    data_dir: Path | None = typer.Argument(
        None, help="Dataset folder: train/ val/ [test/] of class folders, or class folders."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory (default runs/<dataset>-<time>)."),
    head: HeadType = typer.Option(HEAD.head, help="Head on the frozen features."),  # type: ignore[valid-type]
    c: float | None = typer.Option(None, "--C", help="Inverse L2 strength of the linear head (default: chosen by CV)."),
    dropout: float = typer.Option(HEAD.dropout, help="Dropout before the head."),
    hidden: int = typer.Option(HEAD.hidden, help="Hidden width of the mlp head."),
    features: Features = typer.Option(  # type: ignore[valid-type]
        HEAD.features,
        help="auto: add the last block stages' pooled outputs where cross-validation on train finds it better; "
        "final; multi; wide: auto, plus the other offline backbones' features (Lite1, Lite2) in one network.",
    ),
    augment_views: str = typer.Option(
        str(HEAD.augment_views),
        help="Extra feature views per training image: auto (the mirror below 2,000 images), or K (mirror + K-1 crops).",
    ),
    class_weight: ClassWeight | None = typer.Option(  # type: ignore[valid-type]
        None, help="balanced: weight the loss by inverse class frequency."
    ),
    fine_tune: bool = typer.Option(
        False, "--fine-tune", help="Stage 2: fine-tune the backbone (all of it by default; see --unfreeze)."
    ),
    unlabeled: Path | None = typer.Option(
        None,
        help="Folder of unlabelled images the head may learn from (kept only where cross-validation on the "
        "training images says they help; copies of validation/test images are left out); with --budget, the "
        "fine-tuning rungs then train on some of them too, pseudo-labelled.",
    ),
    budget: str | None = typer.Option(
        None,
        help="Time for the whole fit, e.g. 10m or 1h30m: after the head, fine-tune the last block groups, then "
        "the whole backbone, as far as it allows; keep the rung best on held-out training images.",
    ),
    unfreeze: int = typer.Option(
        TUNE.unfreeze, help="Block groups to unfreeze when fine-tuning, from the top (-1: all)."
    ),
    epochs: int = typer.Option(TUNE.epochs, help="Fine-tuning epochs (early stopping may end sooner)."),
    lr: float = typer.Option(TUNE.lr, help="Head learning rate when fine-tuning."),
    backbone_lr_ratio: float = typer.Option(TUNE.backbone_lr_ratio, help="Backbone LR as a fraction of the head LR."),
    schedule: Schedule = typer.Option(TUNE.schedule, help="LR schedule after warm-up."),  # type: ignore[valid-type]
    patience: int = typer.Option(TUNE.patience, help="Early-stopping patience (epochs without val-loss gain)."),
    augment: Augment = typer.Option(TUNE.augment, help="Augmentation when fine-tuning."),  # type: ignore[valid-type]
    baseline: Baseline | None = typer.Option(  # type: ignore[valid-type]
        None, help="scratch: also train the same network from random init."
    ),
    baseline_epochs: int | None = typer.Option(None, help="Epochs of the scratch baseline (default: --epochs)."),
    resume: Path | None = typer.Option(None, help="Continue an interrupted run in this run directory."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write report.html."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow --out to be a folder that already holds files."),
    quiet: opt.Quiet = False,
    ft_batch_size: int = typer.Option(
        TUNE.batch_size, help="Fine-tuning batch size: the global batch, split over --devices."
    ),
    devices: int = typer.Option(1, help="Processes on this machine (torchrun; gloo on CPU, NCCL on GPUs)."),
    nnodes: int = typer.Option(1, help="Machines in a multi-machine job (each runs the same command)."),
    node_rank: int = typer.Option(0, help="This machine's number, 0 to --nnodes - 1."),
    rdzv_endpoint: str | None = typer.Option(None, help="HOST:PORT of machine 0 (torchrun rendezvous)."),
    backbone_options: BackboneOptions = opt.BACKBONE,
    split_options: SplitOptions = opt.SPLIT,
    embed_options: EmbedOptions = opt.EMBED,
    manifest_options: ManifestOptions = opt.MANIFEST,
) -> None:
    """Train a classifier on DATA_DIR and write RUN_DIR (model/, metrics.json, report.html)."""
    import sys

    from graft import distributed
    from graft.artifact.run_folder import RunFolder
    from graft.classifier import Classifier
    from graft.exceptions import DataError
    from graft.resume import report_wanted, resume_run
    from graft.run import RunOptions, train_run

    started = time.perf_counter() - process_seconds()
    if resume is None and data_dir is not None and out is None:
        out = default_run_dir(data_dir)
    pinned = ["--out", str(out)] if out is not None and resume is None else []  # one folder for every rank
    hint = _RESUME_HINT.format(out=resume or out)
    run_dir, t_launch = resume or out, time.time()
    on_interrupt(lambda: hint if run_dir is not None and RunFolder(run_dir).exists() else None)
    finished = lambda: run_dir is not None and RunFolder(run_dir).done_since(t_launch)  # noqa: E731
    if launch_if_asked(
        devices,
        nnodes,
        node_rank,
        rdzv_endpoint,
        device=embed_options.device,
        extra=pinned,
        hint=hint,
        finished=finished,
    ):
        return
    out = distributed.broadcast_object(out)  # torchrun by hand: rank 0's default folder
    if resume is not None:
        _check_resume_options(resume)
        with make_progress(quiet) as prog:
            metrics = resume_run(resume, data_dir=data_dir, argv=sys.argv, progress=prog, started=started)
        out = resume
        no_report = no_report or not report_wanted(resume)
    else:
        if data_dir is None:
            raise DataError("missing DATA_DIR: pass a dataset folder (or try `graft demo`)")
        out = out or default_run_dir(data_dir)
        clf = Classifier(
            **vars(backbone_options),
            **vars(split_options),
            **vars(embed_options),
            manifest=manifest_options if manifest_options != opt.MANIFEST else None,
            head=opt.value(head),
            C=c,
            dropout=dropout,
            hidden=hidden,
            features=opt.value(features),
            augment_views=opt.parse_int_or_text(augment_views),
            class_weight=opt.value(class_weight),
        )
        tune = dataclasses.replace(
            TUNE,
            epochs=epochs,
            unfreeze=unfreeze,
            lr=lr,
            backbone_lr_ratio=backbone_lr_ratio,
            schedule=opt.value(schedule),
            patience=patience,
            augment=opt.value(augment),
            batch_size=ft_batch_size,
        )
        opts = RunOptions(
            fine_tune=fine_tune,
            tune=tune,
            baseline=opt.value(baseline),
            baseline_epochs=baseline_epochs,
            budget=budget,  # type: ignore[arg-type]  # parsed to seconds by RunOptions
            report=not no_report,
            unlabeled=str(unlabeled) if unlabeled else None,
        )
        with make_progress(quiet) as prog:
            metrics = train_run(
                data_dir, out, clf, opts, argv=sys.argv, progress=prog, started=started, overwrite=overwrite
            )
        del clf  # the report reads the run folder; the fitted features need not stay in memory beside it
    if not distributed.is_main():
        return  # rank 0 reports for the job
    if not no_report:
        _write_report(out, quiet)
    if not quiet:
        render_summary(out, metrics)


#: What ``--resume`` honours besides the run folder: how it shows, how it launches (and DATA_DIR: where the
#: data now is).
_RESUME_KEEPS = frozenset(
    {"--resume", "--quiet", "-q", "--no-report", "--workers", "--devices", "--nnodes", "--node-rank", "--rdzv-endpoint"}
)


def _check_resume_options(resume: Path) -> None:
    """Refuse options that ``--resume`` cannot honour: a run continues with the settings it started with."""
    from graft.exceptions import InvalidParameterError

    given = {arg.split("=", 1)[0] for arg in command_argv()[1:] if arg.startswith("-")}
    refused = sorted(given - _RESUME_KEEPS)
    if refused:
        names = ", ".join(refused)
        raise InvalidParameterError(
            f"--resume {resume} continues the run with the options it started with; {names} cannot change there: "
            "drop them, or start a new run with --out"
        )


def _write_report(out: Path, quiet: bool) -> None:
    from graft.report import write_report

    path = write_report(out)
    if not quiet:
        console.print(f"report: {path}")


def render_summary(out: Path, m: dict) -> None:
    from rich.table import Table

    t = Table(title=f"graft train -> {out}", show_header=True)
    t.add_column("")
    t.add_column("value", justify="right")
    totals = m.get("totals") or {k: sum(v.values()) for k, v in (m.get("counts") or {}).items() if isinstance(v, dict)}
    for split, total in totals.items():
        t.add_row(f"{split} images", str(total))
    t.add_row("classes", str(len(m["classes"])))
    t.add_row("skipped files", str(len(m["skipped"])))
    for name, st in m["stages"].items():
        if m.get("multi_label") and st.get("val_map") is not None:
            t.add_row(f"{name} val mAP", f"{st['val_map']:.4f}")
        else:
            what = "val subset accuracy" if m.get("multi_label") else "val accuracy"
            t.add_row(f"{name} {what}", f"{st['val_accuracy']:.4f}")
        if "seconds" in st:
            t.add_row(f"{name} seconds", f"{st['seconds']:.1f}")
    t.add_row("kept", m["kept_stage"])
    feats = m.get("features") or {}
    cv = feats.get("cv_accuracy") or {}
    if cv or feats.get("taps"):  # e.g. "multi-depth (train CV 0.9646 vs 0.9482)"
        kind, other = ("multi-depth", "final") if feats.get("taps") else ("final", "multi")
        vs = f" (train CV {cv[kind.split('-')[0]]:.4f} vs {cv[other]:.4f})" if len(cv) == 2 else ""
        t.add_row("features", kind + vs)
    if m.get("multi_label"):
        _multilabel_rows(t, m)
    else:
        t.add_row(Text("val accuracy", style="bold"), Text(f"{m['val_accuracy']:.4f}", style="bold"))
    if m.get("test_accuracy") is not None:
        shift = "  (differs from val: see the warning)" if m.get("test_shift") else ""
        t.add_row(Text("test accuracy", style="bold"), Text(f"{m['test_accuracy']:.4f}{shift}", style="bold"))
    if m.get("val_ece") is not None:
        before = m.get("val_ece_uncalibrated")
        t.add_row(
            "val ECE (calibrated)", f"{m['val_ece']:.4f}" + (f" (was {before:.4f})" if before is not None else "")
        )
    if m.get("unlabeled"):
        from graft.report.sections import unlabeled_line

        t.add_row("unlabeled", unlabeled_line(m["unlabeled"]))
    t.add_row("embedding seconds", f"{m['timings'].get('embed', 0):.1f}")
    t.add_row("total seconds", f"{m['train_seconds']:.1f}")
    console.print(t)
    if m.get("ladder"):
        console.print(ladder_table(m["ladder"]))
    for s in m["skipped"][:20]:
        console.print(f"  skipped {s['path']}: {s['reason']}", highlight=False)
    if len(m["skipped"]) > 20:
        console.print(f"  ... and {len(m['skipped']) - 20} more (see {out / 'metrics.json'})")
    console.print(f"model: {out / 'model'}")


#: The multi-label run's validation figures, in the order shown; mAP (threshold-free) is the headline.
_MULTILABEL_ROWS = (
    ("val_map", "val mAP (macro)"),
    ("val_map_micro", "val mAP (micro)"),
    ("val_f1_micro", "val F1 micro"),
    ("val_f1_macro", "val F1 macro"),
    ("val_subset_accuracy", "val subset accuracy"),
    ("val_hamming_loss", "val Hamming loss"),
)


def _multilabel_rows(t: Any, m: dict) -> None:
    """A multi-label run's rows: mAP, F1 at the per-label thresholds, subset accuracy (= val_accuracy)."""
    m = {**m, "val_subset_accuracy": m.get("val_subset_accuracy", m.get("val_accuracy"))}
    for key, name in _MULTILABEL_ROWS:
        if m.get(key) is None:
            continue
        value = f"{m[key]:.4f}"
        bold = key in ("val_map", "val_subset_accuracy")
        t.add_row(Text(name, style="bold") if bold else name, Text(value, style="bold") if bold else value)


def ladder_table(rungs: list[dict]) -> Any:
    """The budget ladder: rung, held-out accuracy and loss, validation accuracy, epochs, time, which was kept."""
    from rich.table import Table

    t = Table(title="transfer ladder: accuracy on held-out training images (decides) and on val (reported)")
    for col in ("rung", "epochs", "held-out", "held-out loss", "val", "s", "kept"):
        t.add_column(col, justify="left" if col == "rung" else "right")
    for r in rungs:
        keys = ("held_out_accuracy", "held_out_loss", "val_accuracy")
        acc = [f"{r[k]:.4f}" if r.get(k) is not None else "-" for k in keys]
        epochs = f"{r['epochs_run']}/{r['epochs_planned']}" if r["rung"] != "head" else "-"
        kept = "yes" if r["kept"] else (r.get("note") or "")
        t.add_row(f"{r['rung']} ({r['what']})", epochs, *acc, f"{r['seconds']:.0f}", kept)
    return t
