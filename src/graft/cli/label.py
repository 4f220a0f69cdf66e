"""``graft label UNLABELED_DIR``: a local page to label images one at a time (answers saved at once)."""

from __future__ import annotations

from pathlib import Path

import typer

from graft.cli._common import err_console

__all__ = ["label"]


def label(
    folder: Path = typer.Argument(..., help="Folder of images to label (read only: nothing in it changes)."),
    classes: str | None = typer.Option(None, help="Class names, comma-separated: keys 1-9 in this order."),
    from_suggest: Path | None = typer.Option(None, help="A graft suggest --csv file: its images, in its order."),
    model: Path | None = typer.Option(None, help="A model folder: its classes, its guesses, most uncertain first."),
    out: Path | None = typer.Option(None, help="Labels CSV (default FOLDER-labels.csv here); resumed if it exists."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8001, help="TCP port."),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Label images in the browser: keys 1-9 (or tap), S skip, U undo; each answer is appended to a CSV at once."""
    from graft.exceptions import DataError
    from graft.label import Item, create_label_app, open_session, queue_from_csv
    from graft.serve import run_server

    names = [c for c in classes.split(",")] if classes is not None else None
    queue, left = None, ""
    if model is not None:
        from graft.suggest import SuggestOptions, suggest

        ranked = suggest(model, folder, SuggestOptions(n=10**9, strategy="margin"))
        queue = [Item(r["relpath"], r["guess"], r["reason"]) for r in ranked.rows]
        names = names or ranked.classes
        left = ranked.left_out()
        left = f"; left out: {left}" if left else ""
    if from_suggest is not None:
        queue = queue_from_csv(from_suggest, folder)
    if names is None:
        raise DataError("no classes: pass --classes a,b,c (or --model MODEL for its classes)")
    target = out or Path(f"{folder.resolve().name}-labels.csv")
    session = open_session(str(folder), names, str(target), queue)
    st = session.state()
    err_console.print(
        f"labelling {st['total']} images of {folder} ({st['done']} already in {target}{left}) on http://{host}:{port}/ "
        "(keys 1-9, S skip, U undo; Ctrl+C stops, answers are saved as given)",
        soft_wrap=True,
    )
    run_server(create_label_app(session), host=host, port=port, log_level=log_level)
