"""Tests for graft.data.decode: modes, orientation, formats, broken files, limits, drafts."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from graft.data.decode import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    has_image_extension,
    load_image,
    load_image_bytes,
    probe_image,
    sniff_is_image,
)
from graft.exceptions import DataError, ImageDecodeError
from graft.transforms.eval import Preprocessing


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` 1-bit grey, with no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ---------------------------------------------------------------------------- modes
def test_rgb_roundtrip(tmp_path: Path, make_image) -> None:
    p = make_image(tmp_path / "a.png", size=(20, 10))
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (20, 10)
    assert np.array_equal(np.asarray(img), np.asarray(Image.open(p).convert("RGB")))


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK"])
def test_opaque_modes_become_rgb(tmp_path: Path, make_image, mode: str) -> None:
    ext = ".jpg" if mode == "CMYK" else ".png" if mode != "1" else ".bmp"
    p = make_image(tmp_path / f"a{ext}", size=(12, 9), mode=mode)
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (12, 9)


def test_cmyk_jpeg_colours(tmp_path: Path) -> None:
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, quality=95)  # pure red in CMYK
    r, g, b = np.asarray(load_image(p)).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited_on_white(tmp_path: Path, mode: str) -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    rgba.putpixel((0, 0), (0, 0, 0, 255))  # one opaque black pixel
    p = tmp_path / "a.png"
    (rgba if mode == "RGBA" else rgba.convert(mode)).save(p)
    arr = np.asarray(load_image(p))
    assert tuple(arr[1, 1]) == (255, 255, 255), "transparent pixels must become white, not black"
    assert tuple(arr[0, 0]) == (0, 0, 0)


def test_pa_mode_in_memory() -> None:
    # Pillow cannot save "PA" files, but plugins can produce it; check the converter itself.
    from graft.data.decode import _to_rgb

    img = Image.new("RGBA", (3, 3), (0, 0, 0, 0)).convert("PA")
    assert img.mode == "PA"
    assert _to_rgb(img).getpixel((1, 1)) == (255, 255, 255)


def test_palette_with_transparency_index(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black, 1 red
    img.putpixel((0, 0), 0)
    p = tmp_path / "t.png"
    img.save(p, transparency=1)  # red is transparent
    arr = np.asarray(load_image(p))
    assert tuple(arr[2, 2]) == (255, 255, 255)
    assert tuple(arr[0, 0]) == (0, 0, 0)


def test_palette_gif_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    p = tmp_path / "t.gif"
    img.save(p, transparency=1)
    arr = np.asarray(load_image(p))
    assert tuple(arr[3, 3]) == (255, 255, 255) and tuple(arr[0, 0]) == (0, 0, 255)


def test_16bit_gradient_uses_full_range(tmp_path: Path) -> None:
    grad = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))
    p = tmp_path / "g16.png"
    Image.fromarray(grad).save(p)
    assert Image.open(p).mode.startswith("I")
    arr = np.asarray(load_image(p))[..., 0].astype(int)
    assert arr.min() == 0 and arr.max() == 255, "16-bit must be scaled, not clipped at 255"
    assert np.all(np.diff(arr[0]) >= 0) and len(np.unique(arr[0])) > 200


def test_float_and_int32_modes(tmp_path: Path) -> None:
    f = Image.fromarray(np.tile(np.linspace(0, 1, 64, dtype=np.float32), (2, 1)), "F")
    p = tmp_path / "f.tif"
    f.save(p)
    arr = np.asarray(load_image(p))[..., 0]
    assert arr.min() == 0 and arr.max() == 255
    i32 = Image.fromarray(np.tile(np.arange(0, 4000, 40, dtype=np.int32), (2, 1)), "I")
    p = tmp_path / "i.tif"
    i32.save(p)
    assert np.asarray(load_image(p)).max() > 0


# ---------------------------------------------------------------------------- orientation, frames
def _jpeg_with_orientation(path: Path, orientation: int, size=(40, 20)) -> Path:
    img = Image.new("RGB", size, (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, size[0] // 2, size[1]))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, quality=95)
    return path


def test_exif_orientation_6_swaps_size(tmp_path: Path) -> None:
    p = _jpeg_with_orientation(tmp_path / "rot.jpg", 6)
    assert Image.open(p).size == (40, 20)
    assert probe_image(p) == (20, 40)
    img = load_image(p)
    assert img.size == (20, 40)
    # Orientation 6 = rotate 90 degrees clockwise for display: the stored left half ends up on top.
    top, bottom = np.asarray(img)[2, 10], np.asarray(img)[-3, 10]
    assert top[2] > 200 and bottom[0] > 200


def test_exif_orientation_with_draft(tmp_path: Path) -> None:
    p = _jpeg_with_orientation(tmp_path / "rot.jpg", 8, size=(800, 400))
    img = load_image(p, draft_size=(100, 200))
    assert img.size[1] > img.size[0] and img.size[0] >= 100 and img.size[1] >= 200


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(p).n_frames == 3
    r, g, b = np.asarray(load_image(p))[4, 4]
    assert r > 200 and g < 50 and b < 50


# ---------------------------------------------------------------------------- extensions, formats
_SAVE = {
    ".jpg": ("JPEG", "RGB"),
    ".JPG": ("JPEG", "RGB"),
    ".jpeg": ("JPEG", "RGB"),
    ".jfif": ("JPEG", "RGB"),
    ".png": ("PNG", "RGB"),
    ".PNG": ("PNG", "RGBA"),
    ".bmp": ("BMP", "RGB"),
    ".gif": ("GIF", "P"),
    ".webp": ("WEBP", "RGB"),
    ".tif": ("TIFF", "RGB"),
    ".tiff": ("TIFF", "L"),
    ".pgm": ("PPM", "L"),
    ".ppm": ("PPM", "RGB"),
}


@pytest.mark.parametrize("ext", sorted(_SAVE))
def test_every_extension(tmp_path: Path, make_image, ext: str) -> None:
    fmt, mode = _SAVE[ext]
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    p = make_image(tmp_path / f"img{ext}", size=(30, 20), mode=mode, format=fmt)
    assert has_image_extension(p)
    assert probe_image(p) == (30, 20)
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (30, 20)
    assert sniff_is_image(p.read_bytes())
    assert load_image_bytes(p.read_bytes()).size == (30, 20)


def test_extension_set() -> None:
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"} <= IMAGE_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)
    assert has_image_extension("A/B.JPEG") and not has_image_extension("README.md")
    assert DEFAULT_MAX_PIXELS == 64_000_000


def test_content_decides_not_extension(tmp_path: Path, make_image) -> None:
    p = make_image(tmp_path / "really_png.jpg", format="PNG")
    assert load_image(p).size == (32, 24)


# ---------------------------------------------------------------------------- broken files
def _reason(exc: pytest.ExceptionInfo) -> str:
    assert isinstance(exc.value, DataError)
    return exc.value.reason


def test_zero_byte_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.jpg"
    p.touch()
    for fn in (probe_image, load_image):
        with pytest.raises(ImageDecodeError) as exc:
            fn(p)
        assert "empty" in _reason(exc) and exc.value.path == str(p)
    with pytest.raises(ImageDecodeError, match="empty"):
        load_image_bytes(b"")


def test_truncated_jpeg(tmp_path: Path, make_image) -> None:
    good = make_image(tmp_path / "good.jpg", size=(300, 200))
    p = tmp_path / "half.jpg"
    data = good.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    assert probe_image(p) == (300, 200)  # header is intact; only a full decode notices
    with pytest.raises(ImageDecodeError) as exc:
        load_image(p)
    assert _reason(exc).startswith("truncated or corrupt image data:")
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        load_image_bytes(p.read_bytes(), name="upload.jpg")


def test_truncated_png(tmp_path: Path, make_image) -> None:
    good = make_image(tmp_path / "good.png", size=(300, 200))
    p = tmp_path / "half.png"
    p.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        load_image(p)


def test_random_bytes_named_png(tmp_path: Path) -> None:
    p = tmp_path / "noise.png"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ImageDecodeError) as exc:
        probe_image(p)
    assert "not an image" in _reason(exc)
    with pytest.raises(ImageDecodeError, match="not an image"):
        load_image(p)
    assert not sniff_is_image(p.read_bytes())


def test_text_named_jpg(tmp_path: Path) -> None:
    p = tmp_path / "notes.jpg"
    p.write_text("hello, I am not a picture\n")
    with pytest.raises(ImageDecodeError, match="not an image"):
        load_image(p)
    assert not sniff_is_image(p.read_bytes())


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="not found"):
        probe_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageDecodeError, match="folder"):
        load_image(tmp_path)


def test_unsupported_format_refused(tmp_path: Path, make_image) -> None:
    p = make_image(tmp_path / "a.tga", format="TGA")
    with pytest.raises(ImageDecodeError, match="not an image or an unsupported format"):
        load_image(p)


# ---------------------------------------------------------------------------- pixel limit
def test_pixel_limit_bomb(tmp_path: Path) -> None:
    p = tmp_path / "bomb.png"
    Image.new("1", (10000, 10000)).save(p)  # 100 Mpx compresses to a few kB
    assert p.stat().st_size < 100_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not leak out
        for fn in (probe_image, load_image):
            with pytest.raises(ImageDecodeError, match="too large"):
                fn(p)
        with pytest.raises(ImageDecodeError, match="10000x10000"):
            probe_image(p, max_pixels=1_000_000)
        with pytest.raises(ImageDecodeError, match="too large"):
            load_image_bytes(p.read_bytes(), max_pixels=1_000_000)
        assert probe_image(p, max_pixels=200_000_000) == (10000, 10000)


def test_pixel_limit_above_pillows_own(tmp_path: Path) -> None:
    p = tmp_path / "huge.png"
    p.write_bytes(_png_header_only(20000, 20000))  # 400 Mpx: over Pillow's hard limit
    with pytest.raises(ImageDecodeError, match="too large"):
        probe_image(p)
    assert probe_image(p, max_pixels=None) == (20000, 20000)
    assert probe_image(p, max_pixels=500_000_000) == (20000, 20000)
    assert Image.MAX_IMAGE_PIXELS is not None  # the global was restored


# ---------------------------------------------------------------------------- draft decoding
def _smooth_photo(path: Path, size=(2000, 1500)) -> Path:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    arr = np.stack(
        [128 + 100 * np.sin(xx / 180.0) * np.cos(yy / 240.0), 128 + 90 * np.cos((xx + yy) / 300.0), 40 + 200 * xx / w],
        -1,
    )
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=92)
    return path


def test_draft_jpeg_matches_full_decode(tmp_path: Path) -> None:
    p = _smooth_photo(tmp_path / "big.jpg")
    pre = Preprocessing()
    full = load_image(p)
    small = load_image(p, draft_size=pre.decode_size)
    assert full.size == (2000, 1500)
    assert small.size == (1000, 750)  # libjpeg scale 1/2: 1/4 would fall below 2*256 px
    assert min(small.size) >= min(pre.decode_size)
    diff = np.abs(pre(full) - pre(small)).mean()
    assert diff < 0.02, diff


def test_draft_reduce_non_jpeg(tmp_path: Path, make_image) -> None:
    p = make_image(tmp_path / "big.png", size=(1200, 1000))
    assert load_image(p, draft_size=(256, 256)).size == (400, 334)  # factor 3, rounded up
    assert load_image(p, draft_size=(700, 700)).size == (1200, 1000)  # not 2x larger: untouched


def test_draft_small_image_untouched(tmp_path: Path, make_image) -> None:
    p = make_image(tmp_path / "small.jpg", size=(100, 80))
    assert load_image(p, draft_size=(512, 512)).size == (100, 80)


# ---------------------------------------------------------------------------- misc
def test_sniff_magic_numbers() -> None:
    assert sniff_is_image(b"\xff\xd8\xff\xe0" + b"\0" * 10)
    assert sniff_is_image(b"GIF89a....")
    assert sniff_is_image(b"RIFF\0\0\0\0WEBPVP8 ")
    assert sniff_is_image(b"II*\0\x08\0\0\0")
    assert sniff_is_image(b"P6\n3 2\n255\n")
    assert not sniff_is_image(b"")
    assert not sniff_is_image(b"%PDF-1.4")
    assert not sniff_is_image(b"Pnot")


def test_load_bytes_names_upload() -> None:
    with pytest.raises(ImageDecodeError) as exc:
        load_image_bytes(b"not an image at all", name="cat.jpg")
    assert exc.value.path == "cat.jpg"
    buf = io.BytesIO()
    Image.new("LA", (5, 7), (0, 0)).save(buf, "PNG")
    img = load_image_bytes(buf.getvalue())
    assert img.mode == "RGB" and img.getpixel((2, 2)) == (255, 255, 255)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count open files")
def test_no_file_handle_leak(tmp_path: Path, make_image) -> None:
    good = make_image(tmp_path / "ok.jpg", size=(64, 64))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:300])
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"junk" * 100)
    before = _open_fds()
    for _ in range(50):
        load_image(good)
        probe_image(good)
        for p in (bad, junk):
            try:
                load_image(p)
            except ImageDecodeError:
                pass
    assert _open_fds() == before


def test_decode_module_does_not_import_torch() -> None:
    code = "import sys, graft.data.decode, graft.data.scan; sys.exit('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
