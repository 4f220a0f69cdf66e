"""The HTTP app of ``graft label``: one page, the current image, and answer/skip/undo endpoints.

Served by :func:`graft.serve.run_server` (the limits of ``graft serve``: read deadlines, connection
cap, 127.0.0.1 by default). Requests are small JSON bodies (capped); images are read only from
the session's queue, by position, so no request can read any other file.
"""

from __future__ import annotations

import asyncio
import mimetypes
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, Field

from graft.label.session import LabelSession
from graft.serve.app import UploadLimit

__all__ = ["create_label_app"]

_MAX_BODY = 16 * 1024  # an answer is a few bytes of JSON


class _Answer(BaseModel):
    id: int = Field(ge=0)
    label: str = Field(max_length=1000)


class _Skip(BaseModel):
    id: int = Field(ge=0)


def _page() -> str:
    return resources.files("graft.label").joinpath("static/label.html").read_text(encoding="utf-8")


def create_label_app(session: LabelSession) -> FastAPI:
    """The app of one labelling session; answers are written by the session's store before each reply."""
    app = FastAPI(title="graft label", docs_url=None, redoc_url=None, openapi_url=None)
    lock = asyncio.Lock()  # one answer at a time: the file's lines stay in answer order
    page = _page()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.get("/api/state")
    async def state() -> dict[str, Any]:
        return session.state()

    @app.get("/api/image/{index}")
    async def image(index: int) -> FileResponse:
        try:
            path = session.image_path(index)
        except KeyError:
            raise HTTPException(404, "no such image") from None
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=mime, headers={"Cache-Control": "no-store"})

    async def act(fn: Any, *args: Any) -> dict[str, Any]:
        async with lock:
            try:
                await asyncio.to_thread(fn, *args)  # the fsync runs off the event loop
            except LookupError as e:
                raise HTTPException(409, str(e).strip("'\"")) from None
            except ValueError as e:
                raise HTTPException(422, str(e)) from None
            return session.state()

    @app.post("/api/answer")
    async def answer(body: _Answer) -> dict[str, Any]:
        return await act(session.answer, body.id, body.label)

    @app.post("/api/skip")
    async def skip(body: _Skip) -> dict[str, Any]:
        return await act(session.skip, body.id)

    @app.post("/api/undo")
    async def undo() -> dict[str, Any]:
        return await act(session.undo)

    app.add_middleware(UploadLimit, limit=_MAX_BODY)
    return app
