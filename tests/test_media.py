"""media: decode/encode round trips (EXIF, alpha, 16-bit, grayscale, CMYK, palette), errors, atomic writes."""

from __future__ import annotations

import builtins
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from starcli import media
from starcli.errors import InputError

DATA = Path(__file__).parent / "data"


def _reopen(blob: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(blob))
    im.load()
    return im


def test_png_round_trip_is_lossless_and_keeps_icc():
    dec = media.decode_image(DATA / "astronaut.png")
    assert dec.pixels.shape == (512, 512, 3) and dec.pixels.dtype == np.uint8
    assert dec.info.format == "PNG" and dec.info.icc_profile
    out = _reopen(media.encode_image(dec))
    assert out.format == "PNG" and out.info.get("icc_profile") == dec.info.icc_profile
    assert np.array_equal(np.asarray(out), dec.pixels)


def test_jpeg_keeps_quantisation_tables_and_subsampling():
    dec = media.decode_image(DATA / "grace_hopper.jpg")
    assert dec.info.format == "JPEG" and 50 <= dec.info.jpeg_quality <= 100
    out = _reopen(media.encode_image(dec))
    src = Image.open(DATA / "grace_hopper.jpg")
    assert out.quantization == src.quantization
    from PIL import JpegImagePlugin

    assert JpegImagePlugin.get_sampling(out) == JpegImagePlugin.get_sampling(src)
    assert np.abs(np.asarray(out).astype(int) - dec.pixels).mean() < 1.0


def test_tensor_round_trip_is_exact():
    rng = np.random.default_rng(0)
    for dtype, top in ((np.uint8, 256), (np.uint16, 65536)):
        px = rng.integers(0, top, (7, 9, 3)).astype(dtype)
        t = media.to_tensor(px)
        assert t.shape == (3, 7, 9) and t.dtype == torch.float32 and float(t.max()) <= 1.0
        assert np.array_equal(media.from_tensor(t, dtype), px)


def test_rgba_keeps_alpha(tmp_path):
    rgb = np.asarray(Image.open(DATA / "astronaut.png"))[:64, :80]
    alpha = np.tile(np.arange(80, dtype=np.uint8) * 3, (64, 1))
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "a.png")
    dec = media.decode_image(tmp_path / "a.png")
    assert dec.info.has_alpha and np.array_equal(dec.alpha, alpha) and dec.pixels.shape == (64, 80, 3)
    out = _reopen(media.encode_image(dec))
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], alpha)


def test_gray16_png_keeps_depth(tmp_path):
    g = (np.arange(40 * 30, dtype=np.uint32).reshape(30, 40) * 53).astype(np.uint16)
    Image.fromarray(g).save(tmp_path / "g.png")
    dec = media.decode_image(tmp_path / "g.png")
    assert dec.info.bits == 16 and dec.info.grayscale and dec.pixels.dtype == np.uint16
    assert np.array_equal(dec.pixels[..., 1], g)
    out = _reopen(media.encode_image(dec))
    assert out.mode.startswith("I;16") and np.array_equal(np.asarray(out), g)


def test_rgb16_png_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 65536, (21, 17, 4)).astype(np.uint16)
    info = media.ImageInfo(None, "PNG", "RGBA", (17, 21), bits=16, has_alpha=True)
    (tmp_path / "c.png").write_bytes(media._write_png16(arr, info, 1))
    dec = media.decode_image(tmp_path / "c.png")
    assert dec.info.bits == 16 and dec.pixels.dtype == np.uint16
    assert np.array_equal(dec.pixels, arr[..., :3]) and np.array_equal(dec.alpha, arr[..., 3])
    blob = media.encode_image(dec)
    assert blob[24] == 16  # IHDR bit depth
    (tmp_path / "d.png").write_bytes(blob)
    again = media.decode_image(tmp_path / "d.png")
    assert np.array_equal(again.pixels, dec.pixels) and np.array_equal(again.alpha, dec.alpha)


def test_exif_orientation_applied_and_reset(tmp_path):
    upright = np.asarray(Image.open(DATA / "grace_hopper.jpg"))  # 600 high, 512 wide
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # rotated 90 deg CCW; orientation 6 undoes it
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "r.jpg", quality=95, exif=exif.tobytes())
    dec = media.decode_image(tmp_path / "r.jpg")
    assert dec.info.orientation == 6 and dec.pixels.shape == upright.shape
    assert np.abs(dec.pixels.astype(int) - upright).mean() < 4
    out = _reopen(media.encode_image(dec))
    assert out.size == (512, 600) and out.getexif().get(0x0112) == 1


