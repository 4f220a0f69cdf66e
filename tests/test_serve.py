"""HTTP API of graft serve on the tiny model: every status code, batching, backends."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from graft.export import export_onnx
from graft.serve import create_app


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(tiny_model_dir, out)
    return out


@pytest.fixture(scope="module")
def client(tiny_onnx: Path):
    with TestClient(create_app(tiny_onnx, max_upload_mb=1, max_files=4)) as c:
        yield c


def _png(size: tuple[int, int] = (40, 30), colour: tuple[int, int, int] = (220, 40, 40), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else 0).save(buf, "PNG")
    return buf.getvalue()


def _red(synthetic_dataset: Path) -> bytes:
    return (synthetic_dataset / "val" / "red" / "red_08.png").read_bytes()


def test_predict_200_single_and_several(client: TestClient, synthetic_dataset: Path) -> None:
    r = client.post("/predict", files={"file": ("red.png", _red(synthetic_dataset), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["backend"] == "onnxruntime" and body["ms"] > 0
    (p,) = body["predictions"]
    assert p["filename"] == "red.png" and p["label"] == "red"
    assert len(p["top_k"]) == 3 and abs(sum(t["probability"] for t in p["top_k"]) - 1) < 1e-4
    green = (synthetic_dataset / "val" / "green" / "green_08.png").read_bytes()
    r = client.post(
        "/predict?top_k=1",
        files=[
            ("file", ("a.png", _red(synthetic_dataset), "image/png")),
            ("file", ("b.bin", green, "application/octet-stream")),
        ],
    )
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["filename"] for p in preds] == ["a.png", "b.bin"]  # content sniffed, extension irrelevant
    assert [p["label"] for p in preds] == ["red", "green"] and all(len(p["top_k"]) == 1 for p in preds)


def test_same_probabilities_as_library(client: TestClient, tiny_onnx: Path, synthetic_dataset: Path) -> None:
    from graft.predict.onnx import OnnxPredictor

    path = synthetic_dataset / "val" / "blue" / "blue_10.png"
    ref = OnnxPredictor(tiny_onnx).predict([path], top_k=3)[0]
    got = client.post("/predict", files={"file": ("x.png", path.read_bytes())}).json()["predictions"][0]
    assert got["label"] == ref["label"]
    np.testing.assert_allclose(
        [t["probability"] for t in got["top_k"]], [t["probability"] for t in ref["top_k"]], atol=1e-6
    )


def test_413_upload_too_large_by_header_and_by_stream(client: TestClient) -> None:
    big = b"\xff\xd8\xff" + b"0" * (1_100_000)
    r = client.post("/predict", files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and "--max-upload-mb" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit must hold while streaming
        head = b'--B\r\nContent-Disposition: form-data; name="file"; filename="s.jpg"\r\n\r\n'
        yield head
        for _ in range(40):
            yield b"1" * 65536

    r = client.post("/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=B"})
    assert r.status_code == 413, r.text


def test_413_decompression_bomb_and_too_many_files(client: TestClient, synthetic_dataset: Path) -> None:
    bomb = _png((9000, 9000), mode="1")  # 81 megapixels in a few kB
    assert len(bomb) < 50_000
    r = client.post("/predict", files={"file": ("bomb.png", bomb, "image/png")})
    assert r.status_code == 413 and "decompression-bomb" in r.json()["detail"]
    files = [("file", (f"{i}.png", _red(synthetic_dataset), "image/png")) for i in range(5)]
    r = client.post("/predict", files=files)
    assert r.status_code == 413 and "too many files" in r.json()["detail"]


def test_415_not_an_image(client: TestClient) -> None:
    r = client.post("/predict", files={"file": ("cat.jpg", b"<html>definitely not a jpeg</html>", "image/jpeg")})
    assert r.status_code == 415 and "cat.jpg" in r.json()["detail"]
    r = client.post("/predict", files={"file": ("empty.png", b"", "image/png")})
    assert r.status_code == 415 and "empty" in r.json()["detail"]
    truncated = _png((64, 64))[:60]  # sniffs as PNG, cannot decode
    r = client.post("/predict", files={"file": ("cut.png", truncated, "image/png")})
    assert r.status_code == 415 and "cut.png" in r.json()["detail"]


def test_422_missing_file_or_bad_top_k(client: TestClient, synthetic_dataset: Path) -> None:
    r = client.post("/predict", data={"image": "x"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "file"]
    r = client.post("/predict?top_k=0", files={"file": ("a.png", _red(synthetic_dataset))})
    assert r.status_code == 422


def test_504_timeout(tiny_onnx: Path, synthetic_dataset: Path) -> None:
    with TestClient(create_app(tiny_onnx, timeout_s=1e-6)) as c:
        r = c.post("/predict", files={"file": ("a.png", _red(synthetic_dataset))})
        assert r.status_code == 504 and "timeout" in r.json()["detail"]
        assert c.get("/health").status_code == 200  # the server survives


def test_404_health_model_page_openapi(client: TestClient, synthetic_dataset: Path) -> None:
    assert client.get("/nothing-here").status_code == 404
    assert client.post("/predict", files={"file": ("a.png", _red(synthetic_dataset))}).status_code == 200
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["batching"]["images"] >= 1
    m = client.get("/model").json()
    assert m["classes"] == ["blue", "green", "red"] and m["backbone"]["name"] == "test_efficientnet"
    assert "accuracy" in m["metrics"] and m["limits"]["max_files"] == 4
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="picker"' in page.text and "predict?top_k=" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # works offline: no CDN
    schema = client.get("/openapi.json").json()
    assert "/predict" in schema["paths"] and "/model" in schema["paths"]


def test_micro_batching_under_concurrency(tiny_onnx: Path, synthetic_dataset: Path) -> None:
    app = create_app(tiny_onnx, max_batch=8, batch_wait_ms=20)
    img = _red(synthetic_dataset)

    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:
            rs = await asyncio.gather(*[ac.post("/predict", files={"file": ("a.png", img)}) for _ in range(16)])
            stats = (await ac.get("/health")).json()["batching"]
        await app.state.batcher.stop()
        return [r.status_code for r in rs], stats

    codes, stats = asyncio.run(go())
    assert codes == [200] * 16
    assert stats["images"] == 16 and stats["largest_batch"] > 1 and stats["batches"] < 16


def test_503_when_queue_is_full(tiny_onnx: Path, synthetic_dataset: Path) -> None:
    with TestClient(create_app(tiny_onnx, max_queue=1, max_files=4)) as c:
        files = [("file", (f"{i}.png", _red(synthetic_dataset))) for i in range(2)]
        r = c.post("/predict", files=files)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"


def test_model_dir_backends_agree(tiny_model_dir: Path, synthetic_dataset: Path) -> None:
    img = (synthetic_dataset / "val" / "blue" / "blue_09.png").read_bytes()
    out = {}
    for backend in ("auto", "torch"):
        with TestClient(create_app(tiny_model_dir, backend=backend)) as c:
            r = c.post("/predict", files={"file": ("b.png", img)})
            assert r.status_code == 200
            out[backend] = r.json()
    assert out["auto"]["backend"] == "onnxruntime" and out["torch"]["backend"] == "torch"
    a, t = out["auto"]["predictions"][0], out["torch"]["predictions"][0]
    assert a["label"] == t["label"] and abs(a["probability"] - t["probability"]) < 1e-4


def test_bad_arguments(tiny_onnx: Path, tmp_path: Path) -> None:
    from graft.exceptions import ModelFileError

    with pytest.raises(TypeError, match="unknown limit"):
        create_app(tiny_onnx, max_upload=3)
    with pytest.raises(ModelFileError):
        create_app(tmp_path / "nothing")
    with pytest.raises(ValueError, match="backend"):
        create_app(tiny_onnx, backend="tensorflow")


def test_onnx_server_does_not_import_torch(tiny_onnx: Path, synthetic_dataset: Path) -> None:
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from graft.serve import create_app\n"
        f"with TestClient(create_app({str(tiny_onnx)!r})) as c:\n"
        f"    r = c.post('/predict', files={{'file': ('a.png', open({str(synthetic_dataset / 'val/red/red_09.png')!r}, 'rb').read())}})\n"
        "    assert r.status_code == 200, r.text\n"
        "print('torch' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "False"
