"""Tests for ssd_keras.image: loading every pixel format, EXIF, errors, preprocessing.

Every image is generated in ``tmp_path``; 16-bit PNGs are written by a small
encoder in this file (Pillow cannot write 16-bit colour PNGs), so expectations
do not come from the decoder under test.
"""

from __future__ import annotations

import pickle
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from ssd_keras.image import (
    CAFFE_MEAN_BGR,
    ImageLoadError,
    deprocess_input,
    load_image,
    preprocess_input,
    resize_image,
)

ORIENTATION_TAG = 0x0112


def write_png(
    path: Path,
    pixels: np.ndarray,
    bit_depth: int,
    color_type: int,
    exif: bytes | None = None,
) -> Path:
    """Minimal PNG encoder (filter 0, one IDAT) for arrays of shape (H, W[, C])."""
    height, width = pixels.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = pixels.astype(dtype).reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    if exif is not None:
        data += chunk(b"eXIf", exif)
    data += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    return exif.tobytes()


def round_16_to_8(values: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(values, dtype=np.float64) / 257.0).astype(np.uint8)


# --- pixel formats -----------------------------------------------------------


def test_rgb_png_exact_and_pathlike(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(path)
    for arg in (path, str(path)):
        out = load_image(arg)
        assert out.dtype == np.uint8 and out.shape == (7, 9, 3)
        np.testing.assert_array_equal(out, rgb)


def test_grayscale_l(tmp_path):
    gray = np.array([[0, 17, 128], [200, 254, 255]], dtype=np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(gray, mode="L").save(path)
    out = load_image(path)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(out[:, :, channel], gray)


def test_grayscale_alpha_drops_alpha(tmp_path):
    gray = np.array([[10, 100], [150, 250]], dtype=np.uint8)
    alpha = np.array([[0, 255], [64, 0]], dtype=np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([gray, alpha]), mode="LA").save(path)
    out = load_image(path)
    np.testing.assert_array_equal(out, np.dstack([gray, gray, gray]))


def test_rgba_drops_alpha_without_compositing(tmp_path):
    rgba = np.array(
        [[[10, 20, 30, 0], [200, 100, 50, 255]], [[1, 2, 3, 128], [0, 0, 0, 0]]],
        dtype=np.uint8,
    )
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    out = load_image(path)
    # Compositing onto white would turn the transparent pixels white.
    np.testing.assert_array_equal(out, rgba[:, :, :3])


@pytest.mark.parametrize("transparency", ["index", "per_entry"])
def test_palette_png_with_transparency(tmp_path, transparency):
    palette = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (12, 34, 56)]
    indices = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([v for colour in palette for v in colour])
    path = tmp_path / "palette.png"
    # An int marks one index fully transparent; bytes give per-entry alpha (tRNS).
    value = 3 if transparency == "index" else bytes([255, 0, 128, 0])
    image.save(path, transparency=value)
    with Image.open(path) as saved:
        assert saved.mode == "P" and "transparency" in saved.info
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow transparency warnings leak out
        out = load_image(path)
    expected = np.array(palette, dtype=np.uint8)[indices]
    np.testing.assert_array_equal(out, expected)


def test_bilevel_mode_1(tmp_path):
    bits = np.array([[0, 1, 1], [1, 0, 0]], dtype=bool)
    path = tmp_path / "bits.png"
    Image.fromarray(bits).save(path)
    out = load_image(path)
    np.testing.assert_array_equal(out[:, :, 1], bits.astype(np.uint8) * 255)


VALUES_16 = [0, 65535, 257, 257 * 100, 257 * 254, 128, 129, 200, 32767, 32896, 65407]


def test_16bit_gray_png_scaled_by_257(tmp_path):
    values = np.array(VALUES_16, dtype=np.uint16).reshape(1, -1)
    path = write_png(tmp_path / "gray16.png", values, 16, 0)
    out = load_image(path)
    expected = round_16_to_8(values)
    # Spot-check the expectation itself: 65535 -> 255, 257*k -> k, rounding not >> 8.
    assert list(expected[0, :6]) == [0, 255, 1, 100, 254, 0]
    assert expected[0, 6] == 1 and expected[0, 7] == 1
    for channel in range(3):
        np.testing.assert_array_equal(out[:, :, channel], expected)


def test_16bit_gray_png_written_by_pillow(tmp_path):
    values = np.array([[0, 257 * 3, 65535, 200]], dtype=np.uint16)
    path = tmp_path / "gray16_pil.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as saved:
        assert saved.mode.startswith("I")
    np.testing.assert_array_equal(load_image(path)[:, :, 0], [[0, 3, 255, 1]])


@pytest.mark.parametrize(
    "color_type, channels", [(2, 3), (6, 4), (4, 2)], ids=["rgb", "rgba", "gray_alpha"]
)
def test_16bit_colour_png_full_precision(tmp_path, color_type, channels):
    rng = np.random.default_rng(color_type)
    samples = rng.integers(0, 65536, size=(3, 5, channels)).astype(np.uint16)
    samples[0, :, 0] = VALUES_16[:5]
    samples[0, 0, :] = 200  # rounds to 1; Pillow's high-byte reduction gives 0
    path = write_png(tmp_path / f"c{color_type}.png", samples, 16, color_type)
    out = load_image(path)
    if color_type == 4:
        expected = np.repeat(round_16_to_8(samples[:, :, :1]), 3, axis=2)
    else:
        expected = round_16_to_8(samples[:, :, :3])
    assert out.shape == (3, 5, 3)
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0, 0] == 1


