"""ONNX Runtime sessions: the one place graft sets their options (imports neither torch nor timm).

Both the embedding engine (an exported backbone) and the ONNX predictor (an exported
model, also behind ``graft serve``) open their sessions here.

Memory: ONNX Runtime's "memory pattern" pre-plans one block for every intermediate
tensor of a batch; for EfficientNet-Lite0 at 288 px and batch 32 that alone held about
370 MiB more than planning tensor by tensor, at the same throughput (measured on 2 AMD
EPYC cores: 976 vs 607 MiB peak, 115 img/s either way). So it is off.
"""

from __future__ import annotations

from typing import Any, Sequence

from graft.exceptions import ModelFileError

__all__ = ["onnx_session"]


def onnx_session(
    model: str | bytes,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    *,
    spin: bool = True,
    name: str | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for a file path or serialised model.

    Args:
        model: path of an ``.onnx`` file, or its bytes.
        threads: intra-op threads (None: ONNX Runtime's choice, one per physical core).
        providers: execution providers (default CPU).
        spin: let idle threads busy-wait between calls (lowest latency on an idle CPU;
            off where decoders or a server need those cycles).
        name: what to call ``model`` in errors (default: the path).

    Raises:
        ModelFileError: ONNX Runtime cannot load the model (one line, naming it).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: ORT's warnings are noise for users
    so.enable_mem_pattern = False  # see the module docstring
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(model, so, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
        what = name or (model if isinstance(model, str) else "ONNX model")
        raise ModelFileError(f"{what}: ONNX Runtime cannot load this file ({type(e).__name__}: {e})") from None
