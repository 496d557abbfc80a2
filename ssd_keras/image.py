"""Image loading and the SSD300 input transform.

``load_image`` turns any common image file into an upright RGB ``uint8`` array
``(H, W, 3)``; ``resize_image`` is the one resize helper (bilinear);
``preprocess_input`` is the Caffe-mode ImageNet transform the ported weights
expect (RGB -> BGR, minus the BGR channel means), and ``deprocess_input`` is its
inverse for drawing model inputs.

Decoding is done by Pillow, strictly: a truncated or corrupt file raises
``ImageLoadError`` instead of coming back half-decoded. This module does not
import TensorFlow.
"""

from __future__ import annotations

import errno
import io
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "CAFFE_MEAN_BGR",
    "ImageLoadError",
    "deprocess_input",
    "load_image",
    "model_batches",
    "preprocess_input",
    "probe_image",
    "probe_images",
    "resize_image",
]

logger = logging.getLogger(__name__)

CAFFE_MEAN_BGR: tuple[float, float, float] = (103.939, 116.779, 123.68)
"""ImageNet channel means in BGR order, subtracted by ``preprocess_input``."""

_MEAN_BGR_F32 = np.array(CAFFE_MEAN_BGR, dtype=np.float32)
# RGB -> BGR and minus the mean as one 3x4 map: row c reads channel 2 - c.
_CAFFE_TRANSFORM = np.hstack([np.eye(3)[::-1], -np.array(CAFFE_MEAN_BGR)[:, np.newaxis]]
                             ).astype(np.float32)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_UINT16_MAX = 65535
# dtypes cv2.resize supports with INTER_LINEAR.
_SWAPPED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations whose upright image is transposed
_MIN_IMAGES_FOR_THREADS = 8
_RESIZE_DTYPES = frozenset(
    np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float32, np.float64)
)


class ImageLoadError(ValueError):
    """An image file exists but cannot be decoded into an image.

    Attributes:
        path: The offending file, as given to ``load_image`` (``None`` when the
            error was raised without one).
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep ``path`` across pickling (e.g. errors raised in worker processes).
        return type(self), (self.args[0], self.path)


def _load_error(path: str, reason: str) -> ImageLoadError:
    return ImageLoadError(f"cannot load image {path!r}: {reason}", path=path)


def _check_size(size: Any, name: str) -> tuple[int, int]:
    """Validates a ``(height, width)`` pair and returns it as Python ints."""
    message = f"{name} must be a (height, width) pair of positive integers, got {size!r}"
    try:
        height, width = size
    except (TypeError, ValueError):
        raise ValueError(message) from None
    for value in (height, width):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(message)
    return int(height), int(width)


def _scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """Maps 16-bit values ``[0, 65535]`` to 8 bits as ``round(v / 257)``."""
    # floor(v / 257 + 0.5) == (v + 128) // 257 for integers (v / 257 never ends in .5).
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, np.newaxis], 3, axis=2)


def _png_bit_depth(data: bytes) -> int | None:
    """Bit depth from a PNG's IHDR chunk, or None when ``data`` is not a PNG."""
    if len(data) > 24 and data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR":
        return data[24]
    return None


def _decode_png16_color(data: bytes, image: Image.Image, path: str) -> np.ndarray:
    """Decodes a 16-bit colour (or gray+alpha) PNG to RGB uint8 at full precision.

    Pillow keeps only the high byte of each 16-bit colour sample, so the samples
    are read with OpenCV instead; ``data`` has already been decoded strictly by
    Pillow, so OpenCV never sees a truncated file here. ``IMREAD_UNCHANGED``
    does not apply EXIF orientation (that is done once, by the caller).
    """
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if (
        decoded is None
        or decoded.dtype != np.uint16
        or decoded.shape[:2] != (image.height, image.width)
    ):
        raise _load_error(path, "could not decode the 16-bit PNG samples")
    if decoded.ndim == 2:
        return _gray_to_rgb(_scale_16_to_8(decoded))
    # BGR or BGRA (OpenCV expands gray+alpha to BGRA): keep RGB, drop alpha.
    return _scale_16_to_8(decoded[:, :, 2::-1])


def _to_rgb_uint8(image: Image.Image, data: bytes, path: str) -> np.ndarray:
    """Converts a loaded Pillow image (any mode) to an RGB uint8 ``(H, W, 3)`` array."""
    mode = image.mode
    if mode == "RGB" or mode == "RGBA":
        if image.format == "PNG" and _png_bit_depth(data) == 16:
            return _decode_png16_color(data, image, path)
        return np.asarray(image)[:, :, :3].copy()
    if mode.startswith("I;16"):
        return _gray_to_rgb(_scale_16_to_8(np.asarray(image)))
    if mode == "I":
        # Pillow uses mode I for 16-bit data (e.g. PGM/PPM scaled to 0..65535).
        values = np.asarray(image)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > _UINT16_MAX:
            raise _load_error(
                path,
                "32-bit integer pixels outside the 16-bit range [0, 65535] are not "
                f"supported (min {low}, max {high})",
            )
        return _gray_to_rgb(_scale_16_to_8(values))
    if mode == "F":
        raise _load_error(path, "32-bit floating-point images are not supported")
    bands = image.getbands()
    if mode in ("P", "PA") or "A" in bands or "a" in bands:
        # Going through RGBA drops transparency (palette tRNS included) without
        # compositing: the stored colour of each pixel is kept.
        return np.asarray(image.convert("RGBA"))[:, :, :3].copy()
    # L, 1, CMYK (Adobe inversion handled by Pillow), YCbCr, ...
    return np.asarray(image.convert("RGB"))