def test_16bit_rgb_png_exif_orientation_applied_once(tmp_path):
    upright = np.zeros((4, 6, 3), dtype=np.uint16)
    upright[0, 0] = (65535, 0, 0)
    stored = STORE[6](upright)  # rotated 90 degrees counter-clockwise
    path = write_png(tmp_path / "rot16.png", stored, 16, 2, exif=exif_bytes(6)[6:])
    out = load_image(path)
    assert out.shape == (4, 6, 3)
    np.testing.assert_array_equal(out, round_16_to_8(upright))


def test_cmyk_jpeg(tmp_path):
    colour = (200, 30, 90)
    path = tmp_path / "cmyk.jpg"
    Image.new("RGB", (16, 16), colour).convert("CMYK").save(path, quality=98)
    with Image.open(path) as saved:
        assert saved.mode == "CMYK"
    out = load_image(path)
    assert out.shape == (16, 16, 3)
    np.testing.assert_allclose(out.reshape(-1, 3).mean(axis=0), colour, atol=4)


# --- EXIF orientation -------------------------------------------------------
#
# EXIF orientation k says where the stored row 0 / column 0 go when displayed:
# 1 top/left, 2 top/right, 3 bottom/right, 4 bottom/left, 5 left/top,
# 6 right/top, 7 right/bottom, 8 left/bottom. STORE[k] maps the upright image to
# the pixels a camera would store; TO_UPRIGHT[k] is read off the definition.

STORE = {
    1: lambda u: u,
    2: lambda u: u[:, ::-1],
    3: lambda u: u[::-1, ::-1],
    4: lambda u: u[::-1, :],
    5: lambda u: np.swapaxes(u, 0, 1),
    6: lambda u: np.swapaxes(u, 0, 1)[::-1, :],
    7: lambda u: np.swapaxes(u, 0, 1)[::-1, ::-1],
    8: lambda u: np.swapaxes(u, 0, 1)[:, ::-1],
}

TO_UPRIGHT = {
    1: lambda s: s,
    2: lambda s: s[:, ::-1],  # column 0 is on the right
    3: lambda s: s[::-1, ::-1],
    4: lambda s: s[::-1, :],  # row 0 is at the bottom
    5: lambda s: np.swapaxes(s, 0, 1),  # row 0 is the left column
    6: lambda s: np.swapaxes(s[::-1, :], 0, 1),  # row 0 is the right column
    7: lambda s: np.swapaxes(s[::-1, ::-1], 0, 1),  # row 0 right, column 0 bottom
    8: lambda s: np.swapaxes(s[:, ::-1], 0, 1),  # row 0 left, column 0 bottom
}


