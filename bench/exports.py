"""Every export format side by side: size, load time, latency, throughput, accuracy, agreement.

Exports MODEL to each format this machine can write (fp32 and int8, through ``graft export``'s
library path, so each file is verified as a user's would be), then loads each file fresh in its
own runtime and times it on this CPU next to PyTorch and ONNX Runtime, in one run.

Usage:
    python bench/exports.py MODEL [--formats onnx,litert,...] [--repeats 30] [--batch 32] [--json FILE]

MODEL is a model directory whose run folder names its training data (``graft train ... --out RUN``
then ``RUN/model``); accuracy is on that data's validation split. Core ML predicts only on macOS:
its row has the size only. ``web`` is timed as its pixel-input ONNX graph in ONNX Runtime (Python);
the browser's WebAssembly runtime is slower.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import git_rev, machine_line, table  # noqa: E402

Run = Callable[[np.ndarray], Any]


def _loader(fmt: str, path: Path, pre: Any) -> Callable[[], tuple[Run, bool]]:
    """A function that loads ``path`` in its runtime: (run on a normalised batch, takes a batch > 1)."""
    from graft.export.job import to_pixels

    def onnx(pixels: bool) -> Callable[[], tuple[Run, bool]]:
        def load() -> tuple[Run, bool]:
            from graft.predict.onnx import onnx_session

            s = onnx_session(str(path), None)
            return (lambda b: s.run(["probabilities"], {"input": to_pixels(b, pre) if pixels else b})), True

        return load

    def openvino() -> tuple[Run, bool]:
        import openvino as ov

        c = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return (lambda b: c(to_pixels(b, pre))), True

    def executorch() -> tuple[Run, bool]:
        import torch
        from executorch.runtime import Runtime

        m = Runtime.get().load_program(str(path)).load_method("forward")
        return (lambda b: m.execute([torch.from_numpy(to_pixels(b, pre))])), False

    def litert() -> tuple[Run, bool]:
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path))
        it.allocate_tensors()
        i = it.get_input_details()[0]["index"]

        def run(b: np.ndarray) -> None:
            it.set_tensor(i, to_pixels(b, pre))
            it.invoke()

        return run, False

    loaders = {"onnx": onnx(False), "web": onnx(True), "openvino": openvino, "executorch": executorch, "litert": litert}
    return loaders[fmt]


def _time(run: Run, batch: np.ndarray, batched: bool, repeats: int) -> tuple[float, float]:
    """(median single-image latency in ms, images per second over ``batch``)."""
    one = batch[:1]
    for _ in range(3):
        run(one)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        run(one)
        ts.append(time.perf_counter() - t)
    t = time.perf_counter()
    if batched:
        run(batch)
    else:
        for i in range(len(batch)):
            run(batch[i : i + 1])
    return float(np.median(ts) * 1000), len(batch) / (time.perf_counter() - t)


def _pytorch_row(model: Path, batch: np.ndarray, repeats: int, acc: float | None) -> list[object]:
    import torch

    from graft.artifact.model_dir import load_model
    from graft.predict.torch import TorchPredictor

    t = time.perf_counter()
    lm = load_model(model)
    pred = TorchPredictor(lm.net, lm.spec)
    load = time.perf_counter() - t
    with torch.inference_mode():
        lat, thr = _time(pred.predict_arrays, batch, True, repeats)
    size = (model / "model.safetensors").stat().st_size
    return ["pytorch", "fp32", f"{size / 1e6:.1f}", f"{load:.2f}", f"{lat:.1f}", f"{thr:.0f}", _f(acc), "reference"]


def _f(x: float | None, spec: str = ".4f") -> str:
    return "n/a" if x is None else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--formats", default="onnx,litert,coreml,executorch,openvino,web")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    from graft.export import ExportOptions, export_formats
    from graft.export.catalogue import get_format
    from graft.export.registry import missing_requirement

    names = [n for n in a.formats.split(",") if missing_requirement(get_format(n)) is None]
    rows, docs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for int8 in (False, True):
            todo = [n for n in names if not int8 or get_format(n).int8]
            res = export_formats(a.model, todo, Path(tmp) / ("int8" if int8 else "fp32"), ExportOptions(int8=int8))
            for name, why in res.skipped.items():
                print(f"{name} {'int8' if int8 else 'fp32'}: not written: {why}", file=sys.stderr)
            docs += [r.to_dict() for r in res.reports]
            for r in res.reports:
                rows.append(_row(r, a, int8))
        from graft.artifact.model_dir import load_model
        from graft.export import checks
        from graft.export.job import ExportJob

        lm = load_model(a.model)
        job = ExportJob(lm, checks.training_data_dir(lm.path, lm.config), Path(tmp))
        batch = job.parity.batch[: a.batch]
        torch_acc = checks.accuracy(job.reference, job.parity.labels) if job.parity.labels is not None else None
        rows.insert(0, _pytorch_row(job.lm.path, batch, a.repeats, torch_acc))
    headers = [
        "format",
        "precision",
        "size MB",
        "load s",
        "latency ms (1 image)",
        f"images/s (batch {a.batch})",
        "val accuracy",
        "top-1 agreement / max |dp|",
    ]
    print(f"# graft export formats on {a.model} (git {git_rev()})\n{machine_line()}\n")
    print(table(headers, rows))
    if a.json:
        a.json.write_text(json.dumps({"machine": machine_line(), "rows": rows, "reports": docs}, indent=1, default=str))


_BATCH: dict[str, np.ndarray] = {}


def _row(r: Any, a: argparse.Namespace, int8: bool) -> list[object]:
    """Time one written file in a fresh load of its runtime."""
    from graft.artifact.model_dir import load_model
    from graft.export import checks

    if "b" not in _BATCH:
        lm = load_model(a.model)
        data = checks.training_data_dir(lm.path, lm.config)
        val = checks.val_split(lm.path, lm.classes, data)
        assert val is not None, "the bench needs a model whose training data has a validation split"
        _BATCH["b"] = checks.load_batch(val[0][: a.batch], lm.preprocessing)[0]
        _BATCH["pre"] = lm.preprocessing  # type: ignore[assignment]
    prec = r.quantization or "fp32"
    agree = "inspection only" if r.top1_agreement is None else f"{r.top1_agreement:.1%} / {r.max_prob_diff:.1e}"
    if r.top1_agreement is None:
        return [r.format, prec, f"{r.size_bytes / 1e6:.1f}", "n/a", "n/a", "n/a", "n/a", agree]
    t = time.perf_counter()
    path = r.path / "model.onnx" if r.format == "web" else r.path
    run, batched = _loader(r.format, path, _BATCH["pre"])()
    load = time.perf_counter() - t
    lat, thr = _time(run, _BATCH["b"], batched, a.repeats)
    return [
        r.format,
        prec,
        f"{r.size_bytes / 1e6:.1f}",
        f"{load:.2f}",
        f"{lat:.1f}",
        f"{thr:.0f}",
        _f(r.accuracy),
        agree,
    ]


if __name__ == "__main__":
    main()
