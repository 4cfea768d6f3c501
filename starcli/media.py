"""Image files in and out: the only module that decodes or encodes pixels of photos.

Reading (:func:`decode_image`) applies the EXIF orientation and turns every supported mode into
RGB pixels plus what is needed to write the photo back the way it came:

- grayscale (``L``, ``I;16``) -> RGB with equal channels; written back as grayscale;
- ``RGBA`` / ``LA`` / palette with transparency -> the alpha plane is kept aside and re-attached;
- 16-bit (PNG/TIFF grayscale ``I;16``, PNG RGB/RGBA 48/64-bit) -> ``uint16`` pixels, written
  back at 16 bits; Pillow cannot hold 16-bit colour, so 16-bit colour PNGs go through a small
  built-in PNG codec (:func:`_read_png16` / :func:`_write_png16`);
- ``CMYK`` (JPEG/TIFF) -> RGB; written back as CMYK, with untouched pixels copied from the input;
- palette (``P``) -> RGB(A); written back as RGB(A) (edited faces need more than 256 colours).

Writing (:func:`encode_image`) keeps the file format, size, EXIF (orientation reset to 1, since
the pixels are stored upright), ICC profile and DPI; JPEGs reuse the input's quantisation tables
and chroma subsampling (so quality stays what it was), PNGs use a fast compression level (1 by
default: the default level 6 costs ~109 ms per 512 px photo). Files are written atomically: a
``<name>.tmp-<pid>-<n>`` file in the same folder, then ``os.replace``.

Pixels are ``(H, W, 3)`` numpy ``uint8`` or ``uint16`` in RGB. :func:`to_tensor` /
:func:`from_tensor` convert regions to / from ``(3, h, w)`` float32 in ``[0, 1]``; the round trip
is exact, so untouched pixels stay bit-identical.

>>> import numpy as np
>>> px = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
>>> bool((from_tensor(to_tensor(px), np.uint8) == px).all())
True
"""

from __future__ import annotations

import io
import itertools
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InputError

__all__ = [
    "PHOTO_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "ImageInfo",
    "Decoded",
    "decode_image",
    "read_image",
    "encode_image",
    "write_image",
    "atomic_write_bytes",
    "to_tensor",
    "from_tensor",
    "to_uint8",
]

#: File extensions routed to the photo pipeline (lower case) -> Pillow format name.
PHOTO_EXTENSIONS: dict[str, str] = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".png": "PNG", ".webp": "WEBP",
    ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
}
SUPPORTED_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "TIFF", "MPO"}

#: Largest image decoded by default (pixels): 12000x9000 (108 Mpx) is fine, 500 Mpx is refused.
DEFAULT_MAX_PIXELS = 250_000_000

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_tmp_counter = itertools.count()
_pillow_lock = threading.Lock()


def _pillow():
    from PIL import Image

    return Image


@dataclass
class ImageInfo:
    """What was read from a photo file, and what :func:`encode_image` needs to write it back.

    ``format``: Pillow format (``JPEG``, ``PNG``, ``WEBP``, ``BMP``, ``TIFF``). ``mode``: the
    file's Pillow mode (``RGB``, ``L``, ``RGBA``, ``I;16``, ``CMYK``, ``P`` ...). ``size``:
    ``(width, height)`` after EXIF orientation. ``bits``: 8 or 16 per channel. ``grayscale``,
    ``has_alpha``: as stored. ``orientation``: the EXIF orientation applied (1 = none).
    ``jpeg_quality``: the IJG quality the JPEG tables correspond to (estimate) or None.
    """

    path: Path | None
    format: str
    mode: str
    size: tuple[int, int]
    bits: int = 8
    grayscale: bool = False
    has_alpha: bool = False
    orientation: int = 1
    exif: bytes | None = None
    icc_profile: bytes | None = None
    dpi: tuple[float, float] | None = None
    jpeg_quality: int | None = None
    jpeg_qtables: Any = None
    jpeg_subsampling: int | None = None
    webp_lossless: bool = False
    tiff_compression: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """Short text, e.g. ``PNG 512x512 RGBA 8-bit``."""
        return f"{self.format} {self.size[0]}x{self.size[1]} {self.mode} {self.bits}-bit"


