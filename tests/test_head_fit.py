"""Linear head: same optimum as scikit-learn, C chosen by CV, raw-feature weights."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from graft.training.head.fit import class_weights_balanced
from graft.training.head.linear_probe import CVOptions, fit_linear_head


def _blobs(n: int, d: int, k: int, seed: int = 0, sep: float = 1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, sep, (k, d))
    y = rng.integers(0, k, n)
    X = centres[y] + rng.normal(0, 1, (n, d)) + 3.0  # offset: features are not centred
    return X.astype(np.float32), y


def _scale(X: np.ndarray) -> float:
    Z = X - X.mean(0)
    return 1.0 / float(np.sqrt((Z**2).mean()))


@pytest.mark.parametrize("n,d,k", [(300, 20, 3), (60, 200, 2)])  # n > d, and n < d (row space)
def test_fixed_C_matches_sklearn_optimum(n: int, d: int, k: int) -> None:
    X, y = _blobs(n, d, k, sep=0.3)
    C = 0.05
    fit = fit_linear_head(X, y, k, C=C)
    g = _scale(X)
    # sklearn's binary model has one weight vector; softmax over two has two, whose
    # penalty at the optimum is half as large: the same model at twice the C.
    ref = LogisticRegression(C=C * g * g * (2 if k == 2 else 1), max_iter=5000, tol=1e-10).fit(X, y)
    p_ref = ref.predict_proba(X)
    logits = fit.logits(X)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    if k == 2:  # sklearn's binary model is one logit; compare probabilities
        np.testing.assert_allclose(p[:, 1], p_ref[:, 1], atol=5e-3)
    else:
        np.testing.assert_allclose(p, p_ref, atol=5e-3)


def test_cv_picks_a_C_and_generalises() -> None:
    X, y = _blobs(600, 64, 4, sep=0.4)
    Xte, yte = X[400:], y[400:]
    fit = fit_linear_head(X[:400], y[:400], 4)
    assert fit.C in fit.cv_losses and fit.cv_losses[fit.C] == min(fit.cv_losses.values())
    assert set(fit.cv_scores) == set(fit.cv_losses)
    assert fit.weight.shape == (4, 64) and fit.bias.shape == (4,)
    assert (fit.logits(Xte).argmax(1) == yte).mean() > 0.85
    assert fit.seconds > 0


def test_cv_path_stops_early_when_loss_keeps_rising() -> None:
    X, _ = _blobs(200, 300, 2)
    y = np.random.default_rng(1).integers(0, 2, 200)  # labels are noise: strongest regularisation wins
    grid = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1, 3, 10, 30, 100)
    fit = fit_linear_head(X, y, 2, cv=CVOptions(C_grid=tuple(grid)))
    assert fit.C == 1e-3
    assert sorted(fit.cv_losses) == list(grid[:3])  # the slow, weakly regularised end never ran


def test_groups_and_class_weights() -> None:
    X, y = _blobs(120, 16, 3, sep=0.8)
    X = np.concatenate([X, X + 0.05]).reshape(2, 120, 16).transpose(1, 0, 2).reshape(240, 16)
    y = y.repeat(2)
    groups = np.repeat(np.arange(120), 2)  # pairs of views of one image
    cw = class_weights_balanced(y, 3)
    fit = fit_linear_head(X, y, 3, class_weight=cw, groups=groups)
    assert (fit.logits(X).argmax(1) == y).mean() > 0.8
    # a class absent from the training data does not crash the fit
    fit4 = fit_linear_head(X, y, 4, C=1.0)
    assert fit4.weight.shape == (4, 16)


def test_large_feature_matrices_are_fitted_in_chunks_without_a_centred_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the size limit the centred features are never materialised; the fit is the same."""
    from graft.training.head import linear_probe as lp
    from graft.training.head import logreg

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 900)
    X = np.abs(rng.normal(0, 0.3, (3, 64))[y] + rng.normal(0, 1, (900, 64))).astype(np.float32)
    whole = lp.fit_linear_head(X, y, 3)
    seen: list[int] = []
    real = lp._Centred.chunks

    def spy(self):  # type: ignore[no-untyped-def]
        for sl, c in real(self):
            seen.append(len(c))
            yield sl, c

    monkeypatch.setattr(lp, "_MATERIALISE_MAX", 10_000)
    monkeypatch.setattr(logreg, "_CHUNK_VALUES", 64 * 100)  # 100-row chunks
    monkeypatch.setattr(lp._Centred, "chunks", spy)
    chunked = lp.fit_linear_head(X, y, 3)
    assert seen and max(seen) == 100, "the large path should run over 100-row chunks"
    assert chunked.C == whole.C and chunked.cv_scores == whole.cv_scores
    np.testing.assert_allclose(chunked.weight, whole.weight, rtol=0, atol=2e-3 * np.abs(whole.weight).max())
    np.testing.assert_allclose(chunked.bias, whole.bias, rtol=0, atol=2e-3 * max(np.abs(whole.bias).max(), 1e-3))
    assert X.flags.writeable and np.isfinite(X).all()  # the caller's matrix is untouched


def test_a_column_slice_is_fitted_without_a_copy_and_like_a_copy() -> None:
    """The final features are a column range of multi-depth features: a view, fitted as its copy is."""
    from graft.training.head import linear_probe as lp
    from graft.training.head.feature_choice import column_view

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 400)
    X = (rng.normal(0, 0.3, (3, 48))[y] + rng.normal(0, 1, (400, 48))).astype(np.float32)
    view = column_view(X, range(16, 48))
    assert np.shares_memory(view, X) and not view.flags.c_contiguous
    gathered = column_view(X, [0, 5, 9])
    assert not np.shares_memory(gathered, X) and gathered.flags.c_contiguous
    a, b = lp.fit_linear_head(view, y, 3), lp.fit_linear_head(np.ascontiguousarray(view), y, 3)
    assert a.C == b.C and a.cv_scores == b.cv_scores
    np.testing.assert_allclose(a.weight, b.weight, rtol=0, atol=1e-5 * np.abs(b.weight).max())
