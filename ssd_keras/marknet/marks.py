"""Seeded synthetic *marks*: small stamps and logos on cups and plates, for MarkNet.

An image shows one object (a shaded **cup** with a handle, or a **plate** with a rim) on a
table-like background with a colour gradient, and on the object one mark of
:data:`MARK_CLASSES`:

- ``cross``: a plus-shaped cross of two thick bars;
- ``crown``: a filled crown with three spikes;
- ``ring``: a thick circle outline;
- ``wave``: two parallel wavy lines.

Marks have a random size (22-38 % of the image side), position on the object, rotation (up to
+/- 20 degrees), and colour (kept away from the object's colour); pixel noise is added last.
Whether the object is a cup or a plate, its colours and placement are independent of the mark,
so a classifier can only succeed by looking at the mark: a good test for Grad-CAM, whose map
should peak on it. Each image comes with the mark's tight box (normalised corners of the pixels
the mark covers at least a quarter of).

``make_marks_dataset`` writes a folder per class and the classification CSV (``image,label``,
through :func:`ssd_keras.data.csv_tools.folders_to_csv`), plus the marks' boxes as a detection
annotation CSV. This module does not import TensorFlow. :mod:`ssd_keras.data.marks` re-exports
its names under their old home.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from ..checks import integer
from ..data.annotations import write_annotations
from ..data.csv_tools import folders_to_csv

__all__ = [
    "BOXES_CSV",
    "MARKS_CSV",
    "MARK_CLASSES",
    "make_mark_image",
    "make_marks_dataset",
]

MARK_CLASSES: tuple[str, ...] = ("cross", "crown", "ring", "wave")
"""The mark classes, sorted (as ``folders_to_csv`` orders them): label ``i`` is ``MARK_CLASSES[i]``."""

MARKS_CSV = "marks.csv"
"""The classification CSV ``make_marks_dataset`` writes (``classes.txt`` beside it)."""
BOXES_CSV = "mark_boxes.csv"
"""The detection annotation CSV of the marks' boxes that ``make_marks_dataset`` writes."""

MARK_SIZE_RANGE = (0.28, 0.42)
"""The mark's outer diameter, as a fraction of the image side."""
MAX_ROTATION = 20.0
"""Marks are rotated by up to this many degrees either way."""

_MIN_IMAGE_SIZE = 32
_SHIFT = 4  # OpenCV's fractional bits for sub-pixel drawing
_SUBPIXEL = 1 << _SHIFT
_COVERED = 64  # mask level (of 255) from which a pixel belongs to the mark's box
_MIN_MARK_CONTRAST = 120.0  # least RGB distance between the mark's and the object's colours
_COLOR_TRIES = 20
_MAX_NOISE_STD = 6.0
_JPEG_QUALITY = 95
_IMAGE_FORMATS = ("png", "jpg")

# Mark outlines in unit coordinates (x right, y down, the mark inside the unit circle).
_CROSS = np.array([[-0.22, -0.95], [0.22, -0.95], [0.22, -0.22], [0.95, -0.22], [0.95, 0.22],
                   [0.22, 0.22], [0.22, 0.95], [-0.22, 0.95], [-0.22, 0.22], [-0.95, 0.22],
                   [-0.95, -0.22], [-0.22, -0.22]])
_CROWN = np.array([[-0.9, 0.6], [-0.9, -0.7], [-0.45, -0.05], [0.0, -0.85], [0.45, -0.05],
                   [0.9, -0.7], [0.9, 0.6]])
_WAVE_X = np.linspace(-0.9, 0.9, 25)
_WAVE = np.stack([_WAVE_X, 0.22 * np.sin(_WAVE_X * 2.0 * math.pi / 0.9)], axis=1)
_WAVE_OFFSET = 0.35  # the two waves lie this far above and below the centre
_RING_RADIUS = 0.78
_RING_WIDTH = 0.32  # line widths, in units of the mark's radius
_WAVE_WIDTH = 0.2


def _check_size(size: int) -> int:
    return integer(size, "size", _MIN_IMAGE_SIZE)


def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, 3)


def _away_from(rng: np.random.Generator, color: np.ndarray, distance: float) -> np.ndarray:
    """A random colour at least ``distance`` away from ``color`` (the farthest of a few tries)."""
    best, best_distance = color, -1.0
    for _ in range(_COLOR_TRIES):
        candidate = _random_color(rng)
        gap = float(np.linalg.norm(candidate - color))
        if gap >= distance:
            return candidate
        if gap > best_distance:
            best, best_distance = candidate, gap
    return best


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A table-like float32 background: a vertical gradient between two colours, plus faint grain."""
    top, bottom = _random_color(rng), _random_color(rng)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    image = (1.0 - t) * top.astype(np.float32) + t * bottom.astype(np.float32)
    image = np.repeat(image, size, axis=1)
    grain = cv2.resize(rng.normal(0.0, 12.0, (8, 8, 1)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    return image + grain[:, :, None]


def _paint(image: np.ndarray, mask: np.ndarray, color: np.ndarray, shade: np.ndarray | float = 1.0) -> None:
    """Blends ``color`` (times ``shade``) into the float image where the uint8 ``mask`` is set."""
    alpha = (mask.astype(np.float32) / 255.0)[:, :, None]
    image *= 1.0 - alpha
    image += alpha * (np.asarray(shade, dtype=np.float32)[..., None] * color.astype(np.float32))


def _fixed(points: np.ndarray) -> np.ndarray:
    """Points in continuous pixels as OpenCV's fixed-point int32 (``shift=4``), pixel centres at .5."""
    return np.round((np.asarray(points) - 0.5) * _SUBPIXEL).astype(np.int32)


