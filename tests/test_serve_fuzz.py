"""Fuzz graft's HTTP API from its own OpenAPI schema (schemathesis, in-process: no socket at all).

Bounded in count (``max_examples`` per operation) and in time (``deadline=None`` but the
app's own 10 s request timeout): every generated request, valid or not, must get a
non-5xx answer, and the server must still answer ``/health`` and classify a real image.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from starlette.testclient import TestClient

from graft.serve import create_app

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency (pip install -e .[dev])")


def test_fuzzed_requests_never_get_a_server_error(tiny_model_dir: Path, synthetic_dataset: Path) -> None:
    app = create_app(tiny_model_dir, backend="torch", max_upload_mb=1, max_files=4, timeout_s=10)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/predict", "/health", "/model"}
    seen: list[tuple[str, int]] = []
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:  # noqa: ANN001 - a schemathesis Case
            response = case.call()
            seen.append((case.path, response.status_code))
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])

        check()
    assert len(seen) >= 30 and any(code >= 400 for _, code in seen)  # invalid requests were generated too
    with TestClient(app) as client:
        assert client.get("/health").json()["status"] == "ok"
        img = (synthetic_dataset / "val" / "red" / "red_08.png").read_bytes()
        r = client.post("/predict", files={"file": ("red.png", img, "image/png")})
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "red"
