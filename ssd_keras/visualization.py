"""Pictures as arrays: class palette, detections, captions, heatmaps, Grad-CAM overlays, tiles.

This module is the one place in the project that turns detections and maps into pictures, with
OpenCV on arrays (:func:`draw_detections`, :func:`draw_box`, :func:`overlay_heatmap`,
:func:`overlay`, :func:`gradient_image`, :func:`tile`, :func:`save_image`), for the CLI, the
video, the demo and Grad-CAM. matplotlib figures (notebooks, PR curves) are in
:mod:`ssd_keras.plots`.

Conventions (``docs/ARCHITECTURE.md``):

* images are RGB ``uint8`` arrays of shape ``(H, W, 3)``;
* boxes are normalised corners ``[xmin, ymin, xmax, ymax]`` in [0, 1], turned into pixels by
  :func:`ssd_keras.boxes.to_pixels` at the edge;
* detection rows are :mod:`ssd_keras.layout`'s ``[label, confidence, xmin, ymin, xmax,
  ymax(, prior_index)]`` where ``label >= 1`` (0 is background);
* ``class_names`` lists the classes without background, so label ``i`` is
  ``class_names[i - 1]`` and has colour ``class_colors(...)[i - 1]``.
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from . import layout
from .boxes import to_normalized, to_pixels

__all__ = [
    "class_colors",
    "label_text",
    "to_pixels",
    "to_normalized",
    "draw_box",
    "draw_detections",
    "overlay_heatmap",
    "overlay",
    "gradient_image",
    "tile",
    "save_image",
]

Color = tuple[int, int, int]

#: Accepted numbers of columns of a detection array (with/without prior index).
DETECTION_COLUMNS = (layout.DETECTION_COLUMNS, layout.DETECTION_COLUMNS_WITH_INDEX)
#: Luminance (0-255, ITU-R BT.601 weights) above which label text is black.
LUMINANCE_THRESHOLD = 128.0
#: ITU-R BT.601 luma weights for R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: OpenCV font used for labels.
FONT = cv2.FONT_HERSHEY_SIMPLEX
#: Image side (pixels, shorter side) per unit of default box line thickness.
PIXELS_PER_THICKNESS = 270.0
#: Smallest default box line thickness (pixels).
MIN_THICKNESS = 2
#: Image side (pixels, shorter side) per unit of default font scale.
PIXELS_PER_FONT_SCALE = 800.0
#: Smallest default font scale (about 9 px high text with FONT).
MIN_FONT_SCALE = 0.4
#: Contrast of :func:`gradient_image`: standard deviations mapped onto half the grey range.
GRADIENT_IMAGE_SPREAD = 0.15
WHITE = (255, 255, 255)


# --------------------------------------------------------------------------- #
# Palette and text
# --------------------------------------------------------------------------- #
def class_colors(num_classes: int) -> list[Color]:
    """One distinct RGB colour per (non-background) class.

    The hues are evenly spaced around the colour wheel at full saturation and
    value, like the original port's ``plt.cm.hsv(np.linspace(0, 1, n))`` but
    without repeating red at both ends: hue ``i / num_classes`` for class
    index ``i``. The first colour is pure red ``(255, 0, 0)``. Colours are
    distinct for any ``num_classes`` up to 1530 (the number of distinct
    fully saturated uint8 hues).

    Args:
        num_classes: Number of classes without background (>= 1).

    Returns:
        ``num_classes`` tuples ``(r, g, b)`` of ints in [0, 255]; index 0 is
        the colour of label 1.

    Raises:
        ValueError: If ``num_classes`` is not an integer >= 1.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    colors = []
    for hue in np.arange(num_classes) / num_classes:
        rgb = colorsys.hsv_to_rgb(float(hue), 1.0, 1.0)
        colors.append(tuple(int(round(255.0 * c)) for c in rgb))
    return colors


