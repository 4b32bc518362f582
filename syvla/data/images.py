"""Camera images: encoded bytes <-> uint8 HWC arrays, resizing, CHW/HWC layout.

The frame schema stores every camera image as encoded PNG/JPEG bytes
(docs/architecture.md#data-contracts); everything downstream works on
uint8 [H, W, 3] RGB arrays. This module is the one place that converts.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from syvla.data.schema import SchemaError

# zlib level 1: ~3x faster than PIL's default 6 for ~10-20% larger files;
# encoding cost dominates simulator collection and video->PNG reading.
PNG_COMPRESS_LEVEL = 1
JPEG_QUALITY = 95

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


class ImageError(SchemaError):
    """Image bytes that cannot be decoded, or an array that is not an image; names the source."""


def image_format(data: bytes) -> str | None:
    """"png", "jpeg" or None, from the magic bytes (no decoding)."""
    if data[:8] == _PNG_MAGIC:
        return "png"
    if data[:3] == _JPEG_MAGIC:
        return "jpeg"
    return None


def to_hwc(img: np.ndarray, layout: str = "auto", source: str = "") -> np.ndarray:
    """Return `img` as [H, W, C] (C in 1, 3, 4); 2-D arrays get C=1.

    layout: "hwc", "chw" or "auto" (CHW when the first axis looks like channels
    and the last does not, e.g. [3, 64, 64]; an ambiguous [3, 4, 3] stays HWC).
    """
    img = np.asarray(img)
    where = f" ({source})" if source else ""
    if img.ndim == 2:
        return img[:, :, None]
    if img.ndim != 3:
        raise ImageError(f"image{where} must have 2 or 3 dimensions, got shape {img.shape}")
    if layout == "auto":
        layout = "chw" if img.shape[0] in (1, 3, 4) and img.shape[-1] not in (1, 3, 4) else "hwc"
    if layout == "chw":
        img = np.moveaxis(img, 0, -1)
    elif layout != "hwc":
        raise ValueError(f"layout must be 'hwc', 'chw' or 'auto', got {layout!r}")
    if img.shape[-1] not in (1, 3, 4):
        raise ImageError(f"image{where} has {img.shape[-1]} channels in layout {layout}, expected 1, 3 or 4")
    return img


def to_chw(img: np.ndarray) -> np.ndarray:
    """[H, W, C] -> [C, H, W]."""
    return np.moveaxis(to_hwc(img, "hwc"), -1, 0)


def as_uint8(img: np.ndarray, source: str = "") -> np.ndarray:
    """uint8 as is; floats in [0, 1] scaled to [0, 255] (LeRobot stores float CHW images that way)."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    if np.issubdtype(img.dtype, np.floating):
        if img.size and (np.nanmin(img) < -1e-3 or np.nanmax(img) > 1 + 1e-3):
            where = f" ({source})" if source else ""
            raise ImageError(f"float image{where} must lie in [0, 1], got range [{img.min()}, {img.max()}]")
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    if np.issubdtype(img.dtype, np.integer):
        if img.size and (img.min() < 0 or img.max() > 255):
            where = f" ({source})" if source else ""
            raise ImageError(f"integer image{where} must lie in [0, 255], got range [{img.min()}, {img.max()}]")
        return img.astype(np.uint8)
    raise ImageError(f"image dtype {img.dtype} is not numeric")


def _to_pil(img: np.ndarray, source: str) -> Image.Image:
    img = as_uint8(to_hwc(img, source=source), source)
    # uint8 [H, W] / [H, W, 3] / [H, W, 4] map to Pillow's L / RGB / RGBA modes.
    return Image.fromarray(np.ascontiguousarray(img[:, :, 0] if img.shape[-1] == 1 else img))


def encode(img: np.ndarray, fmt: str = "png", source: str = "") -> bytes:
    """uint8 (or [0,1] float) HWC/CHW image -> PNG (lossless, default) or JPEG bytes."""
    pil = _to_pil(img, source)
    buf = io.BytesIO()
    if fmt == "png":
        pil.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif fmt in ("jpeg", "jpg"):
        pil.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        raise ValueError(f"fmt must be 'png' or 'jpeg', got {fmt!r}")
    return buf.getvalue()


def encode_png(img: np.ndarray, source: str = "") -> bytes:
    return encode(img, "png", source)


def decode(data: bytes, source: str = "", mode: str = "RGB") -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, anything Pillow reads) -> uint8 [H, W, 3] (mode "RGB").

    Raises ImageError naming `source` (a file, row or field) on corrupt or empty bytes.
    """
    where = f" from {source}" if source else ""
    if data is None or len(data) == 0:
        raise ImageError(f"empty image bytes{where}")
    try:
        with Image.open(io.BytesIO(data)) as pil:
            pil.load()
            out = np.asarray(pil.convert(mode))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"cannot decode image{where} ({len(data)} bytes): {e}") from e
    return out if out.ndim == 3 else out[:, :, None]


def resize(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 HWC image to `size` (square side, or (height, width))."""
    h, w = (size, size) if isinstance(size, int) else size
    if h <= 0 or w <= 0:
        raise ValueError(f"resize size must be positive, got {size}")
    img = to_hwc(img, "hwc")
    if img.shape[:2] == (h, w):
        return img
    pil = _to_pil(img, "")
    out = np.asarray(pil.resize((w, h), Image.Resampling.BILINEAR))
    return out if out.ndim == 3 else out[:, :, None]


def image_size(data: bytes, source: str = "") -> tuple[int, int]:
    """(height, width) of encoded image bytes, read from the header only."""
    try:
        with Image.open(io.BytesIO(data)) as pil:
            w, h = pil.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        where = f" from {source}" if source else ""
        raise ImageError(f"cannot read image header{where}: {e}") from e
    return h, w
