"""``graft serve MODEL``: HTTP API + web page on uvicorn (127.0.0.1:8000 by default)."""

from __future__ import annotations

from pathlib import Path

import typer

from graft.cli._common import err_console
from graft.data.decode import SERVE_MAX_PIXELS, SERVE_MAX_REQUEST_PIXELS


def serve(
    model: Path = typer.Argument(..., help="Exported .onnx file, model directory (RUN_DIR/model) or run directory."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000, help="TCP port."),
    backend: str = typer.Option("auto", help="auto (ONNX Runtime), onnx or torch."),
    max_upload_mb: float = typer.Option(10.0, help="Largest request body in MB (413 above)."),
    max_files: int = typer.Option(16, help="Most images per request."),
    max_pixels: int = typer.Option(SERVE_MAX_PIXELS, help="Largest decoded image, width*height (bomb guard)."),
    max_request_pixels: int = typer.Option(
        SERVE_MAX_REQUEST_PIXELS, help="Decoded pixels per request, all images together (413 above)."
    ),
    max_connections: int = typer.Option(512, help="Open connections and requests at once (503 above)."),
    read_timeout: float = typer.Option(15.0, help="Seconds a client has to send a whole request."),
    timeout: float = typer.Option(30.0, help="Per-request timeout in seconds (504 above)."),
    max_batch: int = typer.Option(16, help="Largest micro-batch of concurrent images."),
    batch_wait_ms: float = typer.Option(2.0, help="How long a batch waits for more images, in ms."),
    max_queue: int = typer.Option(256, help="Images allowed to wait for the model (503 above)."),
    threads: int | None = typer.Option(None, help="Runtime threads (default: one per core)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve predictions: POST /predict, GET /health, GET /model, a web page at /, docs at /docs."""
    from graft.serve import create_app, run_server

    app = create_app(
        model,
        backend=backend,
        threads=threads,
        max_upload_mb=max_upload_mb,
        max_files=max_files,
        max_pixels=max_pixels,
        max_request_pixels=max_request_pixels,
        timeout_s=timeout,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        max_queue=max_queue,
    )
    err_console.print(
        f"serving {model} ({app.state.backend.name}, {len(app.state.backend.classes)} classes) on "
        f"http://{host}:{port}/  (API docs: /docs; Ctrl+C stops)",
        soft_wrap=True,
    )
    run_server(
        app, host=host, port=port, log_level=log_level, max_connections=max_connections, read_timeout_s=read_timeout
    )
