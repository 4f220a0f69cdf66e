"""``graft serve``: an HTTP API and a web page for a trained model.

``create_app(model_path, **limits)`` returns a FastAPI app (run it with any ASGI
server); ``graft serve MODEL`` runs it on uvicorn. Given an ``.onnx`` file the server
never imports torch.
"""

from __future__ import annotations

from graft.serve.app import Limits, create_app, open_for_serving
from graft.serve.server import run_server

__all__ = ["Limits", "create_app", "open_for_serving", "run_server"]
