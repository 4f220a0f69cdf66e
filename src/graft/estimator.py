"""scikit-learn's estimator contract, for graft's facade: parameters in, learned state ending in ``_``.

Written here rather than inherited from :class:`sklearn.base.BaseEstimator` so that a cold
``graft train`` does not pay for importing scikit-learn; :func:`sklearn.base.clone` works on
it all the same (it needs only ``get_params(deep=False)`` and a constructor that stores its
arguments unchanged). Parameters are checked in one place, :meth:`Estimator._validate_params`,
against the subclass's declared ``_parameter_constraints`` (scikit-learn's convention).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, ClassVar

from graft.validation import Constraint, invalid_parameter, validate_params

__all__ = ["Estimator"]


class Estimator:
    """``get_params``/``set_params``, a repr of the changed parameters, declared constraints."""

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {}

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters (no parameter of graft's is itself an estimator, so ``deep`` changes nothing)."""
        return {n: getattr(self, n) for n in self._get_param_names()}

    def set_params(self, **params: Any) -> Any:
        """Set constructor parameters; an unknown name raises :class:`InvalidParameterError`. Returns self."""
        names = self._get_param_names()
        for name, value in params.items():
            if name not in names:
                raise invalid_parameter(name, f"{type(self).__name__}.set_params", "one of " + ", ".join(names), name)
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {n: p.default for n, p in inspect.signature(type(self).__init__).parameters.items()}
        changed = {k: v for k, v in self.get_params().items() if v is not defaults.get(k) and v != defaults.get(k)}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def _validate_params(self) -> None:
        """Check every parameter against ``_parameter_constraints``, with graft's one message template."""
        validate_params(self.get_params(), self._parameter_constraints, type(self).__name__)

    def _options_of(self, cls: Any) -> Any:
        """The options dataclass ``cls`` filled from this estimator's parameters of the same names."""
        params = self.get_params()
        return cls(**{f.name: params[f.name] for f in dataclasses.fields(cls)})