@dataclass
class Decoded:
    """A decoded photo: ``pixels`` ``(H, W, 3)`` RGB ``uint8``/``uint16``, ``alpha`` ``(H, W)``
    of the same dtype or None, ``info``; ``native`` keeps the original CMYK array (so untouched
    pixels are written back bit-identical)."""

    pixels: np.ndarray
    alpha: np.ndarray | None
    info: ImageInfo
    native: np.ndarray | None = None

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    def rgb8(self) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB (for detectors); 16-bit pixels are rounded down to 8 bits."""
        return to_uint8(self.pixels)


# ------------------------------------------------------------------------------------------------
# pixel conversions


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """``uint16`` -> ``uint8`` by rounding (``v * 255 / 65535``); ``uint8`` unchanged (no copy)."""
    if pixels.dtype == np.uint8:
        return pixels
    return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``(h, w, 3)`` uint8/uint16 -> ``(3, h, w)`` float32 in ``[0, 1]`` (``v / max``)."""
    scale = 255.0 if pixels.dtype == np.uint8 else 65535.0
    arr = np.ascontiguousarray(pixels)
    if not arr.flags.writeable:
        arr = arr.copy()
    t = torch.from_numpy(arr).permute(2, 0, 1)
    return t.to(torch.float32).div_(scale)


def from_tensor(tensor: torch.Tensor, dtype: Any = np.uint8) -> np.ndarray:
    """``(3, h, w)`` float ``[0, 1]`` -> ``(h, w, 3)`` ``dtype`` (rounded, clipped); the exact
    inverse of :func:`to_tensor` on its outputs."""
    scale = 255.0 if np.dtype(dtype) == np.uint8 else 65535.0
    t = tensor.detach().float().mul(scale).round_().clamp_(0.0, scale)
    return t.permute(1, 2, 0).contiguous().numpy().astype(dtype)


# ------------------------------------------------------------------------------------------------
# reading


def _jpeg_quality(qtables: dict[int, Any] | None) -> int | None:
    """IJG quality (1..100) whose scaled standard luminance table is closest to ``qtables[0]``."""
    if not qtables or 0 not in qtables:
        return None
    std = np.array([
        16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
        14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)
    table = np.asarray(list(qtables[0]), dtype=np.float64)
    if table.size != 64:
        return None
    best, best_err = None, float("inf")
    for q in range(1, 101):
        scale = 5000.0 / q if q < 50 else 200.0 - 2.0 * q
        ref = np.clip(np.floor((std * scale + 50.0) / 100.0), 1, 255)
        # tables may be stored in zig-zag or natural order: compare sorted values too
        err = min(np.abs(ref - table).sum(), np.abs(np.sort(ref) - np.sort(table)).sum())
        if err < best_err:
            best, best_err = q, err
    return best


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _open_checked(path: Path, max_pixels: int):
    """Open with Pillow (lazy: header only) and check size; one-line InputErrors."""
    Image = _pillow()
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or _reason(exc)})") from None
    if path.is_dir():
        raise InputError(path, "is a folder, not an image")
    if size == 0:
        raise InputError(path, "empty file (0 bytes), not an image")
    try:
        fh = open(path, "rb")
    except PermissionError:
        raise InputError(path, "cannot read: permission denied") from None
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or _reason(exc)})") from None
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        with _pillow_lock:
            Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        im = Image.open(fh)
    except Image.DecompressionBombError:
        fh.close()
        raise InputError(path, f"image is larger than {max_pixels / 1e6:.0f} Mpx (decompression bomb guard; raise run.max_megapixels)") from None
    except Exception as exc:  # UnidentifiedImageError, SyntaxError from broken headers, ...
        fh.close()
        if type(exc).__name__ == "UnidentifiedImageError":
            raise InputError(path, "not an image (unrecognised format) or corrupt header") from None
        raise InputError(path, f"corrupt image header ({_reason(exc)})") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        fh.close()
        raise InputError(path, f"image is {w}x{h} = {w * h / 1e6:.0f} Mpx, over the {max_pixels / 1e6:.0f} Mpx limit (decompression bomb guard; raise run.max_megapixels)")
    if w < 1 or h < 1:
        im.close()
        fh.close()
        raise InputError(path, f"image has no pixels ({w}x{h})")
    return im, fh