def _point(x: float, y: float) -> tuple[int, int]:
    """One point for OpenCV's fixed-point drawing (``shift=4``)."""
    return tuple(int(v) for v in _fixed([x, y]))


def _lengths(a: float, b: float) -> tuple[int, int]:
    """Lengths (ellipse half-axes) for OpenCV's fixed-point drawing (``shift=4``)."""
    return round(a * _SUBPIXEL), round(b * _SUBPIXEL)


def _draw_object(rng: np.random.Generator, image: np.ndarray) -> tuple[float, float, float, float]:
    """Draws a cup or a plate; returns the face ``(x0, y0, x1, y1)`` (pixels) where a mark may go."""
    size = image.shape[0]
    color = _random_color(rng)
    mask = np.zeros((size, size), dtype=np.uint8)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if rng.random() < 0.5:  # plate: a flat ellipse with a rim
        cx, cy = rng.uniform(0.45, 0.55, 2) * size
        ax, ay = rng.uniform(0.42, 0.48) * size, rng.uniform(0.36, 0.46) * size
        cv2.ellipse(mask, _point(cx, cy), _lengths(ax, ay), 0.0, 0.0, 360.0, 255, -1,
                    cv2.LINE_AA, _SHIFT)
        shade = 0.75 + 0.25 * (1.0 - np.hypot((xs - cx) / ax, (ys - cy) / ay).clip(0.0, 1.0))
        _paint(image, mask, color, shade)
        rim = np.zeros_like(mask)
        cv2.ellipse(rim, _point(cx, cy), _lengths(0.78 * ax, 0.78 * ay), 0.0, 0.0, 360.0,
                    255, max(1, size // 48), cv2.LINE_AA, _SHIFT)
        _paint(image, rim, 0.7 * color)
        half_w, half_h = 0.62 * ax, 0.62 * ay  # inside the rim
        return cx - half_w, cy - half_h, cx + half_w, cy + half_h
    # cup: a cylinder (a shaded body between two ellipses) with a handle on one side
    width, height = rng.uniform(0.52, 0.62) * size, rng.uniform(0.55, 0.68) * size
    cx = rng.uniform(0.44, 0.56) * size
    y0 = rng.uniform(0.14, 0.22) * size
    x0, x1, y1 = cx - width / 2, cx + width / 2, y0 + height
    rim_h = 0.08 * size
    side = 1.0 if rng.random() < 0.5 else -1.0
    handle = np.zeros_like(mask)
    cv2.ellipse(handle, _point(cx + side * width / 2, (y0 + y1) / 2),
                _lengths(0.16 * size, 0.17 * size), 0.0, 0.0, 360.0, 255,
                max(2, size // 20), cv2.LINE_AA, _SHIFT)
    _paint(image, handle, 0.85 * color)
    body = np.zeros_like(mask)
    cv2.rectangle(body, _point(x0, y0), _point(x1, y1), 255, -1, cv2.LINE_AA, _SHIFT)
    cv2.ellipse(body, _point(cx, y1), _lengths(width / 2, rim_h), 0.0, 0.0, 360.0, 255, -1,
                cv2.LINE_AA, _SHIFT)
    shade = 0.65 + 0.35 * np.cos(np.clip((xs - cx) / (width / 2), -1.0, 1.0) * 1.2)
    _paint(image, body, color, shade)
    top = np.zeros_like(mask)
    cv2.ellipse(top, _point(cx, y0), _lengths(width / 2, rim_h), 0.0, 0.0, 360.0, 255, -1,
                cv2.LINE_AA, _SHIFT)
    _paint(image, top, 0.55 * color)
    return x0 + 0.1 * width, y0 + rim_h, x1 - 0.1 * width, y1  # clear of the dark sides and the rims


def _mark_mask(kind: str, size: int, center: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """The anti-aliased uint8 mask of one mark, ``(size, size)``."""
    mask = np.zeros((size, size), dtype=np.uint8)
    theta = math.radians(angle)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])

    def place(points: np.ndarray) -> np.ndarray:
        return _fixed(center + radius * points @ rotation.T)

    if kind == "ring":
        thickness = max(2, round(_RING_WIDTH * radius))
        cv2.circle(mask, _point(*center), round(_RING_RADIUS * radius * _SUBPIXEL), 255,
                   thickness, cv2.LINE_AA, _SHIFT)
    elif kind == "wave":
        thickness = max(2, round(_WAVE_WIDTH * radius))
        lines = [place(_WAVE + [0.0, offset]) for offset in (-_WAVE_OFFSET, _WAVE_OFFSET)]
        cv2.polylines(mask, lines, False, 255, thickness, cv2.LINE_AA, _SHIFT)
    else:
        cv2.fillPoly(mask, [place(_CROSS if kind == "cross" else _CROWN)], 255, cv2.LINE_AA, _SHIFT)
    return mask


def make_mark_image(
    rng: np.random.Generator, size: int = 96, label: int | None = None
) -> tuple[np.ndarray, int, np.ndarray]:
    """Draws one mark on a cup or a plate.

    Args:
        rng: The random generator; the same generator state gives the same image.
        size: Image height and width, pixels (>= 32).
        label: The mark's class, an index into :data:`MARK_CLASSES`; ``None`` draws one.

    Returns:
        ``(image, label, box)``: ``(size, size, 3)`` uint8 RGB; the label (0-based, no
        background); ``(4,)`` float64 normalised corners ``[xmin, ymin, xmax, ymax]`` of the
        pixels the mark covers (at least a quarter of).

    Raises:
        ValueError: ``size`` or ``label`` is out of range.
    """
    size = _check_size(size)
    if label is None:
        label = int(rng.integers(len(MARK_CLASSES)))
    elif isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < len(MARK_CLASSES):
        raise ValueError(f"label must be an integer in [0, {len(MARK_CLASSES) - 1}] "
                         f"({', '.join(MARK_CLASSES)}), got {label!r}")
    image = _background(rng, size)
    x0, y0, x1, y1 = _draw_object(rng, image)
    object_color = np.asarray(cv2.mean(image[int(y0):int(y1), int(x0):int(x1)])[:3])

    radius = 0.5 * size * rng.uniform(*MARK_SIZE_RANGE)
    radius = min(radius, 0.5 * (x1 - x0), 0.5 * (y1 - y0))
    center = np.array([rng.uniform(x0 + radius, x1 - radius), rng.uniform(y0 + radius, y1 - radius)])
    mask = _mark_mask(MARK_CLASSES[label], size, center, radius, rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    _paint(image, mask, _away_from(rng, object_color, _MIN_MARK_CONTRAST))

    image += rng.normal(0.0, rng.uniform(0.0, _MAX_NOISE_STD), image.shape).astype(np.float32)
    rows, cols = np.nonzero(mask >= _COVERED)
    box = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float64) / size
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), int(label), box


def make_marks_dataset(
    out_dir: str | os.PathLike[str], n_images: int, seed: int, size: int = 96, image_format: str = "png"
) -> Path:
    """Writes a synthetic marks dataset: a folder per class and the classification CSV.

    Layout::

        out_dir/<class>/<class>_000000.png ...  the images, a folder per mark class
        out_dir/marks.csv                       image,label (label: 0-based index into classes.txt)
        out_dir/classes.txt                     MARK_CLASSES, one per line
        out_dir/mark_boxes.csv                  the marks' boxes as a detection annotation CSV
                                                (image_path,xmin,ymin,xmax,ymax,class_name,difficult)

    The classes are balanced (image ``i`` shows mark ``i % 4`` before a seeded shuffle) and
    image ``i`` is drawn with ``numpy.random.default_rng([seed, i])``, so a dataset is the same
    on every run. Files already in the class folders are left in place (and listed in the CSV):
    use a fresh ``out_dir``.

    Args:
        out_dir: The dataset folder (created when missing).
        n_images: Number of images (>= 1).
        seed: Non-negative integer seed.
        size: Image height and width, pixels (>= 32).
        image_format: ``"png"`` (lossless) or ``"jpg"`` (quality 95).

    Returns:
        The path of ``marks.csv``.

    Raises:
        ValueError: A bad argument.
        OSError: An image could not be written (the message names it).
    """
    integer(n_images, "n_images", 1)
    integer(seed, "seed", 0)
    if image_format not in _IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {', '.join(_IMAGE_FORMATS)}, got {image_format!r}")
    size = _check_size(size)
    out_dir = Path(out_dir)
    for name in MARK_CLASSES:
        (out_dir / name).mkdir(parents=True, exist_ok=True)
    labels = np.random.default_rng([int(seed), int(n_images)]).permutation(np.arange(n_images) % len(MARK_CLASSES))
    params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if image_format == "jpg" else []
    digits = max(6, len(str(n_images - 1)))
    records = []
    for index, label in enumerate(labels.tolist()):
        image, _, box = make_mark_image(np.random.default_rng([int(seed), index]), size, label)
        path = out_dir / MARK_CLASSES[label] / f"{MARK_CLASSES[label]}_{index:0{digits}d}.{image_format}"
        if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params):
            raise OSError(f"could not write image {path}")
        records.append({"image_path": str(path), "boxes": box[None] * size,
                        "labels": np.array([label + 1]), "difficult": np.zeros(1, bool)})
    csv_path = out_dir / MARKS_CSV
    folders_to_csv(out_dir, csv_path)
    write_annotations(records, list(MARK_CLASSES), out_dir / BOXES_CSV)
    return csv_path