def label_text(label: float, confidence: float, class_names: Sequence[str]) -> str:
    """Caption ``"name score"`` of one detection, e.g. ``"dog 0.87"``.

    Args:
        label: Class label, >= 1 (0 is background); floats from a detection
            array are accepted.
        confidence: Score in [0, 1], printed with two decimals.
        class_names: Class names without background; label ``i`` is
            ``class_names[i - 1]``.

    Returns:
        The caption; a label outside ``1..len(class_names)`` gives
        ``"class <label> <score>"`` instead of raising.
    """
    index = int(label)
    if 1 <= index <= len(class_names):
        name = str(class_names[index - 1])
    else:
        name = f"class {index}"
    return f"{name} {float(confidence):.2f}"


def _text_color(color: Sequence[int]) -> Color:
    """Black or white, whichever contrasts more with an RGB background."""
    luminance = sum(w * float(c) for w, c in zip(LUMA_WEIGHTS, color))
    return (0, 0, 0) if luminance > LUMINANCE_THRESHOLD else (255, 255, 255)


def _color_for(label: int, colors: Sequence[Sequence[int]]) -> Color:
    """RGB colour of a label; labels beyond the palette wrap around."""
    r, g, b = colors[(label - 1) % len(colors)][:3]
    return int(r), int(g), int(b)