def decode_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode a photo file into RGB pixels + :class:`ImageInfo` (EXIF orientation applied).

    Raises :class:`InputError` ``"<path>: <reason>"`` for a missing, unreadable, empty,
    truncated or non-image file and for images over ``max_pixels``.
    """
    path = Path(path)
    im, fh = _open_checked(path, max_pixels)
    try:
        return _decode_opened(path, im)
    except InputError:
        raise
    except MemoryError:
        raise InputError(path, f"not enough memory to decode {im.size[0]}x{im.size[1]}") from None
    except Exception as exc:  # truncated data, broken streams, unsupported modes
        reason = _reason(exc)
        if "truncated" in reason.lower() or isinstance(exc, (EOFError, SyntaxError, ValueError, OSError, zlib.error, struct.error)):
            raise InputError(path, f"truncated or corrupt image data ({reason})") from None
        raise InputError(path, f"cannot decode image ({type(exc).__name__}: {reason})") from None
    finally:
        im.close()
        fh.close()


def _decode_opened(path: Path, im) -> Decoded:
    Image = _pillow()
    from PIL import ImageOps

    fmt = (im.format or "").upper()
    if fmt not in SUPPORTED_FORMATS:
        raise InputError(path, f"unsupported image format {im.format or 'unknown'} (use JPEG, PNG, WebP, BMP or TIFF)")
    if fmt == "MPO":
        fmt = "JPEG"
    mode = im.mode
    exif = im.getexif()
    orientation = int(exif.get(0x0112, 1) or 1)
    info = ImageInfo(
        path=path, format=fmt, mode=mode, size=im.size,
        icc_profile=im.info.get("icc_profile"),
        dpi=tuple(float(v) for v in im.info["dpi"]) if "dpi" in im.info else None,
        orientation=orientation,
    )
    if fmt == "JPEG":
        info.jpeg_qtables = getattr(im, "quantization", None)
        info.jpeg_quality = _jpeg_quality(info.jpeg_qtables)
        try:
            from PIL import JpegImagePlugin

            sampling = JpegImagePlugin.get_sampling(im)
            info.jpeg_subsampling = sampling if sampling >= 0 else None
        except Exception:
            info.jpeg_subsampling = None
    elif fmt == "WEBP":
        info.webp_lossless = _webp_is_lossless(path)
    elif fmt == "TIFF":
        info.tiff_compression = im.info.get("compression")
    exif_bytes = exif.tobytes() if len(exif) else None

    # 16-bit colour PNG: Pillow would truncate it to 8 bits
    if fmt == "PNG" and mode in ("RGB", "RGBA") and _png_bit_depth(path) == 16:
        info.exif = _reset_orientation(exif_bytes)
        arr = _read_png16(path)
        info.bits = 16
        pixels, alpha = arr[..., :3], (arr[..., 3] if arr.shape[-1] == 4 else None)
        info.has_alpha = alpha is not None
        pixels, alpha = _orient(pixels, orientation), (None if alpha is None else _orient(alpha, orientation))
        info.size = (pixels.shape[1], pixels.shape[0])
        return Decoded(np.ascontiguousarray(pixels), None if alpha is None else np.ascontiguousarray(alpha), info)

    im.load()
    if orientation != 1:
        im = ImageOps.exif_transpose(im)
    info.exif = _reset_orientation(exif_bytes)
    info.size = im.size
    native = None
    alpha = None
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im)
        if mode == "I":  # 32-bit ints (16-bit PNGs on old Pillow, some TIFFs)
            a = np.clip(a, 0, 65535)
        gray = a.astype(np.uint16)
        pixels = np.repeat(gray[..., None], 3, axis=2)
        info.bits, info.grayscale = 16, True
    elif mode in ("L", "1"):
        gray = np.asarray(im.convert("L"))
        pixels = np.repeat(gray[..., None], 3, axis=2)
        info.grayscale = True
    elif mode == "LA" or (mode == "La"):
        a = np.asarray(im.convert("LA"))
        pixels = np.repeat(a[..., :1], 3, axis=2)
        alpha = a[..., 1].copy()
        info.grayscale = True
    elif mode == "RGB":
        pixels = np.asarray(im)
    elif mode in ("RGBA", "RGBa"):
        a = np.asarray(im.convert("RGBA"))
        pixels, alpha = a[..., :3], a[..., 3].copy()
    elif mode == "P" or mode == "PA":
        has_t = "transparency" in im.info or mode == "PA"
        a = np.asarray(im.convert("RGBA" if has_t else "RGB"))
        pixels, alpha = (a[..., :3], a[..., 3].copy()) if has_t else (a, None)
    elif mode == "CMYK":
        native = np.asarray(im).copy()
        pixels = np.asarray(im.convert("RGB"))
    else:  # YCbCr, LAB, HSV, F ...: convert to RGB, write back as RGB
        pixels = np.asarray(im.convert("RGB"))
        info.extra["converted_from"] = mode
        info.mode = "RGB"
    info.has_alpha = alpha is not None
    return Decoded(np.ascontiguousarray(pixels), alpha, info, native)


def _webp_is_lossless(path: Path) -> bool:
    """True when the WebP file's image chunk is ``VP8L`` (lossless)."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
            return False
        for _ in range(64):  # walk the chunks until the image data
            hdr = fh.read(8)
            if len(hdr) < 8:
                return False
            fourcc, size = hdr[:4], struct.unpack("<I", hdr[4:])[0]
            if fourcc in (b"VP8L", b"VP8 "):
                return fourcc == b"VP8L"
            if fourcc == b"ANMF":
                fh.seek(16, 1)  # frame header; the frame's image chunk follows
                continue
            fh.seek(size + (size & 1), 1)
    return False


