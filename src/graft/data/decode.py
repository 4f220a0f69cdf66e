"""Safe, fast image decoding shared by training, evaluation, prediction and serving.

Pillow and numpy only (no torch), so the ONNX/HTTP paths can use it too. Every failure
becomes :class:`~graft.exceptions.ImageDecodeError` with a short reason that also goes
into skip lists; raw Pillow/OS errors never escape.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import warnings
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

from graft.exceptions import ImageDecodeError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "SERVE_MAX_PIXELS",
    "SERVE_MAX_REQUEST_PIXELS",
    "probe_image_bytes",
    "probe_image",
    "load_image",
    "load_image_bytes",
    "sniff_is_image",
    "has_image_extension",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
)
"""Lower-case file extensions (with the dot) treated as images; matching is case-insensitive."""

DEFAULT_MAX_PIXELS = 64_000_000
"""Largest declared width*height accepted before decoding (decompression-bomb guard)."""

SERVE_MAX_PIXELS = 25_000_000
"""The server's default per image: lower than :data:`DEFAULT_MAX_PIXELS`, since its images come from
strangers. 25 MP passes a 24 MP camera frame (6000x4000) and stops a 6300x6300 PNG (40 MP)."""

SERVE_MAX_REQUEST_PIXELS = 64_000_000
"""The server's default budget of decoded pixels per request, all images together: a few photos
pass, while one request cannot hold the decoders (and about 0.25 GB of RGB) for long."""

# Only formats we document are ever decoded: bytes from the network must not reach
# exotic plugins (EPS would shell out to Ghostscript). JPEG covers MPO too.
_PIL_FORMATS = ("JPEG", "PNG", "BMP", "DIB", "GIF", "WEBP", "TIFF", "PPM")

# We enforce our own per-call limit, so Pillow's global warning is pure noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
_PIL_LIMIT_LOCK = threading.Lock()

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATION_TAG = 0x0112
_ALPHA_MODES = frozenset({"RGBA", "LA", "La", "RGBa", "PA"})
_WHITE = (255, 255, 255)


def has_image_extension(path: str | os.PathLike[str]) -> bool:
    """True if the file name ends with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def sniff_is_image(data: bytes) -> bool:
    """Magic-number check for the supported formats (JPEG, PNG, GIF, BMP, WebP, TIFF, PNM).

    Args:
        data: the file's bytes (the first 16 are enough).

    Returns:
        True if the content starts like one of the supported image formats.
    """
    head = bytes(data[:16])
    if head.startswith(b"\xff\xd8\xff") or head.startswith(b"\x89PNG\r\n\x1a\n"):
        return True
    if head[:6] in (b"GIF87a", b"GIF89a") or head.startswith(b"BM"):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return True
    # Netpbm: "P1".."P6" then whitespace.
    return len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n"


