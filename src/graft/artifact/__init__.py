"""Artifacts: the model folder, the ONNX file format and the run folder, all described by one :class:`ArtifactSpec`.

Importing this package stays torch-free; ``graft.artifact.model_dir`` and
``graft.artifact.onnx_write`` need torch.
"""

from graft.artifact.onnx_meta import METADATA_KEY, ONNX_FORMAT, onnx_metadata, spec_from_onnx_metadata
from graft.artifact.run_folder import RunFolder
from graft.artifact.spec import MODEL_FORMAT, ArtifactSpec, runtime_versions

__all__ = [
    "METADATA_KEY",
    "MODEL_FORMAT",
    "ONNX_FORMAT",
    "ArtifactSpec",
    "RunFolder",
    "onnx_metadata",
    "runtime_versions",
    "spec_from_onnx_metadata",
]
