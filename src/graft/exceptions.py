"""All errors graft raises on purpose.

Every class subclasses a built-in so callers can catch either the graft type or the
familiar built-in (``except ValueError`` keeps working). Messages follow one rule:
say what was expected, what was found, and how to fix it, naming the file or folder.
The CLI turns any :class:`GraftError` into a one-line message and its ``exit_code``;
anything else is a bug and shows its traceback.

Exit codes (the same in every command):

* 1: the operation failed (an export that does not match, a training that cannot go on, a full
  or read-only disk);
* 2: the input is wrong: a parameter or option, the dataset, a model file (fix the input);
* 3: pretrained weights are missing or do not fit the backbone;
* 130: interrupted (Ctrl-C); 143: stopped by SIGTERM (``docker stop``, systemd): see :class:`Interrupted`.
"""

from __future__ import annotations

__all__ = [
    "GraftError",
    "InvalidParameterError",
    "DataError",
    "ImageDecodeError",
    "UnknownBackboneError",
    "WeightsNotFoundError",
    "WeightsMismatchError",
    "NotFittedError",
    "ModelFileError",
    "ExportError",
    "WorkerTimeoutError",
    "DistributedError",
    "StorageError",
    "Interrupted",
]


class GraftError(Exception):
    """Base class of every error graft raises deliberately."""

    exit_code: int = 1


class InvalidParameterError(GraftError, ValueError):
    """A parameter or option has a value graft cannot use (see :mod:`graft.validation`)."""

    exit_code = 2


class DataError(GraftError, ValueError):
    """The dataset folder or an input file is not usable as given."""

    exit_code = 2


class ImageDecodeError(DataError):
    """One image could not be decoded (corrupt, truncated, empty, too large, not an image).

    Attributes:
        path: the offending file.
        reason: short human-readable reason, also used in skip lists.
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnknownBackboneError(GraftError, ValueError):
    """The backbone name is not a timm architecture."""

    exit_code = 2


class WeightsNotFoundError(GraftError, FileNotFoundError):
    """No pretrained weights could be found for a backbone (offline, no file given)."""

    exit_code = 3


class WeightsMismatchError(GraftError, ValueError):
    """A weights file does not fit the backbone architecture."""

    exit_code = 3


class NotFittedError(GraftError, AttributeError):
    """A method that needs a trained model was called before ``fit``."""

    exit_code = 2


class ModelFileError(GraftError, ValueError):
    """A saved model directory or file is missing, incomplete or from an unknown format."""

    exit_code = 2


class WorkerTimeoutError(GraftError, RuntimeError):
    """A decoding worker process stopped answering: an error naming the cause instead of a silent hang."""


class ExportError(GraftError, RuntimeError):
    """Export failed, or the exported model does not match the PyTorch model."""


class DistributedError(GraftError, RuntimeError):
    """A process of a multi-process job (``--devices N``, torchrun) failed, or lost its peers."""


class StorageError(GraftError, OSError):
    """A folder graft writes to is full, read-only or not writable (``--out``, ``GRAFT_HOME``, a model folder)."""


class Interrupted(BaseException):
    """Ctrl-C (SIGINT) or SIGTERM stopped graft (the CLI turns both signals into this).

    Like :class:`KeyboardInterrupt` it is not an :class:`Exception`, so no ``except Exception``
    swallows it and clean-up code runs as for Ctrl-C. Exit code: 128 + the signal's number
    (130 for SIGINT, 143 for SIGTERM), the shells' convention.
    """

    def __init__(self, signum: int = 2) -> None:
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