# ---------------------------------------------------------------------------- internals
def _open(fp: IO[bytes], name: str, max_pixels: int | None) -> Image.Image:
    """Header-only open that applies our pixel limit in place of Pillow's global one."""
    try:
        im = Image.open(fp, formats=_PIL_FORMATS)
    except UnidentifiedImageError:
        raise ImageDecodeError(name, "not an image or an unsupported format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Over Pillow's global limit (the warning arrives as an exception when warnings
        # are errors). Re-read the header with that limit off; ours is applied below.
        fp.seek(0)
        with _PIL_LIMIT_LOCK:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                im = Image.open(fp, formats=_PIL_FORMATS)
            except Exception as exc:  # noqa: BLE001 - Pillow raises many types on malformed headers
                raise ImageDecodeError(name, f"corrupt image header: {_describe(exc)}") from None
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on malformed headers
        raise ImageDecodeError(name, f"corrupt image header: {_describe(exc)}") from None
    w, h = im.size
    if w <= 0 or h <= 0:
        im.close()
        raise ImageDecodeError(name, f"invalid image size {w}x{h}")
    if max_pixels is not None and w * h > max_pixels:
        im.close()
        raise ImageDecodeError(
            name,
            f"image too large: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} "
            "(decompression-bomb guard); raise max_pixels if the image is legitimate",
        )
    return im


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _orientation(im: Image.Image, *, header_only: bool) -> int:
    """EXIF orientation (1..8), 1 when absent or unreadable.

    With ``header_only`` we avoid ``getexif()`` on PNG, which would decode the whole
    file to look for an eXIf chunk placed after the pixel data.
    """
    try:
        if header_only and im.format == "PNG" and "exif" not in im.info:
            return 1
        value = im.getexif().get(_ORIENTATION_TAG, 1)
        return int(value) if int(value) in _TRANSPOSE else 1
    except Exception:  # noqa: BLE001 - corrupt EXIF must not make a good image unreadable
        return 1


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited onto white."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(im), mode)).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map high-bit-depth or float pixels to uint8 by scaling, never by clipping.

    16-bit data is divided by 257 (0..65535 -> 0..255) so brightness stays comparable
    between images; 32-bit integers use the 16-bit rule when they fit, float images in
    [0, 1] are scaled by 255, anything else is stretched min..max.
    """
    a = arr.astype(np.float64)
    if mode.startswith("I;16"):
        out = a / 257.0
    else:
        lo, hi = float(np.nanmin(a)) if a.size else 0.0, float(np.nanmax(a)) if a.size else 0.0
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            out = a * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            out = a
        elif mode == "I" and lo >= 0.0 and hi <= 65535.0:
            out = a / 257.0
        else:
            out = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.nan_to_num(out) + 0.5, 0, 255).astype(np.uint8)


def _decode(fp: IO[bytes], name: str, draft_size: tuple[int, int] | None, max_pixels: int | None) -> Image.Image:
    with _open(fp, name, max_pixels) as im:
        orientation = _orientation(im, header_only=True)
        if draft_size is not None and im.format in ("JPEG", "MPO"):
            dw, dh = draft_size
            if orientation in (5, 6, 7, 8):  # draft sizes refer to the stored, unrotated pixels
                dw, dh = dh, dw
            try:
                im.draft("RGB", (int(dw), int(dh)))
            except Exception:  # noqa: BLE001 - draft is an optimisation only
                pass
        try:
            im.seek(0)  # animated GIF/WebP/TIFF: first frame
            im.load()
            orientation = _orientation(im, header_only=False)  # cheap now; sees late PNG eXIf too
            out = im.transpose(_TRANSPOSE[orientation]) if orientation != 1 else im
            out = _to_rgb(out)
            if out is im:  # detach from the file before the `with` closes it
                out = im.copy()
        except ImageDecodeError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError, KeyError) as exc:
            raise ImageDecodeError(name, f"truncated or corrupt image data: {_describe(exc)}") from None
        except MemoryError:
            raise ImageDecodeError(name, "not enough memory to decode the image") from None
    if draft_size is not None:
        out = _reduce(out, draft_size)
    return out


def _reduce(img: Image.Image, draft_size: tuple[int, int]) -> Image.Image:
    """Integer box-reduce when the image is at least twice ``draft_size`` on both sides."""
    w, h = img.size
    factor = min(w // max(1, int(draft_size[0])), h // max(1, int(draft_size[1])))
    return img.reduce(factor) if factor >= 2 else img


# ---------------------------------------------------------------------------- public API
def probe_image(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Read only the header and return the displayed size.

    Args:
        path: image file.
        max_pixels: largest accepted width*height (``None``: no limit).

    Returns:
        ``(width, height)`` after EXIF orientation (swapped for 90-degree rotations).

    Raises:
        ImageDecodeError: missing, empty, unreadable, not an image, or over the pixel limit.
    """
    name = os.fspath(path)
    with _OpenFile(name) as fh:
        with _open(fh, name, max_pixels) as im:
            w, h = im.size
            if _orientation(im, header_only=True) in (5, 6, 7, 8):
                w, h = h, w
    return w, h


def probe_image_bytes(data: bytes, *, name: str = "<upload>", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> int:
    """Width*height declared by an in-memory image's header, without decoding it.

    Raises:
        ImageDecodeError: empty, not an image, or over the pixel limit.
    """
    if not data:
        raise ImageDecodeError(name, "empty file (0 bytes)")
    with _open(io.BytesIO(data), name, max_pixels) as im:
        w, h = im.size
    return int(w) * int(h)


def load_image(
    path: str | os.PathLike[str],
    *,
    draft_size: tuple[int, int] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode an image file to an RGB PIL image, EXIF-oriented, first frame only.

    Args:
        path: image file; its content decides the format, not its extension.
        draft_size: ``(width, height)`` the caller will never need more than; JPEGs are
            then decoded by libjpeg at a reduced scale no smaller than this, other formats
            are box-reduced by an integer factor when at least twice as large.
            ``Preprocessing.decode_size`` is the right value for evaluation.
        max_pixels: largest accepted declared width*height (``None``: no limit).

    Returns:
        A fully loaded ``RGB`` image, independent of the (closed) file.

    Raises:
        ImageDecodeError: empty, unreadable, not an image, too large, truncated or corrupt.
    """
    name = os.fspath(path)
    with _OpenFile(name) as fh:
        return _decode(fh, name, draft_size, max_pixels)


def load_image_bytes(
    data: bytes,
    *,
    name: str = "<upload>",
    draft_size: tuple[int, int] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Like :func:`load_image` for in-memory bytes (e.g. an HTTP upload).

    Args:
        data: the encoded image; the format is sniffed from the content.
        name: label used in error messages.
        draft_size: see :func:`load_image`.
        max_pixels: see :func:`load_image`.

    Raises:
        ImageDecodeError: as :func:`load_image`.
    """
    if not data:
        raise ImageDecodeError(name, "empty file (0 bytes)")
    return _decode(io.BytesIO(data), name, draft_size, max_pixels)


class _OpenFile:
    """Open a file for reading, turning OS errors into ImageDecodeError."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fh: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        try:
            self.fh = open(self.name, "rb")  # noqa: SIM115 - closed in __exit__
            size = os.fstat(self.fh.fileno()).st_size
        except FileNotFoundError:
            raise ImageDecodeError(self.name, "file not found") from None
        except IsADirectoryError:
            raise ImageDecodeError(self.name, "is a folder, not an image file") from None
        except PermissionError:
            raise ImageDecodeError(self.name, "permission denied") from None
        except OSError as exc:
            raise ImageDecodeError(self.name, f"cannot read file: {_describe(exc)}") from None
        if size == 0:
            self.fh.close()
            raise ImageDecodeError(self.name, "empty file (0 bytes)")
        return self.fh

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            self.fh.close()