# --------------------------------------------------------------------------- #
# Validation shared by the drawing functions
# --------------------------------------------------------------------------- #
def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    """Return ``image`` as an ndarray after checking it is RGB uint8 ``(H, W, 3)``."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name}: image must be an RGB array of shape (H, W, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: image must have dtype uint8, got {image.dtype}")
    return image


def _visible_detections(detections: np.ndarray, confidence_threshold: float, name: str) -> np.ndarray:
    """Rows with confidence >= ``confidence_threshold``, least confident first.

    Args:
        detections: ``(n, 6)`` or ``(n, 7)`` detection rows; an empty array
            (any shape of size 0) means no detections.
        confidence_threshold: Minimum confidence drawn.
        name: Caller name for error messages.

    Returns:
        float64 ``(m, 6|7)`` rows sorted by increasing confidence, so the most
        confident boxes and labels are drawn last (on top).

    Raises:
        ValueError: On a wrong shape, or a non-finite box or label to draw.
    """
    detections = np.asarray(detections, dtype=np.float64)
    if detections.size == 0:
        return np.zeros((0, DETECTION_COLUMNS[0]), dtype=np.float64)
    if detections.ndim != 2 or detections.shape[1] not in DETECTION_COLUMNS:
        raise ValueError(
            f"{name}: detections must have shape (n, 6) or (n, 7) with rows "
            f"[label, confidence, xmin, ymin, xmax, ymax(, prior_index)], got shape {detections.shape}"
        )
    keep = detections[detections[:, layout.CONFIDENCE] >= confidence_threshold]
    bad = ~np.isfinite(keep[:, [0, 2, 3, 4, 5]]).all(axis=1)
    if bad.any():
        raise ValueError(f"{name}: detection with a non-finite label or box: {keep[bad][0].tolist()}")
    return keep[np.argsort(keep[:, layout.CONFIDENCE], kind="stable")]


def _pixel_boxes(rows: np.ndarray, width: int, height: int) -> np.ndarray:
    """Integer pixel corners of detection rows, clipped to the image."""
    boxes = np.rint(to_pixels(rows[:, layout.BOX], width, height))
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width - 1)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height - 1)
    return boxes.astype(np.int64)


# --------------------------------------------------------------------------- #
# OpenCV drawing
# --------------------------------------------------------------------------- #
def _draw_label(image: np.ndarray, text: str, box: np.ndarray, color: Color, font_scale: float) -> None:
    """Draw ``text`` on a filled ``color`` background at the top-left of ``box``, in place.

    The label sits above the box when there is room, otherwise just inside
    its top edge; it is shifted left to stay inside the image.
    """
    height, width = image.shape[:2]
    text_thickness = max(1, int(round(font_scale * 1.5)))
    (text_w, text_h), baseline = cv2.getTextSize(text, FONT, font_scale, text_thickness)
    pad = max(1, text_thickness)
    label_w, label_h = text_w + 2 * pad, text_h + baseline + 2 * pad
    left, top = int(box[0]), int(box[1])
    y0 = top - label_h if top - label_h >= 0 else top
    x0 = max(0, min(left, width - label_w))
    x1, y1 = min(width - 1, x0 + label_w), min(height - 1, y0 + label_h)
    cv2.rectangle(image, (x0, y0), (x1, y1), color, thickness=cv2.FILLED)
    cv2.putText(
        image,
        text,
        (x0 + pad, y0 + pad + text_h),
        FONT,
        font_scale,
        _text_color(color),
        text_thickness,
        cv2.LINE_AA,
    )


def draw_detections(
    image: np.ndarray,
    detections: np.ndarray,
    class_names: Sequence[str],
    confidence_threshold: float = 0.0,
    colors: Sequence[Sequence[int]] | None = None,
    thickness: int | None = None,
    font_scale: float | None = None,
) -> np.ndarray:
    """Draw boxes and ``"name score"`` labels on a copy of an image with OpenCV.

    Each detection with ``confidence >= confidence_threshold`` gets a rectangle in its
    class colour and, at its top-left corner, a filled label of the same
    colour with black or white text (whichever contrasts more). The label is
    above the box, or inside it when the box touches the top edge. Boxes are
    clipped to the image; the most confident detections are drawn last.

    Args:
        image: RGB uint8 ``(H, W, 3)``; not modified.
        detections: ``(n, 6)`` or ``(n, 7)`` rows ``[label, confidence, xmin,
            ymin, xmax, ymax(, prior_index)]`` with normalised corners; ``(0, 6)``
            (or any empty array) draws nothing.
        class_names: Class names without background (label ``i`` is
            ``class_names[i - 1]``).
        confidence_threshold: Minimum confidence drawn.
        colors: RGB uint8 colours indexed by ``label - 1`` (wrapping around);
            defaults to ``class_colors(len(class_names))``.
        thickness: Box line thickness in pixels; defaults to about 1/270 of
            the shorter image side, at least 2.
        font_scale: OpenCV font scale; defaults to about 1/800 of the
            shorter image side, at least 0.4.

    Returns:
        A new RGB uint8 ``(H, W, 3)`` array.

    Raises:
        ValueError: If the image is not RGB uint8 ``(H, W, 3)``, the detections
            do not have 6 or 7 columns, or a drawn box is not finite.
    """
    image = _check_image(image, "draw_detections")
    rows = _visible_detections(detections, confidence_threshold, "draw_detections")
    canvas = np.array(image, dtype=np.uint8, order="C", copy=True)
    if len(rows) == 0:
        return canvas
    height, width = image.shape[:2]
    thickness, font_scale = _line_sizes(height, width, thickness, font_scale)
    if colors is None:
        colors = class_colors(max(1, len(class_names)))
    boxes = _pixel_boxes(rows, width, height)
    for row, box in zip(rows, boxes):
        label = int(row[0])
        _draw_box(canvas, box, label_text(label, row[1], class_names), _color_for(label, colors),
                  thickness, font_scale)
    return canvas


def _line_sizes(height: int, width: int, thickness: int | None, font_scale: float | None):
    """Box line thickness and font scale: the given ones, or proportional to the image."""
    short_side = min(height, width)
    if thickness is None:
        thickness = max(MIN_THICKNESS, int(round(short_side / PIXELS_PER_THICKNESS)))
    if font_scale is None:
        font_scale = max(MIN_FONT_SCALE, short_side / PIXELS_PER_FONT_SCALE)
    return int(thickness), float(font_scale)


def _draw_box(canvas: np.ndarray, box: np.ndarray, text: str | None, color: Color,
              thickness: int, font_scale: float) -> None:
    """A rectangle at pixel corners ``box`` and, with ``text``, its label; in place."""
    cv2.rectangle(canvas, (int(box[0]), int(box[1])), (int(box[2]), int(box[3])), color, thickness)
    if text is not None:
        _draw_label(canvas, text, box, color, font_scale)


def draw_box(image: np.ndarray, box: Sequence[float], text: str | None = None,
             color: Sequence[int] = (255, 255, 255), thickness: int | None = None,
             font_scale: float | None = None) -> np.ndarray:
    """One box (normalised corners) with an optional caption, drawn like a detection.

    Args:
        image: RGB uint8 ``(H, W, 3)``; not modified.
        box: ``[xmin, ymin, xmax, ymax]`` normalised corners.
        text: caption on a filled background of ``color`` at the box's top-left corner.
        color: RGB colour.
        thickness, font_scale: as in :func:`draw_detections`.

    Returns:
        A new RGB uint8 ``(H, W, 3)`` array.
    """
    image = _check_image(image, "draw_box")
    canvas = np.array(image, dtype=np.uint8, order="C", copy=True)
    height, width = image.shape[:2]
    corners = np.asarray(box, dtype=np.float64).reshape(1, 4)
    if not np.isfinite(corners).all():
        raise ValueError(f"draw_box: the box must be finite, got {list(box)}")
    pixels = _pixel_boxes(np.concatenate([np.zeros((1, 2)), corners], axis=1), width, height)[0]
    _draw_box(canvas, pixels, text, tuple(int(c) for c in color),
              *_line_sizes(height, width, thickness, font_scale))
    return canvas


# --------------------------------------------------------------------------- #
# Heatmaps and files
# --------------------------------------------------------------------------- #
def overlay_heatmap(
    image: np.ndarray,
    heatmap: np.ndarray,
    alpha: float = 0.5,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """Blend a colour-mapped heatmap over an image (e.g. a Grad-CAM map).

    The map is resized bilinearly to the image size when it differs, scaled
    to uint8 (``round(255 * v)``), coloured with the OpenCV colormap (BGR,
    converted to RGB) and blended: ``(1 - alpha) * image + alpha * colours``.

    Args:
        image: RGB uint8 ``(H, W, 3)``; not modified.
        heatmap: float ``(h, w)`` with values in [0, 1].
        alpha: Heatmap opacity in [0, 1]: 0 returns the image, 1 the pure
            coloured map.
        colormap: An OpenCV colormap id (``cv2.COLORMAP_*``).

    Returns:
        A new RGB uint8 ``(H, W, 3)`` array.

    Raises:
        ValueError: If the image is not RGB uint8 ``(H, W, 3)``, the heatmap
            is not a non-empty 2-D array, has NaN or values outside [0, 1], or
            ``alpha`` is outside [0, 1].
    """
    image = _check_image(image, "overlay_heatmap")
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2 or heatmap.size == 0:
        raise ValueError(f"overlay_heatmap: heatmap must be a non-empty (h, w) array, got shape {heatmap.shape}")
    if np.isnan(heatmap).any():
        raise ValueError("overlay_heatmap: heatmap contains NaN")
    low, high = float(heatmap.min()), float(heatmap.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"overlay_heatmap: heatmap values must be in [0, 1], got range [{low}, {high}]")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay_heatmap: alpha must be in [0, 1], got {alpha}")
    height, width = image.shape[:2]
    if heatmap.shape != (height, width):
        heatmap = cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_LINEAR)
    levels = np.rint(np.clip(heatmap, 0.0, 1.0) * 255.0).astype(np.uint8)
    colored = cv2.cvtColor(cv2.applyColorMap(levels, colormap), cv2.COLOR_BGR2RGB)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colored.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB uint8 image to a file (format from the extension) with OpenCV.

    The image is converted to BGR for OpenCV; missing parent directories are
    created.

    Args:
        path: Destination, e.g. ``out/dog.png`` or ``out/dog.jpg``.
        image: RGB uint8 ``(H, W, 3)``.

    Raises:
        ValueError: If the image is not RGB uint8 ``(H, W, 3)``.
        OSError: Naming ``path``, if the folder cannot be created or OpenCV
            cannot write the file (unknown extension, unwritable location).
    """
    image = _check_image(image, "save_image")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"save_image: cannot create the folder of {path}: {err}") from err
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    try:
        written = cv2.imwrite(str(path), bgr)
    except cv2.error as err:
        raise OSError(f"save_image: OpenCV cannot write {path}: {err}") from err
    if not written:
        raise OSError(f"save_image: OpenCV failed to write {path}")


