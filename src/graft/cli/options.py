"""Command-line options shared by several commands, each declared once (typer ``Annotated`` aliases).

A command writes ``device: Device = EMBED.device``: the help text lives here, the default in the
library's options object (:class:`~graft.features.options.EmbedOptions` and its siblings), and the
choices come from the library's own tuples, so a new value appears in every command at once.
The ``*_options`` functions only parse text into those objects; the library validates them.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable

import typer

from graft.backbones.options import BackboneOptions
from graft.data.options import ManifestOptions, SplitOptions
from graft.features.options import PRECISIONS, EmbedOptions

__all__ = [
    "BACKBONE",
    "BACKBONE_OPTIONS",
    "DATA_OPTIONS",
    "EMBED",
    "MANIFEST",
    "EMBED_OPTIONS",
    "MANIFEST_OPTIONS",
    "SPLIT",
    "SPLIT_OPTIONS",
    "Device",
    "OptionGroup",
    "Precision",
    "PrecisionChoice",
    "Quiet",
    "Seed",
    "Weights",
    "choices",
    "parse_int_or_text",
    "value",
    "with_options",
]

BACKBONE = BackboneOptions()
EMBED = EmbedOptions()
SPLIT = SplitOptions()
MANIFEST = ManifestOptions()


def choices(name: str, values: tuple[object, ...]) -> type[Enum]:
    """A ``str`` Enum of the library tuple ``values`` (None left out), for a typer choice option."""
    return Enum(name, [(str(v), str(v)) for v in values if v is not None], type=str)  # type: ignore[return-value]


PrecisionChoice = choices("PrecisionChoice", PRECISIONS)

Backbone = Annotated[str, typer.Option(help="Any timm model name.")]
Weights = Annotated[Path | None, typer.Option(help="Local weights file for the backbone (.safetensors, .pth).")]
InputSize = Annotated[
    str,
    typer.Option(
        help="Embedding resolution: auto (FixRes: ~30% above the backbone's, for large photos), native, or pixels."
    ),
]
ValFraction = Annotated[float, typer.Option(help="Validation share when the folder has no val split.")]
TestFraction = Annotated[float, typer.Option(help="Test share when the folder has no test split.")]
Seed = Annotated[int, typer.Option(help="Seed for splits, views and training.")]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
# A choice built at run time from the library's tuple: mypy cannot see its members.
Precision = Annotated[
    PrecisionChoice,  # type: ignore[valid-type]
    typer.Option(help="Backbone precision; auto picks the fastest accurate one here."),
]
BatchSize = Annotated[int | None, typer.Option(help="Embedding batch size (default: auto).")]
Workers = Annotated[int | None, typer.Option(help="Decoder processes (default: auto).")]
CropPct = Annotated[float | None, typer.Option(help="Centre-crop fraction (default: 1.0 at a changed size).")]
Images = Annotated[
    str | None, typer.Option(help="Manifest only: the folder its image paths are relative to (default: its folder).")
]
PathCol = Annotated[
    str | None, typer.Option(help="Manifest only: the image path column (default: path, file, image, id...).")
]
LabelCol = Annotated[
    str | None, typer.Option(help="Manifest only: the label column (default: label, labels, class, tags...).")
]
SplitCol = Annotated[str | None, typer.Option(help="Manifest only: the split column (default: split), train/val/test.")]
LabelSep = Annotated[
    str | None, typer.Option(help="Manifest only: separator of several labels in one cell (default: detected: | ; ,).")
]
Strict = Annotated[bool, typer.Option(help="Fail on any unreadable image instead of skipping it.")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary.")]


def value(choice: Any) -> Any:
    """The library value of a choice option (its Enum member's value; None stays None)."""
    return choice.value if isinstance(choice, Enum) else choice


def parse_int_or_text(text: str) -> int | str:
    """``"288"`` -> 288; other text (``auto``, ``native``) stays as it is."""
    return int(text) if text.isdigit() else text


def _backbone(backbone: str, weights: Path | None, input_size: str, crop_pct: float | None) -> BackboneOptions:
    return BackboneOptions(backbone, str(weights) if weights else None, parse_int_or_text(input_size), crop_pct)


def _embed(
    device: str, precision: Enum | str, batch_size: int | None, workers: int | None, no_cache: bool, strict: bool
) -> EmbedOptions:
    return EmbedOptions(
        device=device,
        precision=value(precision),
        batch_size=batch_size,
        num_workers=workers,
        use_cache=not no_cache,
        strict=strict,
    )


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


@dataclass(frozen=True)
class OptionGroup:
    """Command-line options that together build one library options object, passed as parameter ``name``."""

    name: str
    params: tuple[inspect.Parameter, ...]
    build: Callable[..., Any]


BACKBONE_OPTIONS = OptionGroup(
    "backbone_options",
    (
        _option("backbone", Backbone, BACKBONE.backbone),
        _option("weights", Weights, BACKBONE.weights),
        _option("input_size", InputSize, str(BACKBONE.input_size)),
        _option("crop_pct", CropPct, BACKBONE.crop_pct),
    ),
    _backbone,
)
SPLIT_OPTIONS = OptionGroup(
    "split_options",
    (
        _option("val_fraction", ValFraction, SPLIT.val_fraction),
        _option("test_fraction", TestFraction, SPLIT.test_fraction),
        _option("seed", Seed, SPLIT.seed),
    ),
    SplitOptions,
)
EMBED_OPTIONS = OptionGroup(
    "embed_options",
    (
        _option("device", Device, EMBED.device),
        _option("precision", Precision, EMBED.precision),
        _option("batch_size", BatchSize, EMBED.batch_size),
        _option("workers", Workers, EMBED.num_workers),
        _option("no_cache", NoCache, not EMBED.use_cache),
        _option("strict", Strict, EMBED.strict),
    ),
    _embed,
)


MANIFEST_OPTIONS = OptionGroup(
    "manifest_options",
    (
        _option("images", Images, None),
        _option("path_col", PathCol, None),
        _option("label_col", LabelCol, None),
        _option("split_col", SplitCol, None),
        _option("label_sep", LabelSep, None),
    ),
    ManifestOptions,
)

#: The options of every command that reads a labelled dataset: which backbone, how the folder is split,
#: how images are embedded, how a manifest is read.
DATA_OPTIONS = (BACKBONE_OPTIONS, SPLIT_OPTIONS, EMBED_OPTIONS, MANIFEST_OPTIONS)


def with_options(*groups: OptionGroup) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the options of ``groups`` (declared once, here), after its own; it receives the built objects.

    ``@with_options(BACKBONE_OPTIONS, EMBED_OPTIONS)`` on ``def doctor(data_dir, ..., backbone_options,
    embed_options)``: typer shows ``--backbone``, ``--weights``, ... ``--device``, ``--precision``, ...
    and the command gets a :class:`BackboneOptions` and an :class:`EmbedOptions`.
    """

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(command, eval_str=True)
        names = {g.name for g in groups}
        params = [p for p in sig.parameters.values() if p.name not in names]
        params += [p for g in groups for p in g.params]

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            for g in groups:
                kwargs[g.name] = g.build(*(kwargs.pop(p.name) for p in g.params))
            return command(**kwargs)

        del run.__wrapped__  # typer reads the signature below, not the command's own
        run.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return wrap
