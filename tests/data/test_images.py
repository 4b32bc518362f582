"""Image bytes <-> arrays: exact PNG round trips, layouts, resizing, errors that name the source."""

import io

import numpy as np
import pytest
from PIL import Image

from syvla.data import images
from syvla.data.schema import SchemaError


def _rgb(h=6, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_png_round_trip_is_exact():
    img = _rgb()
    data = images.encode(img)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert images.image_format(data) == "png"
    out = images.decode(data)
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3)
    np.testing.assert_array_equal(out, img)
    assert images.image_size(data) == (6, 5)


def test_jpeg_decodes_close_to_original():
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 200, 100, 30  # flat colour: JPEG keeps it within a few levels
    data = images.encode(img, "jpeg")
    assert images.image_format(data) == "jpeg"
    out = images.decode(data)
    assert np.abs(out.astype(int) - img).max() <= 3


def test_grayscale_and_rgba_decode_to_rgb():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG")
    out = images.decode(buf.getvalue())
    assert out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out[..., 1], gray)
    rgba = np.dstack([_rgb(2, 2), np.full((2, 2), 7, np.uint8)])
    np.testing.assert_array_equal(images.decode(images.encode(rgba)), rgba[..., :3])
    np.testing.assert_array_equal(images.decode(images.encode(rgba), mode="RGBA"), rgba)


def test_chw_and_hwc_layouts():
    hwc = _rgb(4, 5)
    chw = np.moveaxis(hwc, -1, 0)  # [3, 4, 5]
    np.testing.assert_array_equal(images.to_hwc(chw), hwc)  # auto: first axis looks like channels
    np.testing.assert_array_equal(images.to_hwc(hwc), hwc)
    np.testing.assert_array_equal(images.to_chw(hwc), chw)
    ambiguous = _rgb(3, 4)[:, :3]  # [3, 3, 3]: stays HWC unless told
    np.testing.assert_array_equal(images.to_hwc(ambiguous), ambiguous)
    np.testing.assert_array_equal(images.to_hwc(ambiguous, "chw"), np.moveaxis(ambiguous, 0, -1))
    np.testing.assert_array_equal(images.decode(images.encode(chw)), hwc)  # encode accepts CHW
    assert images.to_hwc(np.zeros((4, 5), np.uint8)).shape == (4, 5, 1)
    with pytest.raises(images.ImageError, match="channels"):
        images.to_hwc(np.zeros((4, 5, 7), np.uint8), "hwc", source="cam0")


def test_float_images_scale_to_uint8():
    f = np.array([[[0.0, 0.5, 1.0]]], np.float32)
    np.testing.assert_array_equal(images.as_uint8(f), [[[0, 128, 255]]])
    with pytest.raises(images.ImageError, match=r"\[0, 1\]"):
        images.as_uint8(np.full((1, 1, 3), 2.0), source="row 3")


def test_resize_bilinear():
    const = np.full((8, 6, 3), 77, np.uint8)
    out = images.resize(const, (4, 3))
    assert out.shape == (4, 3, 3) and (out == 77).all()
    ramp = np.repeat(np.repeat(np.linspace(0, 250, 8).astype(np.uint8)[None, :, None], 4, 0), 3, 2)
    up = images.resize(ramp, 16)
    assert up.shape == (16, 16, 3)
    row = up[0, :, 0].astype(int)
    assert (np.diff(row) >= 0).all() and row[0] <= 20 and row[-1] >= 230  # still a left-to-right ramp
    assert images.resize(ramp, (4, 8)) is not None and images.resize(ramp, (4, 8)).shape == (4, 8, 3)
    with pytest.raises(ValueError):
        images.resize(ramp, 0)


def test_corrupt_bytes_name_the_source():
    good = images.encode(_rgb())
    with pytest.raises(images.ImageError, match="episode 3 view 'top'"):
        images.decode(good[:40], source="episode 3 view 'top'")
    with pytest.raises(SchemaError, match="empty image bytes from frame 9"):
        images.decode(b"", source="frame 9")
    with pytest.raises(images.ImageError, match="not-an-image.bin"):
        images.decode(b"hello world, not an image", source="not-an-image.bin")