def upright_test_image() -> np.ndarray:
    """48x80 gray image, red block top-left, green block top-right (8-px aligned)."""
    image = np.full((48, 80, 3), 128, dtype=np.uint8)
    image[:16, :32] = (255, 0, 0)
    image[:16, -16:] = (0, 255, 0)
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg_is_upright(tmp_path, orientation):
    upright = upright_test_image()
    stored = np.ascontiguousarray(STORE[orientation](upright))
    np.testing.assert_array_equal(TO_UPRIGHT[orientation](stored), upright)  # self-check
    path = tmp_path / f"orient{orientation}.jpg"
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    with Image.open(path) as saved:
        assert saved.getexif()[ORIENTATION_TAG] == orientation

    out = load_image(path)
    assert out.shape == upright.shape
    assert np.abs(out.astype(int) - upright).mean() < 3
    np.testing.assert_allclose(out[4:12, 4:28].mean(axis=(0, 1)), (255, 0, 0), atol=12)
    np.testing.assert_allclose(out[4:12, -12:-4].mean(axis=(0, 1)), (0, 255, 0), atol=12)
    np.testing.assert_allclose(out[30:44, 4:76].mean(axis=(0, 1)), (128, 128, 128), atol=4)


# --- resizing ---------------------------------------------------------------


def test_target_size_is_height_width(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(upright_test_image()).save(path)
    out = load_image(path, target_size=(30, 20))
    assert out.shape == (30, 20, 3) and out.dtype == np.uint8


def test_target_size_bilinear_values(tmp_path):
    gradient = np.tile(np.array([0, 40, 80, 120], dtype=np.uint8), (3, 1))
    path = tmp_path / "gradient.png"
    Image.fromarray(gradient, mode="L").save(path)
    out = load_image(path, target_size=(3, 8))
    # Half-pixel centres: x_src = (j + 0.5) * 4 / 8 - 0.5, clamped to [0, 3].
    expected = [0, 10, 30, 50, 70, 90, 110, 120]
    for row in range(3):
        np.testing.assert_allclose(out[row, :, 0], expected, atol=1)


def test_resize_image_downsample_and_dtypes():
    row = np.array([0, 10, 20, 30, 40, 50, 60, 70], dtype=np.float32)
    image = np.tile(row, (2, 1))
    out = resize_image(image, (2, 4))
    assert out.dtype == np.float32 and out.shape == (2, 4)
    # x_src = 2 j + 0.5: the mean of columns 2j and 2j + 1.
    np.testing.assert_allclose(out[0], [5, 25, 45, 65], atol=1e-4)

    single = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    assert resize_image(single, (6, 8)).shape == (6, 8, 1)
    rgb = np.zeros((5, 5, 3), dtype=np.uint8)
    assert resize_image(rgb, (7, 3)).dtype == np.uint8
    assert resize_image(rgb, (7, 3)).shape == (7, 3, 3)


@pytest.mark.parametrize("size", [(0, 5), (5, -1), (5,), (2.5, 3), "ab", None])
def test_resize_image_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match="height, width"):
        resize_image(np.zeros((4, 4, 3), dtype=np.uint8), size)


def test_load_image_rejects_bad_target_size(tmp_path):
    path = tmp_path / "ok.png"
    Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(ValueError, match="target_size"):
        load_image(path, target_size=(0, 10))


# --- errors -----------------------------------------------------------------


def test_missing_file_raises_file_not_found(tmp_path):
    path = tmp_path / "nope" / "missing.jpg"
    with pytest.raises(FileNotFoundError, match="missing.jpg") as info:
        load_image(path)
    assert str(path) in str(info.value)