# --------------------------------------------------------------------------- #
# Explanations and grids
# --------------------------------------------------------------------------- #
def overlay(image: np.ndarray, heatmap: np.ndarray, box: Sequence[float] | None = None,
            label: str | None = None, alpha: float = 0.4,
            color: Sequence[int] = WHITE) -> np.ndarray:
    """A heatmap over a picture (JET colormap), with an optional box and caption.

    Args:
        image: RGB uint8 ``(H, W, 3)`` (the original picture, any size); not modified.
        heatmap: ``(h, w)`` in [0, 1], resized bilinearly to the picture.
        box: normalised corners ``[xmin, ymin, xmax, ymax]`` drawn as a rectangle.
        label: caption drawn at the box's top-left corner (needs ``box``).
        alpha: heatmap opacity in [0, 1].
        color: RGB colour of the box and the caption's background.

    Returns:
        A new RGB uint8 ``(H, W, 3)`` picture, for :func:`save_image` or ``plt.imshow``.
    """
    canvas = overlay_heatmap(image, heatmap, alpha=alpha)
    if box is None:
        if label is not None:
            raise ValueError("overlay: a label is drawn at its box; pass box too")
        return canvas
    corners = np.asarray(box, dtype=np.float64)
    if corners.shape != (4,):
        raise ValueError(f"box must be 4 normalised corners, got shape {corners.shape}")
    return draw_box(canvas, corners, label, color)