def _exif_orientation(image: Image.Image, path: str) -> int:
    """The EXIF orientation tag (1..8), 1 when absent or unreadable."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as exc:  # noqa: BLE001 - malformed EXIF must not lose the pixels
        logger.warning("ignoring unreadable EXIF data in %r: %s", path, exc)
        return 1
    return orientation if isinstance(orientation, int) else 1


def _apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Transposes an RGB array as ``PIL.ImageOps.exif_transpose`` would for ``orientation``."""
    if orientation not in range(2, 9):  # 1 (upright), absent or invalid
        return rgb
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    image = Image.fromarray(rgb)
    image.info["exif"] = exif.tobytes()
    return np.asarray(ImageOps.exif_transpose(image))


def load_image(
    path: str | os.PathLike[str],
    target_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Loads an image file as an upright RGB array.

    Handles grayscale (``L``, ``1``), grayscale+alpha, RGBA (the alpha channel is
    dropped, not composited), palette images (with or without transparency),
    16-bit PNGs (gray and colour, scaled to 8 bits as ``round(v / 257)``), CMYK
    JPEGs and EXIF orientation (all 8 orientations are undone). Multi-frame
    files give their first frame.

    Decoding is strict: a truncated or corrupt file raises instead of returning
    a partly decoded image. For that reason this function refuses to run while
    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is set.

    Args:
        path: Image file (``str`` or ``os.PathLike``).
        target_size: ``(height, width)`` to resize to (Keras convention), with
            bilinear interpolation (see ``resize_image``), or ``None`` to keep
            the original size.

    Returns:
        ``uint8`` array of shape ``(H, W, 3)`` in RGB order, where ``(H, W)`` is
        ``target_size`` or the upright image's size.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        ImageLoadError: ``path`` is a directory, an empty file, not an image,
            truncated or corrupt, or has an unsupported pixel format.
        ValueError: ``target_size`` is not a pair of positive integers.
        RuntimeError: ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is ``True``.
    """
    path_str = os.fspath(path)
    if isinstance(path_str, bytes):
        path_str = os.fsdecode(path_str)
    size = None if target_size is None else _check_size(target_size, "target_size")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: load_image decodes strictly "
            "and will not return half-decoded images; set it back to False"
        )
    if os.path.isdir(path_str):
        raise _load_error(path_str, "is a directory, not an image file")
    try:
        with open(path_str, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "image file not found", path_str) from None
    if not data:
        raise _load_error(path_str, "the file is empty")

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            orientation = _exif_orientation(image, path_str)
            rgb = _to_rgb_uint8(image, data, path_str)
    except UnidentifiedImageError:
        raise _load_error(path_str, "not an image file in a format Pillow can read") from None
    except (ImageLoadError, MemoryError):
        raise
    except Exception as exc:  # Pillow raises many types on corrupt data.
        raise _load_error(
            path_str, f"the file is truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from exc

    rgb = _apply_orientation(rgb, orientation)
    if size is not None:
        rgb = resize_image(rgb, size)
    return np.ascontiguousarray(rgb)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes an image with bilinear interpolation (``cv2.INTER_LINEAR``).

    Pixel centres are aligned the usual way (half-pixel offsets, no corner
    alignment, no antialiasing), as in ``cv2.resize`` and PIL's bilinear. For
    ``uint8`` OpenCV uses fixed-point weights, so values can differ from exact
    bilinear by 1.

    Args:
        image: Array of shape ``(H, W)`` or ``(H, W, C)``; dtype ``uint8``,
            ``uint16``, ``int16``, ``float32`` or ``float64``.
        size: Output ``(height, width)``.

    Returns:
        Array of shape ``(height, width)`` or ``(height, width, C)`` with the
        input's dtype.

    Raises:
        ValueError: ``size`` is not a pair of positive integers, or ``image``
            is empty or not 2-D/3-D.
        TypeError: ``image`` has a dtype OpenCV cannot resize.
    """
    height, width = _check_size(size, "size")
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(
            f"image must be a non-empty (H, W) or (H, W, C) array, got shape {image.shape}"
        )
    if image.dtype not in _RESIZE_DTYPES:
        raise TypeError(
            f"image dtype {image.dtype} is not supported; use one of "
            f"{sorted(str(d) for d in _RESIZE_DTYPES)}"
        )
    resized = cv2.resize(
        np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_LINEAR
    )
    # cv2 drops a trailing channel axis of length 1.
    return resized.reshape((height, width) + image.shape[2:])


def _check_channels_last(x: np.ndarray, name: str) -> None:
    if x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise ValueError(
            f"{name} must have shape (H, W, 3) or (N, H, W, 3) with 3 channels last, "
            f"got shape {x.shape}"
        )


def _as_numeric(x: Any, name: str) -> np.ndarray:
    array = np.asarray(x)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array, got dtype {array.dtype}")
    return array


def preprocess_input(x: np.ndarray) -> np.ndarray:
    """Caffe-mode ImageNet preprocessing, the input transform of SSD300.

    Flips RGB to BGR and subtracts ``CAFFE_MEAN_BGR``; no scaling. Equal to
    ``keras.applications.imagenet_utils.preprocess_input(x, mode="caffe")`` for
    channels-last float32 input, except that the input is never modified.

    Args:
        x: RGB images, shape ``(H, W, 3)`` or ``(N, H, W, 3)``, any numeric
            dtype (``uint8`` pixel values in ``[0, 255]`` typically).

    Returns:
        New ``float32`` array of the same shape, BGR, mean-subtracted.

    Raises:
        ValueError: ``x`` is not 3-D/4-D with 3 channels last.
        TypeError: ``x`` is not numeric.
    """
    x = _as_numeric(x, "x")
    _check_channels_last(x, "x")
    if x.size == 0:
        return x[..., ::-1].astype(np.float32)
    # One affine colour map (channel swap and mean) per pixel: the same float32 arithmetic
    # as ``x[..., ::-1] - mean``, ten times faster than NumPy's broadcast over 3 channels.
    src = np.ascontiguousarray(x, dtype=np.float32)
    out = cv2.transform(src.reshape(-1, src.shape[-2], 3), _CAFFE_TRANSFORM)
    return out.reshape(x.shape)


def model_batches(images: Sequence[np.ndarray], size: tuple[int, int], batch_size: int = 8):
    """Batches of RGB images ready for SSD: each resized to ``size`` ``(height, width)`` and
    passed through :func:`preprocess_input`; yields float32 arrays ``(<= batch_size, H, W, 3)``."""
    for start in range(0, len(images), batch_size):
        yield preprocess_input(np.stack([resize_image(image, size) for image in images[start:start + batch_size]]))


def deprocess_input(x: np.ndarray) -> np.ndarray:
    """Inverse of ``preprocess_input``: back to displayable RGB ``uint8``.

    Adds ``CAFFE_MEAN_BGR``, flips BGR to RGB, rounds to the nearest integer and
    clips to ``[0, 255]``. ``deprocess_input(preprocess_input(img))`` equals
    ``img`` exactly for ``uint8`` images.

    Args:
        x: Preprocessed images, shape ``(H, W, 3)`` or ``(N, H, W, 3)``, BGR.

    Returns:
        ``uint8`` array of the same shape, RGB.

    Raises:
        ValueError: ``x`` is not 3-D/4-D with 3 channels last.
        TypeError: ``x`` is not numeric.
    """
    x = _as_numeric(x, "x")
    _check_channels_last(x, "x")
    rgb = (x.astype(np.float32) + _MEAN_BGR_F32)[..., ::-1]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# sizes of image files, for validating data sets



def probe_image(path: str) -> tuple[int, int] | str:
    """The upright ``(width, height)`` of an image file, or why it cannot be used.

    The image is fully decoded, because a header read (or Pillow's ``verify()``, which does not
    check JPEG data) accepts truncated JPEGs that ``load_image`` would later reject. JPEGs are
    decoded at 1/8 scale (``Image.draft``): the whole entropy-coded stream is still read, so
    truncation is still found, at a fraction of the cost.
    """
    try:
        if os.path.isdir(path):
            return "is a directory, not an image file"
        if os.path.getsize(path) == 0:
            return "the file is empty"
        with Image.open(path) as image:
            width, height = image.size
            if image.format == "JPEG":
                image.draft(None, (max(1, width // 8), max(1, height // 8)))
            image.load()
            if image.mode == "F":
                return "32-bit floating-point images are not supported"
            try:
                orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            except Exception as exc:  # noqa: BLE001 - load_image ignores malformed EXIF too
                logger.warning("ignoring unreadable EXIF data in %r: %s", path, exc)
                orientation = 1
    except UnidentifiedImageError:
        return "not an image file in a format Pillow can read"
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises many types on corrupt data.
        return f"the file is truncated or corrupt ({type(exc).__name__}: {exc})"
    if orientation in _SWAPPED_ORIENTATIONS:
        width, height = height, width
    return width, height


def probe_images(paths: Sequence[str]) -> list[tuple[int, int] | str]:
    """``probe_image`` over many files, in threads (Pillow decodes without the GIL)."""
    if len(paths) < _MIN_IMAGES_FOR_THREADS:
        return [probe_image(path) for path in paths]
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(probe_image, paths, chunksize=16))