def _reset_orientation(exif_bytes: bytes | None) -> bytes | None:
    """EXIF bytes with the orientation tag set to 1 (pixels are stored upright on write)."""
    if not exif_bytes:
        return None
    Image = _pillow()
    exif = Image.Exif()
    exif.load(exif_bytes)
    if exif.get(0x0112, 1) != 1:
        exif[0x0112] = 1
    return exif.tobytes()


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[torch.Tensor, ImageInfo]:
    """Read a photo as ``(3, H, W)`` float32 RGB in ``[0, 1]`` and its :class:`ImageInfo`.

    Alpha, if any, is in ``info.extra["alpha"]`` (``(H, W)`` float32 ``[0, 1]``).
    """
    dec = decode_image(path, max_pixels=max_pixels)
    if dec.alpha is not None:
        scale = 255.0 if dec.alpha.dtype == np.uint8 else 65535.0
        dec.info.extra["alpha"] = torch.from_numpy(dec.alpha.astype(np.float32) / scale)
    return to_tensor(dec.pixels), dec.info


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an ``(H, W[, C])`` array."""
    ops = {2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1], 4: lambda x: x[::-1],
           5: lambda x: np.swapaxes(x, 0, 1), 6: lambda x: np.swapaxes(x, 0, 1)[:, ::-1],
           7: lambda x: np.swapaxes(x, 0, 1)[::-1, ::-1], 8: lambda x: np.swapaxes(x, 0, 1)[::-1]}
    return ops[orientation](a) if orientation in ops else a


# ------------------------------------------------------------------------------------------------
# 16-bit colour PNG (Pillow holds at most 8 bits per colour channel)


def _png_chunks(data: bytes):
    pos = 8
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        yield ctype, data[pos + 8 : pos + 8 + length]
        pos += 12 + length


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as fh:
        head = fh.read(33)
    if not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return 8
    return head[24]


def _read_png16(path: Path) -> np.ndarray:
    """Decode a 16-bit RGB/RGBA non-interlaced PNG -> ``(H, W, C)`` uint16."""
    data = path.read_bytes()
    ihdr, idat = None, []
    for ctype, body in _png_chunks(data):
        if ctype == b"IHDR":
            ihdr = body
        elif ctype == b"IDAT":
            idat.append(body)
    if ihdr is None:
        raise InputError(path, "corrupt PNG: no IHDR chunk")
    w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    channels = {2: 3, 6: 4}.get(colour)
    if depth != 16 or channels is None:
        raise InputError(path, f"unsupported PNG layout (depth {depth}, colour type {colour})")
    if interlace:
        raise InputError(path, "interlaced 16-bit colour PNG is not supported")
    raw = zlib.decompress(b"".join(idat))
    bpp = 2 * channels
    stride = w * bpp
    if len(raw) < h * (stride + 1):
        raise InputError(path, "truncated PNG data")
    rows = np.frombuffer(raw, np.uint8)[: h * (stride + 1)].reshape(h, stride + 1)
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        ftype, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 1:  # Sub: cumulative sum per byte lane
            cur = (np.cumsum(line.reshape(w, bpp), axis=0) & 0xFF).reshape(-1)
        elif ftype == 2:
            cur = (line + prev) & 0xFF
        elif ftype in (3, 4):
            cur = np.empty(stride, np.int32)
            left = np.zeros(bpp, np.int32)
            upleft = np.zeros(bpp, np.int32)
            for x in range(0, stride, bpp):
                up = prev[x : x + bpp]
                if ftype == 3:
                    pred = (left + up) >> 1
                else:
                    p = left + up - upleft
                    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
                    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
                left = (line[x : x + bpp] + pred) & 0xFF
                cur[x : x + bpp] = left
                upleft = up
        else:
            raise InputError(path, f"corrupt PNG: unknown filter type {ftype}")
        out[y] = cur
        prev = cur
    return out.view(">u2").reshape(h, w, channels).astype(np.uint16)


def _write_png16(arr: np.ndarray, info: ImageInfo, level: int) -> bytes:
    """Encode ``(H, W, 3|4)`` uint16 as a 16-bit PNG (filter Up, zlib ``level``)."""
    h, w, c = arr.shape
    be = arr.astype(">u2").reshape(h, w * c).view(np.uint8)
    up = np.empty_like(be)
    up[0] = be[0]
    up[1:] = be[1:] - be[:-1]  # uint8 wrap-around == PNG "Up" filter
    raw = np.concatenate([np.full((h, 1), 2, np.uint8), up], axis=1).tobytes()

    def chunk(ctype: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)

    parts = [_PNG_SIGNATURE, chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2 if c == 3 else 6, 0, 0, 0))]
    if info.icc_profile:
        parts.append(chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(info.icc_profile)))
    if info.dpi:
        ppm = [max(1, round(d / 0.0254)) for d in info.dpi]
        parts.append(chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    if info.exif:
        parts.append(chunk(b"eXIf", info.exif[6:] if info.exif.startswith(b"Exif\x00\x00") else info.exif))
    parts.append(chunk(b"IDAT", zlib.compress(raw, level)))
    parts.append(chunk(b"IEND", b""))
    return b"".join(parts)


# ------------------------------------------------------------------------------------------------
# writing


def _gray(pixels: np.ndarray) -> np.ndarray:
    """RGB -> luma (ITU-R 601, as Pillow); equal channels give the channel value exactly."""
    if pixels.dtype == np.uint8:
        p = pixels.astype(np.uint32)
        return ((p[..., 0] * 19595 + p[..., 1] * 38470 + p[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)
    p = pixels.astype(np.float64)
    return np.clip(np.rint(p[..., 0] * 0.299 + p[..., 1] * 0.587 + p[..., 2] * 0.114), 0, 65535).astype(np.uint16)


def encode_image(dec: Decoded, *, png_compress_level: int = 1, jpeg_quality: int | None = None,
                 changed: list[tuple[int, int, int, int]] | None = None, format: str | None = None) -> bytes:
    """Encode ``dec`` (pixels possibly edited) in its original format, mode, depth and metadata.

    ``jpeg_quality``: None keeps the input's JPEG tables (or 92 for non-JPEG inputs written as
    JPEG). ``changed``: regions ``(x0, y0, x1, y1)`` that were edited (CMYK files copy every other
    pixel from the input). ``format`` overrides the output format (grid sheets, crops).
    """
    Image = _pillow()
    info = dec.info
    fmt = (format or info.format).upper()
    pixels, alpha = dec.pixels, dec.alpha
    if fmt == "PNG" and info.bits == 16 and not info.grayscale and format is None:
        arr = pixels if alpha is None else np.concatenate([pixels, alpha[..., None]], axis=2)
        return _write_png16(np.ascontiguousarray(arr), info, png_compress_level)

    if info.grayscale:
        gray = _gray(pixels)
        if info.bits == 16:
            im = Image.fromarray(gray.astype(np.uint16))  # mode I;16
        elif alpha is not None:
            im = Image.fromarray(np.stack([gray, to_uint8(alpha)], axis=2), "LA")
        else:
            im = Image.fromarray(gray, "L")
    elif info.mode == "CMYK" and dec.native is not None and format is None:
        native = dec.native.copy()
        for x0, y0, x1, y1 in changed or [(0, 0, dec.width, dec.height)]:
            region = Image.fromarray(np.ascontiguousarray(to_uint8(pixels[y0:y1, x0:x1])), "RGB").convert("CMYK")
            native[y0:y1, x0:x1] = np.asarray(region)
        im = Image.fromarray(native, "CMYK")
    else:
        rgb = to_uint8(pixels)
        if alpha is not None and fmt not in ("JPEG",):
            im = Image.fromarray(np.concatenate([rgb, to_uint8(alpha)[..., None]], axis=2), "RGBA")
        else:
            im = Image.fromarray(np.ascontiguousarray(rgb), "RGB")

    kwargs: dict[str, Any] = {}
    if info.icc_profile and format is None:
        kwargs["icc_profile"] = info.icc_profile
    if info.exif and format is None and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        kwargs["exif"] = info.exif
    if info.dpi and fmt in ("JPEG", "PNG", "TIFF", "BMP"):
        kwargs["dpi"] = info.dpi
    if fmt == "JPEG":
        if im.mode in ("LA", "RGBA"):
            im = im.convert(im.mode[:-1])
        if jpeg_quality is None and info.jpeg_qtables and format is None and info.format == "JPEG":
            kwargs["qtables"] = info.jpeg_qtables
            if info.jpeg_subsampling is not None:
                kwargs["subsampling"] = info.jpeg_subsampling
        else:
            kwargs["quality"] = jpeg_quality or 92
    elif fmt == "PNG":
        kwargs["compress_level"] = int(png_compress_level)
    elif fmt == "WEBP":
        if info.webp_lossless:
            kwargs["lossless"] = True
        else:
            kwargs["quality"] = jpeg_quality or 90
        kwargs["method"] = 4
    elif fmt == "TIFF":
        if info.tiff_compression and info.tiff_compression not in ("raw", "jpeg", "tiff_jpeg"):
            kwargs["compression"] = info.tiff_compression
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (``<name>.tmp-<pid>-<n>`` in the same folder, then
    ``os.replace``); raises :class:`InputError` naming ``path`` on failure, leaving nothing behind."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{next(_tmp_counter)}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, PermissionError):
            raise InputError(path, "cannot write: permission denied") from None
        raise InputError(path, f"cannot write: {(exc.strerror or _reason(exc)).lower()}") from None
    return path


def write_image(path: str | Path, dec: Decoded, **options: Any) -> Path:
    """Encode ``dec`` (see :func:`encode_image`) and write it atomically to ``path``."""
    return atomic_write_bytes(path, encode_image(dec, **options))


def is_temp_name(name: str) -> bool:
    """True for names made by :func:`atomic_write_bytes` (``<name>.tmp-<pid>-<n>``)."""
    base, sep, tail = name.rpartition(".tmp-")
    return bool(sep) and bool(base) and all(part.isdigit() for part in tail.split("-")) and tail.count("-") <= 1
