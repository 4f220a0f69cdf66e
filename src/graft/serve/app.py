"""The HTTP API and web page of ``graft serve``.

Routes: ``POST /predict`` (multipart field ``file``, repeatable; ``?top_k=``),
``GET /health``, ``GET /model``, ``GET /`` (the web page), plus FastAPI's
``/openapi.json`` and ``/docs``. Uploads are size-capped while they stream in (413),
sniffed by content not extension (415), guarded against decompression bombs (413),
decoded in a thread pool, micro-batched into shared model calls, and time-limited (504).
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, AsyncIterator, List

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

from graft.data.decode import (
    SERVE_MAX_PIXELS,
    SERVE_MAX_REQUEST_PIXELS,
    load_image_bytes,
    probe_image_bytes,
    sniff_is_image,
)
from graft.exceptions import ImageDecodeError, ModelFileError
from graft.predict.base import Predictor
from graft.predict.open import BACKENDS, open_predictor
from graft.predict.results import Outputs, prediction_rows
from graft.serve.batcher import MicroBatcher, QueueFullError
from graft.validation import check_choice

__all__ = ["Limits", "UploadLimit", "create_app", "open_for_serving"]


@dataclass(frozen=True)
class Limits:
    """Server limits (all configurable from ``graft serve``)."""

    max_upload_mb: float = 10.0  # whole request body
    max_files: int = 16  # images per request
    max_pixels: int = SERVE_MAX_PIXELS  # decoded width*height per image (decompression-bomb guard)
    max_request_pixels: int = SERVE_MAX_REQUEST_PIXELS  # all images of one request together
    timeout_s: float = 30.0  # per request, decode + queue + model
    max_batch: int = 16
    batch_wait_ms: float = 2.0
    max_queue: int = 256  # images waiting for the model before 503
    default_top_k: int = 3

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class _UploadLimit:
    """ASGI middleware capping the request body: by Content-Length up front, else while it streams.

    The streaming check raises HTTPException from ``receive``; FastAPI re-raises those from
    body parsing, so the client gets a clean 413 before the rest of the body is read.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        msg = f"upload too large: the limit is {self.limit / 1048576:g} MB per request (--max-upload-mb)"
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.limit:
                return await JSONResponse({"detail": msg}, status_code=413)(scope, receive, send)
        seen = 0

        async def counting_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, msg)
            return message

        await self.app(scope, counting_receive, send)


#: The body cap, for the other apps served the same way (``graft label``).
UploadLimit = _UploadLimit