def test_grayscale_and_palette_and_cmyk(tmp_path):
    src = Image.open(DATA / "astronaut.png")
    src.convert("L").save(tmp_path / "g.jpg", quality=90)
    dec = media.decode_image(tmp_path / "g.jpg")
    assert dec.info.grayscale and np.array_equal(dec.pixels[..., 0], dec.pixels[..., 2])
    assert _reopen(media.encode_image(dec)).mode == "L"

    src.convert("P").save(tmp_path / "p.png")
    dec = media.decode_image(tmp_path / "p.png")
    assert dec.info.mode == "P" and dec.pixels.shape == (512, 512, 3)
    assert _reopen(media.encode_image(dec)).mode == "RGB"

    src.convert("CMYK").save(tmp_path / "c.tif")
    dec = media.decode_image(tmp_path / "c.tif")
    assert dec.info.mode == "CMYK" and dec.native is not None
    dec.pixels = dec.pixels.copy()
    dec.pixels[10:20, 10:20] = 0
    out = np.asarray(_reopen(media.encode_image(dec, changed=[(10, 10, 20, 20)])))
    mask = np.ones((512, 512), bool)
    mask[10:20, 10:20] = False
    assert np.array_equal(out[mask], dec.native[mask])  # untouched CMYK pixels bit-identical


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(t: bytes, b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name, payload, reason", [
    ("empty.jpg", b"", "empty file"),
    ("text.png", b"hello, not an image\n" * 20, "not an image"),
    ("bomb.png", _png_header_only(30000, 30000), "decompression bomb guard"),
    ("trunc.jpg", (DATA / "grace_hopper.jpg").read_bytes()[:20000], "truncated"),
])
def test_decode_errors_are_one_line(tmp_path, name, payload, reason):
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(InputError) as info:
        media.decode_image(path)
    msg = str(info.value)
    assert msg.startswith(str(path) + ": ") and reason in msg and "\n" not in msg


def test_unreadable_file_message(tmp_path, monkeypatch):
    path = tmp_path / "locked.png"
    path.write_bytes((DATA / "astronaut.png").read_bytes())
    real_open = builtins.open

    def fake_open(file, *args, **kwargs):
        if Path(str(file)) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    with pytest.raises(InputError, match="permission denied"):
        media.decode_image(path)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(InputError) as info:
        media.atomic_write_bytes(tmp_path / "missing" / "x.png", b"data")
    assert "x.png" in str(info.value)
    target = tmp_path / "y.png"
    media.atomic_write_bytes(target, b"data")
    assert target.read_bytes() == b"data" and sorted(p.name for p in tmp_path.iterdir()) == ["y.png"]
    assert media.is_temp_name("y.png.tmp-123-4") and not media.is_temp_name("y.png")


@pytest.mark.parametrize("name, kwargs, lossless", [
    ("a.webp", {"lossless": True}, True), ("b.webp", {"quality": 90}, False), ("c.bmp", {}, True),
    ("d.tif", {"compression": "tiff_deflate"}, True),
])
def test_other_formats_round_trip(tmp_path, name, kwargs, lossless):
    src = Image.open(DATA / "astronaut.png").convert("RGB").resize((96, 96))
    src.save(tmp_path / name, **kwargs)
    dec = media.decode_image(tmp_path / name)
    out = _reopen(media.encode_image(dec))
    assert out.format == dec.info.format and out.size == (96, 96)
    if lossless:
        assert np.array_equal(np.asarray(out.convert("RGB")), dec.pixels)
    if name.endswith(".tif"):
        assert out.info.get("compression") in ("tiff_deflate", "tiff_adobe_deflate")


def test_gray16_tiff_keeps_depth(tmp_path):
    g = (np.arange(32 * 24, dtype=np.uint32).reshape(24, 32) * 80).astype(np.uint16)
    Image.fromarray(g).save(tmp_path / "g.tif")
    dec = media.decode_image(tmp_path / "g.tif")
    assert dec.info.bits == 16 and dec.info.format == "TIFF"
    out = _reopen(media.encode_image(dec))
    assert out.mode.startswith("I;16") and np.array_equal(np.asarray(out), g)
