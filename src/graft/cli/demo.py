"""``graft demo``: train on the bundled sign-digits sample, then predict one image."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train on 100 bundled hand-sign images (10 classes), then predict one of them."""
    from ..classifier import load
    from ..demo import demo_dataset_path
    from .train import train

    data = demo_dataset_path()
    console.print(f"demo dataset: {data} (10 classes x 10 images, Apache-2.0)", highlight=False)
    train(data_dir=data, out=out, **_train_defaults(), quiet=quiet)
    sample = sorted((data / "7").glob("*"))[0]
    result = load(out / "model").predict([sample], top_k=3)[0]
    console.print(
        f"predict {sample.name} (a hand showing 7): {result['label']} ({result['probability']:.2f}); "
        f"next: graft predict {out / 'model'} YOUR_IMAGE.jpg", highlight=False,
    )


def _train_defaults() -> dict:
    """The defaults of every other ``graft train`` option (typer fills them only from the CLI)."""
    import inspect

    from .train import train

    out = {}
    for name, p in inspect.signature(train).parameters.items():
        if name in {"data_dir", "out", "quiet"}:
            continue
        d = p.default
        out[name] = getattr(d, "default", d)
    return out