def _page() -> str:
    return resources.files("graft.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def open_for_serving(model_path: str | os.PathLike, backend: str = "auto", threads: int | None = None) -> Predictor:
    """The predictor to serve: ONNX Runtime unless ``backend="torch"`` (``auto`` falls back to PyTorch).

    No busy-waiting ORT threads and no decoder threads of its own: the event loop and
    the server's decoders share the cores (measured under contention on 2 cores:
    single-image p50 ~45 ms vs ~115 ms with spinning).
    """
    check_choice("backend", backend, BACKENDS, "create_app")
    onnx_opts: dict[str, Any] = {"spin": False, "decode_workers": 0}
    if backend == "torch":
        return open_predictor(model_path, "torch", threads=threads)
    return open_predictor(model_path, "onnx", threads=threads, fallback=backend == "auto", **onnx_opts)


def create_app(
    model_path: str | os.PathLike | None = None,
    *,
    backend: str | Predictor = "auto",
    threads: int | None = None,
    **limits: Any,
) -> FastAPI:
    """Build the FastAPI app serving one model.

    Args:
        model_path: exported ``.onnx`` file or model directory (ignored when ``backend`` is
            an already-open predictor).
        backend: ``auto`` (ONNX Runtime, PyTorch if the export fails), ``onnx``, ``torch``,
            or an open :class:`~graft.predict.base.Predictor`.
        threads: runtime intra-op threads.
        **limits: fields of :class:`Limits` (max_upload_mb, max_files, max_pixels,
            max_request_pixels, timeout_s, max_batch, batch_wait_ms, max_queue, default_top_k).
    """
    unknown = set(limits) - set(Limits.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown limit(s) {sorted(unknown)}; known: {sorted(Limits.__dataclass_fields__)}")
    lim = Limits(**limits)
    if isinstance(backend, str):
        if model_path is None:
            raise TypeError("create_app() needs model_path unless an open predictor is given as backend")
        model = open_for_serving(model_path, backend, threads=threads)
    else:
        model = backend
    batcher = MicroBatcher(
        lambda batch: model.outputs(batch).packed(),  # probabilities and the OOD score, one row per image
        max_batch=lim.max_batch,
        max_wait_ms=lim.batch_wait_ms,
        max_queue=lim.max_queue,
    )
    classify = _Classifier(model, batcher, lim)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Pools live with the server, not the app object: the same app can be served again.
        classify.decoders = ThreadPoolExecutor(max(2, min(8, os.cpu_count() or 2)), thread_name_prefix="graft-decode")
        await batcher.start()
        yield
        await batcher.stop()
        classify.decoders.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="graft image classifier",
        description=f"Classifies images into: {', '.join(model.classes[:50])}.",
        version=str(model.info().get("graft_version") or ""),
        lifespan=lifespan,
    )
    app.state.backend = model
    app.state.batcher = batcher
    app.state.limits = lim
    _add_routes(app, model, batcher, classify, lim)
    app.add_middleware(_UploadLimit, limit=lim.max_upload_bytes)
    return app


class _Classifier:
    """Uploads -> checked, decoded arrays -> micro-batched probabilities -> top-k rows."""

    def __init__(self, model: Predictor, batcher: MicroBatcher, lim: Limits) -> None:
        self.model = model
        self.batcher = batcher
        self.lim = lim
        self.decoders: ThreadPoolExecutor | None = None  # set while the server runs

    def _prepare(self, data: bytes, name: str) -> np.ndarray:
        pre = self.model.preprocessing
        img = load_image_bytes(data, name=name, draft_size=pre.decode_size, max_pixels=self.lim.max_pixels)
        return pre(img)

    async def _read(self, files: list[UploadFile]) -> list[tuple[str, bytes]]:
        """Names and bytes of the uploads, each sniffed as an image, within the request's pixel budget."""
        out = []
        total = 0
        for i, f in enumerate(files):
            name = f.filename or f"file {i + 1}"
            data = await f.read()
            if not data:
                raise HTTPException(415, f"{name}: empty file (0 bytes)")
            if not sniff_is_image(data):
                raise HTTPException(
                    415,
                    f"{name}: not a supported image (JPEG, PNG, GIF, BMP, WebP, TIFF or PNM); "
                    f"the content was checked, not the file name or declared type ({f.content_type})",
                )
            total += probe_image_bytes(data, name=name, max_pixels=self.lim.max_pixels)  # header only
            if total > self.lim.max_request_pixels:
                raise HTTPException(
                    413,
                    f"images too large together: over {self.lim.max_request_pixels / 1e6:g} MP in one request "
                    "(--max-request-pixels); send fewer or smaller images per request",
                )
            out.append((name, data))
        return out

    async def __call__(self, files: list[UploadFile], top_k: int, reject: bool = True) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        try:
            uploads = await self._read(files)
            arrays = await asyncio.gather(
                *(loop.run_in_executor(self.decoders, self._prepare, data, name) for name, data in uploads)
            )  # before the server's start (no decoders yet) this runs in the loop's default pool
        except ImageDecodeError as e:
            code = 413 if e.reason.startswith("image too large") else 415
            raise HTTPException(code, f"{e.path}: {e.reason}") from None
        rows = await self.batcher.submit(list(arrays))
        names = [name for name, _ in uploads]
        threshold = self.model.ood_threshold if reject else None
        out = Outputs.unpack(rows)
        preds = prediction_rows(
            names, out, self.model.classes, top_k, threshold=threshold, thresholds=self.model.spec.thresholds
        )
        return [{"filename": r.pop("path"), **r} for r in preds]


def _add_routes(app: FastAPI, model: Predictor, batcher: MicroBatcher, classify: _Classifier, lim: Limits) -> None:
    page = _page()

    @app.post("/predict", summary="Top-k labels (a multi-label model: the label set) for uploaded images")
    async def predict(
        file: List[UploadFile] = File(..., description="Image file(s); repeat the field for several images."),
        top_k: int = Query(lim.default_top_k, ge=1, le=1000, description="Labels per image."),
        reject: bool = Query(True, description="Label images unlike the training data 'unknown'."),
    ) -> dict[str, Any]:
        if len(file) > lim.max_files:
            raise HTTPException(413, f"too many files: {len(file)} in one request, the limit is {lim.max_files}")
        t0 = time.perf_counter()
        try:
            preds = await asyncio.wait_for(classify(file, top_k, reject), timeout=lim.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"prediction took longer than the {lim.timeout_s:g} s request timeout") from None
        except QueueFullError as e:
            raise HTTPException(503, f"server busy: {e}; retry shortly", headers={"Retry-After": "1"}) from None
        except ModelFileError as e:  # the model answered NaN: an error, never "probability": null
            raise HTTPException(500, str(e)) from None
        return {"predictions": preds, "backend": model.name, "ms": round((time.perf_counter() - t0) * 1000, 2)}

    @app.get("/health", summary="Liveness and batching statistics")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "backend": model.name, "queued": batcher.pending, "batching": batcher.stats.to_dict()}

    @app.get("/model", summary="Classes, backbone and validation metrics of the served model")
    async def model_info() -> dict[str, Any]:
        return {
            "classes": model.classes,
            "backend": model.name,
            "preprocessing": model.preprocessing.to_dict(),
            "limits": asdict(lim),
            **model.info(),
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)