def noisy_image(seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def make_empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    return path


def make_text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a JPEG\n" * 10)
    return path


def make_directory(tmp_path: Path) -> Path:
    path = tmp_path / "folder.png"
    path.mkdir()
    return path


def make_truncated(tmp_path: Path, fmt: str) -> Path:
    path = tmp_path / f"truncated.{fmt.lower()}"
    noisy_image().save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


@pytest.mark.parametrize(
    "make",
    [
        make_empty,
        make_text,
        make_directory,
        lambda tmp: make_truncated(tmp, "JPEG"),
        lambda tmp: make_truncated(tmp, "PNG"),
    ],
    ids=["empty", "text", "directory", "truncated_jpeg", "truncated_png"],
)
def test_unreadable_files_raise_image_load_error(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)
    assert isinstance(info.value, ValueError)


def test_truncated_jpeg_is_not_returned_even_though_opencv_would(tmp_path):
    import cv2

    path = make_truncated(tmp_path, "JPEG")
    assert cv2.imread(str(path)) is not None  # OpenCV half-decodes it silently
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(path)


def test_refuses_to_run_with_load_truncated_images(tmp_path, monkeypatch):
    path = make_truncated(tmp_path, "JPEG")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        load_image(path)


def test_image_load_error_pickles():
    error = pickle.loads(pickle.dumps(ImageLoadError("bad image", path="/x/y.jpg")))
    assert str(error) == "bad image" and error.path == "/x/y.jpg"


# --- preprocess_input / deprocess_input -------------------------------------


@pytest.mark.parametrize("shape", [(5, 7, 3), (2, 5, 7, 3)])
def test_preprocess_input_matches_keras_caffe(shape):
    from keras.applications import imagenet_utils

    x = np.random.default_rng(1).uniform(0, 255, shape).astype(np.float32)
    expected = imagenet_utils.preprocess_input(x.copy(), mode="caffe", data_format="channels_last")
    out = preprocess_input(x)
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_array_equal(out, expected)

    as_uint8 = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    expected = imagenet_utils.preprocess_input(
        as_uint8.astype("float32"), mode="caffe", data_format="channels_last"
    )
    np.testing.assert_array_equal(preprocess_input(as_uint8), expected)


def test_preprocess_input_hand_computed_pixel():
    pixel = np.array([[[10, 20, 30]]], dtype=np.uint8)  # R, G, B
    out = preprocess_input(pixel)
    assert CAFFE_MEAN_BGR == (103.939, 116.779, 123.68)
    np.testing.assert_allclose(out[0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], atol=1e-4)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, np.int64])
def test_preprocess_input_does_not_modify_input(dtype):
    x = np.random.default_rng(3).integers(0, 256, (4, 4, 3)).astype(dtype)
    before = x.copy()
    out = preprocess_input(x)
    np.testing.assert_array_equal(x, before)
    assert out.dtype == np.float32 and not np.shares_memory(out, x)


@pytest.mark.parametrize("shape", [(4, 4, 4), (4, 4, 1), (2, 3, 4, 4), (4, 4), (1, 1, 1, 4, 3)])
def test_preprocess_input_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        preprocess_input(np.zeros(shape, dtype=np.float32))


def test_deprocess_input_round_trip_exact():
    images = np.random.default_rng(4).integers(0, 256, (3, 6, 5, 3), dtype=np.uint8)
    images[0, 0, 0] = (0, 255, 0)
    restored = deprocess_input(preprocess_input(images))
    assert restored.dtype == np.uint8
    np.testing.assert_array_equal(restored, images)
    np.testing.assert_array_equal(deprocess_input(preprocess_input(images[1])), images[1])


def test_deprocess_input_clips_and_rounds():
    x = np.array([[[-500.0, 0.8, 500.0]], [[0.0, 0.2, 0.0]]], dtype=np.float32)  # B, G, R
    out = deprocess_input(x)
    # R = 500 + 123.68 -> 255; G = 0.8 + 116.779 = 117.579 -> 118; B = -500 + 103.939 -> 0.
    np.testing.assert_array_equal(out[0, 0], [255, 118, 0])
    # 123.68 -> 124, 116.979 -> 117, 103.939 -> 104 (rounded, not truncated).
    np.testing.assert_array_equal(out[1, 0], [124, 117, 104])


def test_the_original_notebooks_photographs_load(original_photos):
    """The five photographs of the original forward-pass notebook decode as RGB uint8."""
    paths = sorted(original_photos.glob("*.jpg"))
    assert len(paths) == 5
    for path in paths:
        image = load_image(path)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert min(image.shape[:2]) >= 100
