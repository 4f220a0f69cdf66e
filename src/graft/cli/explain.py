"""``graft explain | features | dream | attack``: look inside a model (or a pretrained ImageNet backbone)."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, List

import typer

from graft.cli._common import console
from graft.cli.options import EMBED, Device, OptionGroup, with_options
from graft.exceptions import InvalidParameterError
from graft.validation import invalid_parameter

_MODEL_HELP = "Model directory (RUN_DIR/model), or with --imagenet a backbone name such as efficientnet_lite0."
_IMAGENET_HELP = "MODEL is a pretrained backbone; use its 1000-class ImageNet head (nothing trained needed)."
#: ``--weights`` of the commands that can explain the ImageNet backbone itself (declared once for the four).
ExplainWeights = Annotated[
    Path | None, typer.Option(help="Weights file for the --imagenet backbone (default: graft's offline lookup).")
]
_OUT_HELP = "Folder for the PNGs."
DEFAULT_OUT = Path("graft-explain")


@dataclass(frozen=True)
class Source:
    """Where the explained network comes from: ``--imagenet`` (the backbone's own head), ``--weights``, ``--device``."""

    imagenet: bool = False
    weights: Path | None = None
    device: str = EMBED.device


_SOURCE = Source()
#: The options every explain command shares, declared once; the command receives a :class:`Source`.
SOURCE_OPTIONS = OptionGroup(
    "source",
    (
        inspect.Parameter(
            "imagenet",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[bool, typer.Option("--imagenet", help=_IMAGENET_HELP)],
        ),
        inspect.Parameter("weights", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ExplainWeights),
        inspect.Parameter("device", inspect.Parameter.KEYWORD_ONLY, default=EMBED.device, annotation=Device),
    ),
    Source,
)


def _target(model: str, source: Source) -> Any:
    from graft.explain import load_target

    return load_target(model, imagenet=source.imagenet, weights=source.weights, device=source.device)


def _class(t, spec: str) -> int:
    from graft.explain import resolve_class

    return resolve_class(t.classes, spec, t.full_names)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_") or "class"


@with_options(SOURCE_OPTIONS)
def explain(
    model: str = typer.Argument(..., help=_MODEL_HELP),
    images: List[Path] = typer.Argument(..., help="Image files."),
    layer: str | None = typer.Option(None, help="Layer for Grad-CAM (default: the last spatial feature map)."),
    cls: str | None = typer.Option(
        None, "--class", "-c", help="Explain this class (name or index) instead of the prediction."
    ),
    top_k: int = typer.Option(3, "--top-k", "-k", help="Predictions listed per image."),
    out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", help=_OUT_HELP),
    source: Source = _SOURCE,
) -> None:
    """Grad-CAM heat map over each image, with the top-k predictions."""
    from graft.explain import default_feature_layer, gradcam, prepare_image
    from graft.explain.figures import gradcam_figure, save_figure

    t = _target(model, source)
    layer = layer or default_feature_layer(t.net, t.preprocessing.input_size)
    idx = _class(t, cls) if cls is not None else None
    results, written = [], []
    for p in images:
        r = gradcam(t, prepare_image(p, t.preprocessing), class_index=idx, layer=layer, top_k=top_k)
        results.append(r)
        written.append(save_figure(gradcam_figure([r], [p.name]), out / f"{p.stem}.gradcam.png"))
        tops = ", ".join(f"{lab} {pr:.3f}" for lab, pr in r.top_k)
        console.print(f"{p}: Grad-CAM of {r.label} ({r.probability:.3f}); top {tops}")
    if len(results) > 1:
        written.append(save_figure(gradcam_figure(results[:8], [p.name for p in images[:8]]), out / "gradcam.png"))
    console.print(f"layer {layer}; wrote {', '.join(str(w) for w in written)}", highlight=False, soft_wrap=True)


@with_options(SOURCE_OPTIONS)
def features(
    model: str = typer.Argument(..., help=_MODEL_HELP),
    image: Path | None = typer.Argument(None, help="Image file (not needed with --list-layers)."),
    layer: str | None = typer.Option(None, help="Layer name (default: the last spatial feature map)."),
    top: int = typer.Option(16, help="How many of the strongest feature maps to show."),
    list_layers: bool = typer.Option(False, "--list-layers", help="Print layer names and output shapes, then exit."),
    out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", help=_OUT_HELP),
    source: Source = _SOURCE,
) -> None:
    """A grid of the strongest feature maps (highest mean activation) of one layer."""
    from graft.explain import default_feature_layer, feature_maps, prepare_image
    from graft.explain import list_layers as layers_of
    from graft.explain.figures import features_figure, save_figure

    t = _target(model, source)
    if list_layers:
        from rich.table import Table

        tab = Table(show_header=True, title=f"layers of {model} (output shape for one image)")
        for col in ("layer", "type", "output shape"):
            tab.add_column(col)
        for li in layers_of(t.net, t.preprocessing.input_size):
            tab.add_row(li.name, li.type, " x ".join(str(s) for s in li.shape))
        console.print(tab)
        return
    if image is None:
        raise InvalidParameterError("missing IMAGE: pass an image file (or --list-layers to see the layer names)")
    layer = layer or default_feature_layer(t.net, t.preprocessing.input_size)
    fm = feature_maps(t, prepare_image(image, t.preprocessing), layer, top=top)
    path = save_figure(features_figure(fm), out / f"{image.stem}.{_slug(layer)}.features.png")
    chans = ", ".join(f"{c} ({m:.2f})" for c, m in zip(fm.channels[:8], fm.means[:8]))
    console.print(f"{layer}: output {' x '.join(map(str, fm.shape))}; strongest channels {chans}", highlight=False)
    console.print(f"wrote {path}", highlight=False, soft_wrap=True)


@with_options(SOURCE_OPTIONS)
def dream(
    model: str = typer.Argument(..., help=_MODEL_HELP),
    cls: str = typer.Argument(..., metavar="CLASS", help="Class name (partial ok, e.g. 'tabby') or index."),
    steps: int = typer.Option(100, help="Gradient-ascent steps."),
    lr: float = typer.Option(0.1, help="Step size (Adam)."),
    tv: float = typer.Option(4.0, help="Total-variation weight: higher is smoother."),
    jitter: int = typer.Option(8, help="Largest random shift per step, in pixels."),
    seed: int = typer.Option(0, help="Seed of the starting noise and jitter."),
    out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", help=_OUT_HELP),
    source: Source = _SOURCE,
) -> None:
    """The 'ideal' image of a class: gradient ascent on the input from noise."""
    from graft.explain import dream as run_dream
    from graft.explain.figures import dream_figure, save_figure

    t = _target(model, source)
    idx = _class(t, cls)
    r = run_dream(t, idx, steps=steps, lr=lr, tv_weight=tv, jitter=jitter, seed=seed)
    from PIL import Image

    name = _slug(r.label)
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(r.image).save(out / f"dream_{name}.png")
    fig = save_figure(dream_figure(r), out / f"dream_{name}.figure.png")
    console.print(
        f"class {idx} ({r.label}): probability {r.start_probability:.4f} (noise) -> {r.probability:.4f} "
        f"after {r.steps} steps",
        highlight=False,
    )
    console.print(f"wrote {out / f'dream_{name}.png'}, {fig}", highlight=False, soft_wrap=True)


def parse_epsilon(text: str) -> float:
    """``"8/255"`` or ``"0.03"`` -> float; ``"8"`` (> 1) is read as 8/255.

    Raises:
        InvalidParameterError: ``text`` is not a number or a fraction (a ``ValueError``).
    """
    try:
        if "/" in text:
            a, b = text.split("/", 1)
            v = float(a) / float(b)
        else:
            v = float(text)
            v = v / 255.0 if v >= 1.0 else v
    except (ValueError, ZeroDivisionError):
        raise invalid_parameter("--epsilon", "graft attack", "like 8/255, 8 (grey levels) or 0.03", text) from None
    return v


@with_options(SOURCE_OPTIONS)
def attack(
    model: str = typer.Argument(..., help=_MODEL_HELP),
    image: Path = typer.Argument(..., help="Image file to perturb."),
    target: str | None = typer.Option(None, "--target", "-t", help="Class to push the prediction to (name or index)."),
    untargeted: bool = typer.Option(False, "--untargeted", help="Just change the prediction, to any other class."),
    epsilon: str = typer.Option(
        "8/255", "--epsilon", "--eps", help="L-infinity budget in pixel units: 8/255, 8 or 0.03."
    ),
    steps: int = typer.Option(40, help="Most iterations (stops once the new class reaches --confidence)."),
    confidence: float = typer.Option(0.5, help="Probability the new class should reach before stopping."),
    out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", help=_OUT_HELP),
    source: Source = _SOURCE,
) -> None:
    """An adversarial example (iterative FGSM under an L-infinity budget): original, perturbation, result."""
    from graft.explain import attack as run_attack
    from graft.explain import prepare_image
    from graft.explain.figures import attack_figure, save_figure

    if (target is None) == (not untargeted):
        raise InvalidParameterError("pass exactly one of --target CLASS or --untargeted")
    eps = parse_epsilon(epsilon)
    t = _target(model, source)
    idx = _class(t, target) if target is not None else None
    r = run_attack(
        t, prepare_image(image, t.preprocessing), target_index=idx, epsilon=eps, steps=steps, confidence=confidence
    )
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    adv_path = out / f"{image.stem}.adversarial.png"
    Image.fromarray(r.adversarial).save(adv_path)
    fig = save_figure(attack_figure(r, t.classes), out / f"{image.stem}.attack.png")
    c = t.classes
    src, after = r.source_index, r.predicted_after
    console.print(f"before: {c[src]} ({r.probs_before[src]:.4f})", highlight=False)
    console.print(
        f"after:  {c[after]} ({r.probs_after[after]:.4f})"
        + (f"; target {c[idx]} {r.probs_after[idx]:.4f}" if idx is not None else ""),
        highlight=False,
    )
    verdict = "succeeded" if r.success else "failed"
    console.print(
        f"attack {verdict} in {r.steps} steps; L-inf used {r.linf:.4f} ({r.linf * 255:.0f}/255) of budget {eps:.4f}",
        highlight=False,
    )
    console.print(f"wrote {fig}, {adv_path}", highlight=False, soft_wrap=True)
