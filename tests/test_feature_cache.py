"""The feature cache proves each entry belongs to its row before its features are used (issue 27, item 1)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from graft.features.embedder import EmbedResult
from graft.features.extract import extract_features
from graft.features.options import EmbedOptions

DIM = 8
SPEC = {"backbone": "fake", "dim": DIM}


class FakeEmbedder:
    """Features that depend on the file name only, so a wrong row is easy to see; counts what it embeds."""

    def __init__(self) -> None:
        self.embedded: list[str] = []

    @staticmethod
    def features(path: str) -> np.ndarray:
        rng = np.random.default_rng(sum(Path(path).name.encode()))
        return rng.uniform(0.5, 1.5, DIM).astype(np.float32)

    def embed_paths(
        self, paths: Any, *, transform: Any = None, progress: Any = None, on_batch: Any = None, on_mirror: Any = None
    ) -> EmbedResult:
        names = [str(p) for p in paths]
        self.embedded += names
        feats = np.stack([self.features(p) for p in names])
        ids = np.arange(len(names))
        if on_batch is not None:
            on_batch(ids, feats)
        return EmbedResult(feats, ids, [])


def _files(folder: Path, prefix: str, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{prefix}{i}.png"
        p.write_bytes(f"{prefix}{i}".encode())
        out.append(str(p))
    return out


def _extract(paths: list[str], cache: Path) -> tuple[np.ndarray, FakeEmbedder]:
    emb = FakeEmbedder()
    fs = extract_features(paths, emb, SPEC, options=EmbedOptions(cache_dir=cache))  # type: ignore[arg-type]
    assert list(fs.ok) == list(range(len(paths)))
    return fs.X, emb


def _expected(paths: list[str]) -> np.ndarray:
    return np.stack([FakeEmbedder.features(p) for p in paths])


def _cache_dir(cache: Path) -> Path:
    (root,) = [p for p in cache.iterdir() if p.is_dir()]
    return root


def test_stale_index_lines_after_a_shortened_features_bin_are_re_embedded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    a, b = _files(tmp_path / "a", "ant", 4), _files(tmp_path / "b", "bee", 4)
    _extract(a, cache)
    root = _cache_dir(cache)
    os.truncate(root / "features.bin", 1 * 4 * DIM)  # an older copy restored, a disk hiccup
    _extract(b, cache)  # another dataset: its rows land where a's rows 1..3 were
    with caplog.at_level(logging.WARNING, logger="graft"):
        X, emb = _extract(a, cache)
    np.testing.assert_array_equal(X, _expected(a))  # never b's features under a's names
    assert sorted(emb.embedded) == sorted(a[1:])  # row 0 is intact and reused
    warnings = [r for r in caplog.records if "did not match" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    X, emb = _extract(a, cache)  # the re-embedded rows are trusted from now on
    np.testing.assert_array_equal(X, _expected(a))
    assert emb.embedded == []


def test_damaged_rows_and_index_lines_are_re_embedded_never_a_traceback(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a = _files(tmp_path / "a", "img", 6)
    _extract(a, cache)
    root = _cache_dir(cache)
    rows = np.memmap(root / "features.bin", dtype=np.float32, mode="r+").reshape(-1, DIM)
    rows[0, 3] = np.nan  # NaN
    rows[1, :] = np.inf  # infinity
    rows[2, :] = 0.0  # all zeros (a hole in the file)
    rows.flush()
    del rows
    lines = [json.loads(line) for line in (root / "index.jsonl").read_text().splitlines()]
    by_key = {item["k"]: item for item in lines}
    keys = [item["k"] for item in lines]
    # An index line without its row, a negative row, a row past the end, an old line with no checksum.
    damaged = [
        {"k": keys[3]},
        {"k": keys[4], "r": -1, "c": by_key[keys[4]].get("c", 0)},
        {"k": keys[5], "r": 10_000, "c": by_key[keys[5]].get("c", 0)},
        {"k": keys[5], "r": 0},
        ["not", "an", "object"],
    ]
    with open(root / "index.jsonl", "a") as f:
        f.write("".join(json.dumps(d) + "\n" for d in damaged) + "{broken\n")
    X, emb = _extract(a, cache)
    np.testing.assert_array_equal(X, _expected(a))
    assert np.isfinite(X).all()
    assert sorted(emb.embedded) == sorted(a[:3])  # the lines that lost their row fall back to the intact one
