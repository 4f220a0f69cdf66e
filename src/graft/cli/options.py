"""Command-line options shared by several commands, each declared once (typer ``Annotated`` aliases).

A command writes ``device: Device = EMBED.device``: the help text lives here, the default in the
library's options object (:class:`~graft.features.options.EmbedOptions` and its siblings), and the
choices come from the library's own tuples, so a new value appears in every command at once.
The ``*_options`` functions only parse text into those objects; the library validates them.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from graft.backbones.options import BackboneOptions
from graft.data.options import SplitOptions
from graft.features.options import PRECISIONS, EmbedOptions

__all__ = [
    "BACKBONE",
    "EMBED",
    "SPLIT",
    "Backbone",
    "BatchSize",
    "Device",
    "InputSize",
    "NoCache",
    "Precision",
    "PrecisionChoice",
    "Quiet",
    "Seed",
    "Strict",
    "TestFraction",
    "ValFraction",
    "Weights",
    "Workers",
    "backbone_options",
    "choices",
    "embed_options",
    "parse_int_or_text",
    "split_options",
    "value",
]

BACKBONE, EMBED, SPLIT = BackboneOptions(), EmbedOptions(), SplitOptions()


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
Strict = Annotated[bool, typer.Option(help="Fail on any unreadable image instead of skipping it.")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary.")]


def value(choice: Any) -> Any:
    """The library value of a choice option (its Enum member's value; None stays None)."""
    return choice.value if isinstance(choice, Enum) else choice


def parse_int_or_text(text: str) -> int | str:
    """``"288"`` -> 288; other text (``auto``, ``native``) stays as it is."""
    return int(text) if text.isdigit() else text


def backbone_options(
    backbone: str, weights: Path | None, input_size: str = "auto", crop_pct: float | None = None
) -> BackboneOptions:
    return BackboneOptions(backbone, str(weights) if weights else None, parse_int_or_text(input_size), crop_pct)


def split_options(val_fraction: float, test_fraction: float, seed: int) -> SplitOptions:
    return SplitOptions(val_fraction, test_fraction, seed)


def embed_options(
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
