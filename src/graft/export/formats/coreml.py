"""``--format coreml``: a Core ML ``.mlpackage`` (ML program) converted from the PyTorch model with coremltools.

The input is an RGB image at the model's input size (normalisation inside); a
single-label model is a Core ML classifier (class labels in the model, ``classLabel`` and
``classLabel_probs`` out). graft's document is in the user-defined metadata
(``graft_config``). Core ML predicts only on macOS, so off macOS the saved spec is read
back and checked (input, outputs, class labels, metadata) and prediction is not verified.
"""

from __future__ import annotations

import json
import platform
import warnings
from pathlib import Path
from typing import Any

from graft.exceptions import ExportError
from graft.export.job import Built, ExportJob, to_pixels
from graft.export.metadata import metadata_document
from graft.export.registry import register_format

__all__ = ["write_coreml", "read_coreml", "coreml_class_labels"]


def _spec(path: Path) -> Any:
    import coremltools as ct

    return ct.models.MLModel(str(path), skip_model_load=True).get_spec()


def read_coreml(path: Path) -> dict[str, Any]:
    """graft's document from an ``.mlpackage``'s user-defined metadata."""
    return dict(json.loads(_spec(path).description.metadata.userDefined["graft_config"]))


def coreml_class_labels(spec: Any) -> list[str]:
    """The class labels of an ML-program classifier (the ``classify`` op's constant)."""
    fn = spec.mlProgram.functions["main"]
    ops = list(fn.block_specializations[fn.opset].operations)
    for op in ops:
        if op.type != "classify":
            continue
        arg = op.inputs["classes"].arguments[0]
        if arg.WhichOneof("binding") == "value":
            return _strings(arg.value.immediateValue)
        const = next((o for o in ops if o.type == "const" and any(x.name == arg.name for x in o.outputs)), None)
        return _strings(const.attributes["val"].immediateValue) if const is not None else []
    return []


def _strings(value: Any) -> list[str]:
    """The strings of an immediate value: one string tensor, or a list of one-string tensors."""
    if value.WhichOneof("value") == "list":
        return [s for v in value.list.values for s in v.immediateValue.tensor.strings.values]
    return list(value.tensor.strings.values)


def _convert(job: ExportJob, int8: bool) -> Any:
    import coremltools as ct
    import torch

    from graft.export.wrap import pixel_model

    h, w = job.pre.input_size
    net = pixel_model(job.lm, probs_only=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # torch.export, not TorchScript: coremltools' TorchScript frontend fails on timm's dynamic 'same'
        # padding with numpy 2 ("only 0-dimensional arrays can be converted to Python scalars")
        traced = torch.export.export(net, (torch.zeros(1, 3, h, w),)).run_decompositions({})
        ml = ct.convert(
            traced,
            inputs=[ct.ImageType(name="image", shape=(1, 3, h, w), color_layout=ct.colorlayout.RGB)],
            outputs=None if not job.spec.multi_label else [ct.TensorType(name="probabilities")],
            classifier_config=None if job.spec.multi_label else ct.ClassifierConfig(list(job.spec.classes)),
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS15,
            compute_precision=ct.precision.FLOAT32,
        )
        if int8:
            cfg = ct.optimize.coreml.OptimizationConfig(
                global_config=ct.optimize.coreml.OpLinearQuantizerConfig(mode="linear_symmetric")
            )
            ml = ct.optimize.coreml.linear_quantize_weights(ml, config=cfg)
    return ml


@register_format(
    "coreml",
    suffix=".mlpackage",
    extra="coreml",
    requires=("coremltools",),
    verified_by="inspection",
    int8="int8 weights (coremltools linear_quantize_weights; activations stay float)",
    reader=read_coreml,
)
def write_coreml(job: ExportJob, dst: Path, int8: bool) -> Built:
    from graft._version import __version__

    ml = _convert(job, int8)
    quant = "int8-weights" if int8 else None
    doc = metadata_document(job.spec, "coreml", quantization=quant)
    ml.user_defined_metadata["graft_config"] = json.dumps(doc)
    ml.user_defined_metadata["classes"] = json.dumps(list(job.spec.classes))
    ml.user_defined_metadata["graft_version"] = __version__
    ml.short_description = f"graft image classifier ({len(job.spec.classes)} classes)"
    ml.version = __version__
    ml.save(str(dst))
    inspected = _inspect(job, dst)
    predict = None
    if platform.system() == "Darwin":  # pragma: no cover - Core ML predicts only on macOS
        import numpy as np
        from PIL import Image

        loaded = type(ml)(str(dst))

        def predict(batch: np.ndarray) -> np.ndarray:
            px = to_pixels(batch, job.pre).clip(0, 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
            out = [loaded.predict({"image": Image.fromarray(p)})["classLabel_probs"] for p in px]
            return np.asarray([[o[c] for c in job.spec.classes] for o in out], np.float32)

    return Built(dst, read_coreml(dst), predict, inspected=inspected, quantization=quant)


def _inspect(job: ExportJob, path: Path) -> list[str]:
    """Read the saved spec back and check input, outputs, class labels and metadata; one line per fact."""
    spec = _spec(path)
    h, w = job.pre.input_size
    img = spec.description.input[0].type.imageType
    problems = []
    if (img.width, img.height) != (w, h) or spec.description.input[0].name != "image":
        problems.append(f"input is {spec.description.input[0].name} {img.width}x{img.height}, expected image {w}x{h}")
    outs = [o.name for o in spec.description.output]
    if not job.spec.multi_label:
        labels = coreml_class_labels(spec)
        if labels != list(job.spec.classes):
            problems.append(f"class labels {labels[:5]} differ from the model's {list(job.spec.classes)[:5]}")
        if spec.description.predictedFeatureName != "classLabel" or "classLabel_probs" not in outs:
            problems.append(f"outputs {outs} lack classLabel/classLabel_probs")
    doc = json.loads(spec.description.metadata.userDefined.get("graft_config", "{}"))
    if doc.get("classes") != list(job.spec.classes) or doc.get("preprocessing") != job.pre.to_dict():
        problems.append("the graft_config metadata does not hold the model's classes and preprocessing")
    if problems:
        raise ExportError(f"the saved Core ML model {path.name} is not what graft wrote: {'; '.join(problems)}")
    return [
        f"input image {w}x{h} RGB",
        f"outputs {', '.join(outs)}",
        f"{len(job.spec.classes)} class labels in order",
        "classes and preprocessing in user-defined metadata",
    ]