def gradient_image(gradient: np.ndarray, bgr: bool = False) -> np.ndarray:
    """A picture of an input gradient ``(H, W, C)`` (guided backprop): uint8, mid-grey at zero.

    Each value becomes ``0.5 + 0.15 * (g - mean) / std`` of the range, clipped.

    Args:
        gradient: ``(H, W, C)`` float.
        bgr: the channels are BGR (SSD inputs): reverse them to RGB.

    Returns:
        ``(H, W, C)`` uint8.
    """
    g = np.asarray(gradient, dtype=np.float64)
    if g.ndim != 3:
        raise ValueError(f"gradient must be (H, W, C), got shape {g.shape}")
    std = g.std()
    g = 0.5 + GRADIENT_IMAGE_SPREAD * (g - g.mean()) / (std if std > 0 else 1.0)
    picture = np.rint(255.0 * np.clip(g, 0.0, 1.0)).astype(np.uint8)
    return np.ascontiguousarray(picture[..., ::-1]) if bgr else picture


def tile(pictures: Sequence[np.ndarray], height: int = 256, columns: int = 3) -> np.ndarray:
    """The pictures side by side, ``columns`` to a row, each scaled to ``height`` (black padding).

    Args:
        pictures: RGB uint8 ``(H, W, 3)`` arrays, sizes may differ.
        height: height of each scaled picture, pixels.
        columns: pictures per row.

    Returns:
        One RGB uint8 picture.
    """
    if not len(pictures):
        raise ValueError("tile: no pictures")
    if int(height) != height or height < 1 or int(columns) != columns or columns < 1:
        raise ValueError(f"tile: height and columns must be positive integers, got {height} and {columns}")
    scaled = [cv2.resize(_check_image(p, "tile"), (max(1, round(p.shape[1] * height / p.shape[0])), int(height)))
              for p in pictures]
    width = max(p.shape[1] for p in scaled)
    rows = []
    for start in range(0, len(scaled), int(columns)):
        row = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0))) for p in scaled[start:start + int(columns)]]
        row += [np.zeros_like(row[0])] * (int(columns) - len(row))
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)
