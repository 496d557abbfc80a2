"""Seeded synthetic detection scenes: coloured shapes on textured backgrounds, with exact boxes.

A scene is a square RGB uint8 image holding 1 to ``max_objects`` filled shapes (circles, squares,
triangles and five-pointed stars; see :data:`SHAPE_CLASSES`) of random size, colour and rotation
on a smooth random background with low-contrast lines and pixel noise. It is a small, fully known
detection problem for smoke tests, demos and training sanity checks: a detector that cannot learn
it has a bug.

Coordinates. Drawing uses *continuous* pixel coordinates: ``(0, 0)`` is the top-left corner of
the top-left pixel and pixel ``(row i, column j)`` covers ``[j, j + 1) x [i, i + 1)`` (its centre
is ``(j + 0.5, i + 0.5)``). A normalised coordinate is a continuous one divided by the image width
(x) or height (y), so a pixel coordinate in the annotation CSV is the normalised one times the
image size. Shape geometry is quantised to 1/16 pixel (OpenCV's sub-pixel drawing with
``shift=4``), so boxes are exact multiples of 1/16 pixel, except where the image border cuts a
polygon edge.

Box rule. The box of a shape is the tight box of the geometric shape's part inside the image:
for a polygon (square, triangle, star, after rotation) the min/max of the vertices of the polygon
clipped to the image rectangle (which is the min/max of its own vertices when it lies inside);
for a circle its centre +/- its radius, clipped (exact, because centres lie inside the image).
Parts hidden by later shapes still count (an amodal box, as a person would draw it), parts outside
the image do not. Shapes are drawn anti-aliased so that half-covered pixels lie on the geometric
edge; faint anti-aliasing reaches about 1.5 pixels beyond it, and a sliver thinner than a pixel
(where the border cuts an edge at a shallow angle) may stay undrawn though its box counts it.

Occlusion rule. Shapes are drawn one over the other in annotation order. Every annotated shape
keeps at least :data:`MIN_VISIBLE_FRACTION` (40 %) of its geometric area visible: inside the image
and not covered by shapes drawn after it. A candidate shape that would break this, for itself (by
lying mostly outside the image) or for any shape already placed (by covering it), is not drawn and
another one is tried; after a few failed tries the scene keeps fewer shapes (never fewer than one:
the first shape can only fail by lying mostly outside the image, and is retried until it fits).
So every drawn shape is annotated and every annotation is at least 40 % visible.

This module does not import TensorFlow.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..boxes import to_normalized
from ..checks import integer
from .annotations import ANNOTATION_COLUMNS
from .classes import write_class_list

__all__ = [
    "MIN_VISIBLE_FRACTION",
    "SHAPE_CLASSES",
    "draw_shape",
    "make_scene",
    "make_shapes_dataset",
]

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star")
"""The shape classes, without background: label ``i + 1`` is ``SHAPE_CLASSES[i]``."""

MIN_VISIBLE_FRACTION = 0.4
"""The least fraction of a shape's area that stays visible (in the image, not covered)."""

REFERENCE_SIZE = 300
"""The image size that the shape-size range below refers to; it scales with the image size."""
SHAPE_SIZE_RANGE = (20.0, 250.0)
"""Shape sizes (diameter of the circumscribed circle, pixels) on a ``REFERENCE_SIZE`` image."""

_SHIFT = 4  # OpenCV's fractional bits for sub-pixel drawing
_SUBPIXEL = 1 << _SHIFT
_AA_INSET = 0.5  # pixels: see _rasterise
_STAR_INNER_RATIO = 0.45  # inner / outer radius of the star
_MIN_COLOR_DISTANCE = 110.0  # wanted RGB distance of a shape's colour from the local background
_COLOR_CANDIDATES = 8
_TRIES_PER_SHAPE = 4
_MAX_NOISE = 12  # pixel noise amplitude (uniform in [-a, a], a drawn up to this)
_MAX_LINES = 6
_IMAGE_FORMATS = ("jpg", "png")
_JPEG_QUALITY = 95
_MIN_IMAGE_SIZE = 16


# --------------------------------------------------------------------------------------------
# geometry and drawing


def _shape_geometry(kind: str, center: Sequence[float], size: float, angle: float) -> np.ndarray:
    """The vertices of a polygon shape, or ``[[cx, cy], [r, r]]`` for a circle.

    Args:
        kind: One of :data:`SHAPE_CLASSES`.
        center: ``(x, y)`` in continuous pixel coordinates.
        size: Diameter of the circumscribed circle, pixels.
        angle: Rotation in degrees, clockwise as displayed (ignored for circles).

    Returns:
        ``(k, 2)`` float64 vertices ``(x, y)``, quantised to 1/16 pixel; for a circle the centre
        and the radius (repeated), quantised alike.

    Raises:
        ValueError: ``kind`` is not a shape class or ``size`` is not positive.
    """
    if kind not in SHAPE_CLASSES:
        raise ValueError(f"unknown shape kind {kind!r}: expected one of {', '.join(SHAPE_CLASSES)}")
    if not size > 0:
        raise ValueError(f"shape size must be positive, got {size!r}")
    cx, cy = float(center[0]), float(center[1])
    radius = size / 2.0
    if kind == "circle":
        geometry = np.array([[cx, cy], [radius, radius]])
    else:
        if kind == "square":
            degrees, radii = np.arange(4) * 90.0 + 45.0, np.full(4, radius)
        elif kind == "triangle":
            degrees, radii = np.arange(3) * 120.0 - 90.0, np.full(3, radius)
        else:  # star: outer and inner vertices alternate
            degrees = np.arange(10) * 36.0 - 90.0
            radii = np.where(np.arange(10) % 2 == 0, radius, radius * _STAR_INNER_RATIO)
        theta = np.deg2rad(degrees + angle)
        geometry = np.stack([cx + radii * np.cos(theta), cy + radii * np.sin(theta)], axis=1)
    return np.round(geometry * _SUBPIXEL) / _SUBPIXEL


def _clip_polygon(vertices: np.ndarray, width: float, height: float) -> np.ndarray:
    """The part of a polygon inside ``[0, width] x [0, height]`` (Sutherland-Hodgman).

    Args:
        vertices: ``(k, 2)`` vertices ``(x, y)`` in order; the polygon may be non-convex.

    Returns:
        ``(m, 2)`` vertices of the clipped polygon (``m`` may be 0). For a non-convex polygon
        the result can hold zero-width bridges along the border; its bounding box is still the
        tight box of the polygon's part inside the rectangle.
    """
    for axis, bound, sign in ((0, 0.0, 1.0), (0, width, -1.0), (1, 0.0, 1.0), (1, height, -1.0)):
        if not len(vertices):
            break
        following = np.roll(vertices, -1, axis=0)
        inside = sign * (vertices[:, axis] - bound) >= 0
        crosses = inside != np.roll(inside, -1)
        points = []
        for vertex, after, keep, cross in zip(vertices, following, inside, crosses):
            if keep:
                points.append(vertex)
            if cross:
                t = (bound - vertex[axis]) / (after[axis] - vertex[axis])
                crossing = vertex + t * (after - vertex)
                crossing[axis] = bound  # exactly on the border
                points.append(crossing)
        vertices = np.array(points).reshape(-1, 2)
    return vertices


def _visible_box(geometry: np.ndarray, is_circle: bool, width: int, height: int) -> np.ndarray:
    """The tight ``[xmin, ymin, xmax, ymax]`` of the part of a shape inside the image, continuous
    pixel coordinates; all zeros when no part is inside.

    For a polygon: the min/max of the vertices of the polygon clipped to the image. For a circle:
    along each axis, the chord at the coordinate nearest the centre that the image allows (the
    centre +/- the radius when the centre is inside), clipped to the image.
    """
    if is_circle:
        center, radius = geometry[0], geometry[1, 0]
        limits = np.array([width, height], dtype=np.float64)
        offset = np.clip(center, 0.0, limits) - center  # to the image point nearest the centre
        if float(offset @ offset) >= radius**2:
            return np.zeros(4)
        half = np.sqrt(radius**2 - offset[::-1] ** 2)  # x half-chord at that y, y half-chord at that x
        return np.concatenate([np.maximum(center - half, 0.0), np.minimum(center + half, limits)])
    clipped = _clip_polygon(geometry, width, height)
    if not len(clipped):
        return np.zeros(4)
    return np.concatenate([clipped.min(axis=0), clipped.max(axis=0)])


def _geometry_area(geometry: np.ndarray, is_circle: bool) -> float:
    """The exact area of a geometry, square pixels (shoelace formula for polygons)."""
    if is_circle:
        return math.pi * geometry[1, 0] ** 2
    x, y = geometry[:, 0], geometry[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _inset_polygon(vertices: np.ndarray, distance: float) -> np.ndarray:
    """The polygon with every edge moved ``distance`` pixels inwards (mitred corners).

    The new vertex ``i`` is where the moved edges ``i - 1`` and ``i`` meet:
    ``v + d (n1 + n2) / (1 + n1 . n2)`` for the unit inward normals ``n1``, ``n2``.
    """
    edges = np.roll(vertices, -1, axis=0) - vertices
    normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1) / np.linalg.norm(edges, axis=1, keepdims=True)
    x, y = vertices[:, 0], vertices[:, 1]
    if np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)) < 0:
        normals = -normals  # the interior lies left of the edges only for a positive signed area
    previous = np.roll(normals, 1, axis=0)
    return vertices + distance * (previous + normals) / (1.0 + np.sum(previous * normals, axis=1, keepdims=True))


def _rasterise(
    target: np.ndarray,
    geometry: np.ndarray,
    is_circle: bool,
    color: int | tuple[int, ...],
    line_type: int,
    origin: tuple[int, int] = (0, 0),
) -> None:
    """Fills a geometry into ``target`` (in place), whose top-left pixel is pixel ``origin`` (x, y).

    OpenCV's integer point ``p`` is the centre of pixel ``p``, i.e. continuous ``p + 0.5``, so the
    continuous geometry is moved by half a pixel and written as 1/16-pixel fixed point. With
    ``cv2.LINE_AA`` OpenCV adds an anti-aliased one-pixel outline centred on the edge, which makes
    shapes about half a pixel fatter all round: the outline is drawn ``_AA_INSET`` inside the
    edge, so that the half-covered pixels lie on the geometric edge (measured against a 16x
    supersampled rendering: 5x less coverage error than drawing the edge itself).
    """
    inset = _AA_INSET if line_type == cv2.LINE_AA else 0.0
    offset = 0.5 + np.asarray(origin, dtype=np.float64)
    if is_circle:
        center = np.rint((geometry[0] - offset) * _SUBPIXEL).astype(int)
        radius = max(geometry[1, 0] - inset, 0.5)
        cv2.circle(target, (int(center[0]), int(center[1])), round(radius * _SUBPIXEL), color, -1, line_type, _SHIFT)
    else:
        vertices = _inset_polygon(geometry, inset) if inset else geometry
        cv2.fillPoly(target, [np.rint((vertices - offset) * _SUBPIXEL).astype(np.int32)], color, line_type, _SHIFT)


def draw_shape(
    image: np.ndarray,
    kind: str,
    center: Sequence[float],
    size: float,
    angle: float,
    color: Sequence[int],
) -> np.ndarray:
    """Draws one filled, anti-aliased shape into ``image`` (in place) and returns its box.

    Args:
        image: ``(height, width, 3)`` uint8 RGB image, drawn on in place.
        kind: One of :data:`SHAPE_CLASSES`.
        center: ``(x, y)`` centre in continuous pixel coordinates (``(0, 0)`` is the top-left
            corner of the image, pixel centres are at half-integers).
        size: Diameter of the shape's circumscribed circle, pixels (a circle's diameter).
        angle: Rotation in degrees, clockwise as displayed; ignored for circles. At 0 a square
            is axis-aligned and a triangle or star points up.
        color: RGB colour, three integers in [0, 255].

    Returns:
        ``(4,)`` float64 normalised box ``[xmin, ymin, xmax, ymax]``: the tight box of the
        shape's part inside the image (the box rule of the module docstring; geometry quantised
        to 1/16 pixel), divided by the image width and height. All zeros when the shape lies
        outside the image.

    Raises:
        ValueError: ``image`` is not a 3-channel uint8 array, ``kind`` is unknown or ``size``
            not positive.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be a (height, width, 3) uint8 array, got "
                         f"{getattr(image, 'dtype', type(image).__name__)} of shape {np.shape(image)}")
    geometry = _shape_geometry(kind, center, size, angle)
    is_circle = kind == "circle"
    _rasterise(image, geometry, is_circle, tuple(int(c) for c in color), cv2.LINE_AA)
    height, width = image.shape[:2]
    return to_normalized(_visible_box(geometry, is_circle, width, height), width, height)


# --------------------------------------------------------------------------------------------
# scenes


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour field (gradient plus blobs) with a few low-contrast lines."""
    gradient = rng.integers(0, 256, (2, 2, 3), dtype=np.uint8)
    image = cv2.resize(gradient, (size, size), interpolation=cv2.INTER_LINEAR)
    blobs_res = int(rng.integers(3, 7))
    amplitude = int(rng.integers(10, 40))
    blobs = rng.integers(0, 2 * amplitude + 1, (blobs_res, blobs_res, 3), dtype=np.uint8)
    blobs = cv2.resize(blobs, (size, size), interpolation=cv2.INTER_CUBIC)
    image = cv2.subtract(cv2.add(image, blobs), (amplitude, amplitude, amplitude, 0))
    for _ in range(int(rng.integers(0, _MAX_LINES + 1))):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, size, 4))
        base = image[y0, x0].astype(np.int64)
        color = tuple(int(c) for c in np.clip(base + rng.integers(-30, 31, 3), 0, 255))
        thickness = int(rng.integers(1, max(2, size // 60)))
        cv2.line(image, (x0, y0), (x1, y1), color, thickness, cv2.LINE_AA)
    return image


def _contrasting_color(rng: np.random.Generator, local_mean: np.ndarray) -> tuple[int, int, int]:
    """A random RGB colour at least ``_MIN_COLOR_DISTANCE`` from ``local_mean`` when one of a
    few candidates is, else the farthest candidate."""
    candidates = rng.integers(0, 256, (_COLOR_CANDIDATES, 3))
    distances = np.linalg.norm(candidates - local_mean, axis=1)
    far = np.flatnonzero(distances >= _MIN_COLOR_DISTANCE)
    chosen = candidates[far[0] if len(far) else int(np.argmax(distances))]
    return int(chosen[0]), int(chosen[1]), int(chosen[2])


def _check_scene_args(size: int, max_objects: int) -> None:
    """Raises ``ValueError`` for an image size or object count ``make_scene`` cannot use."""
    integer(size, "size", _MIN_IMAGE_SIZE)
    integer(max_objects, "max_objects", 0)


def make_scene(
    rng: np.random.Generator, size: int = REFERENCE_SIZE, max_objects: int = 6
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws one random scene of shapes and returns it with its exact annotations.

    The scene holds ``1..max_objects`` shapes (drawn uniformly, then fewer when the occlusion
    rule of the module docstring rejects candidates; none when ``max_objects`` is 0). Shape
    sizes (circumscribed diameter) are log-uniform in 20..250 px scaled by ``size / 300``;
    centres lie inside the image; squares, triangles and stars are rotated at random; colours
    are chosen away from the mean colour under the shape. Pixel noise is added last, over the
    shapes too. About 1.5 ms at 300x300.

    Args:
        rng: The random generator; the same generator state gives the same scene.
        size: Image height and width, pixels (>= 16).
        max_objects: Most shapes in the scene (>= 0).

    Returns:
        ``(image, boxes, labels)``: ``(size, size, 3)`` uint8 RGB image; ``(n, 4)`` float64
        normalised boxes ``[xmin, ymin, xmax, ymax]`` (see the box rule in the module
        docstring), in drawing order (later boxes are drawn over earlier ones); ``(n,)`` int64
        labels in ``1..len(SHAPE_CLASSES)``.

    Raises:
        ValueError: ``size`` or ``max_objects`` is not a valid integer.
    """
    _check_scene_args(size, max_objects)
    size = int(size)
    image = _background(rng, size)
    wanted = int(rng.integers(1, max_objects + 1)) if max_objects > 0 else 0
    scale = size / REFERENCE_SIZE
    log_low, log_high = (math.log(s * scale) for s in SHAPE_SIZE_RANGE)

    owner = np.full((size, size), -1, dtype=np.int16)  # index of the shape seen at each pixel
    visible: list[int] = []  # visible pixels of each placed shape
    needed: list[float] = []  # least visible pixels each placed shape must keep
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    tries = 0
    # The first shape can only fail by lying mostly outside the image: it is retried until it fits.
    while len(labels) < wanted and (tries < _TRIES_PER_SHAPE * wanted or not labels):
        tries += 1
        label = int(rng.integers(len(SHAPE_CLASSES))) + 1
        kind = SHAPE_CLASSES[label - 1]
        geometry = _shape_geometry(kind, rng.uniform(0.0, size, 2), math.exp(rng.uniform(log_low, log_high)),
                                   rng.uniform(0.0, 360.0))
        is_circle = kind == "circle"
        box = _visible_box(geometry, is_circle, size, size)
        x0, y0 = int(box[0]), int(box[1])
        x1, y1 = min(size, math.ceil(box[2]) + 1), min(size, math.ceil(box[3]) + 1)
        mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        _rasterise(mask, geometry, is_circle, 1, cv2.LINE_8, (x0, y0))
        covered = mask.view(bool)
        area = int(np.count_nonzero(covered))
        minimum = MIN_VISIBLE_FRACTION * _geometry_area(geometry, is_circle)
        if area < minimum:
            continue  # mostly outside the image
        window = owner[y0:y1, x0:x1]
        lost = np.bincount(window[covered] + 1, minlength=len(labels) + 1)[1:]
        if any(visible[j] - lost[j] < needed[j] for j in np.flatnonzero(lost)):
            continue  # would hide too much of a shape already placed
        for j in np.flatnonzero(lost):
            visible[j] -= int(lost[j])
        window[covered] = len(labels)
        visible.append(area)
        needed.append(minimum)
        color = _contrasting_color(rng, np.asarray(cv2.mean(image[y0:y1, x0:x1])[:3]))
        _rasterise(image, geometry, is_circle, color, cv2.LINE_AA)
        boxes.append(box / size)
        labels.append(label)

    amplitude = int(rng.integers(0, _MAX_NOISE + 1))
    if amplitude:
        noise = rng.integers(0, 2 * amplitude + 1, image.shape, dtype=np.uint8)
        image = cv2.subtract(cv2.add(image, noise), (amplitude, amplitude, amplitude, 0))
    return (image, np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(labels, dtype=np.int64))


# --------------------------------------------------------------------------------------------
# datasets


def make_shapes_dataset(
    out_dir: str | os.PathLike[str],
    n_images: int,
    seed: int,
    size: int = REFERENCE_SIZE,
    max_objects: int = 6,
    image_format: str = "jpg",
    overwrite: bool = False,
) -> Path:
    """Writes a synthetic shapes dataset in the project's annotation format.

    Layout::

        out_dir/images/000000.jpg ...   the scenes (JPEG quality 95, or PNG)
        out_dir/annotations.csv         image_path,xmin,ymin,xmax,ymax,class_name
        out_dir/classes.txt             SHAPE_CLASSES, one per line

    CSV boxes are in pixels (normalised box times ``size``, written in full precision), image
    paths relative to ``out_dir``; a scene without shapes (only with ``max_objects=0``) gets
    one row with empty box fields. Scene ``i`` is drawn by ``make_scene`` with
    ``numpy.random.default_rng([seed, i])``, so a dataset is the same on every run and datasets
    of different lengths share their first scenes. Files are named with at least six digits.

    Args:
        out_dir: The dataset folder (created when missing).
        n_images: Number of scenes (>= 0).
        seed: Non-negative integer seed.
        size: Image height and width, pixels.
        max_objects: Most shapes per scene.
        image_format: ``"jpg"`` or ``"png"`` (lossless: pixels equal ``make_scene``'s).
        overwrite: Allow writing into a non-empty ``out_dir/images``: files of the same names
            are replaced, other files are left alone; the CSV and class list are rewritten.

    Returns:
        The path of ``annotations.csv``.

    Raises:
        ValueError: A bad argument, or ``out_dir/images`` is not empty and ``overwrite`` is
            false (the message names the folder).
        OSError: An image could not be written (the message names it).
    """
    integer(n_images, "n_images", 0)
    integer(seed, "seed", 0)
    if image_format not in _IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {', '.join(_IMAGE_FORMATS)}, got {image_format!r}")
    _check_scene_args(size, max_objects)
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    if image_dir.is_dir() and any(image_dir.iterdir()) and not overwrite:
        raise ValueError(f"{image_dir} is not empty: pass overwrite=True to write the dataset into it anyway")
    image_dir.mkdir(parents=True, exist_ok=True)

    params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if image_format == "jpg" else []
    digits = max(6, len(str(max(n_images - 1, 0))))
    rows: list[list[str]] = []
    for index in range(int(n_images)):
        image, boxes, labels = make_scene(np.random.default_rng([int(seed), index]), size, max_objects)
        name = f"images/{index:0{digits}d}.{image_format}"
        if not cv2.imwrite(str(out_dir / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params):
            raise OSError(f"could not write image {out_dir / name}")
        if not len(labels):
            rows.append([name, "", "", "", "", ""])
        for box, label in zip(boxes * size, labels.tolist()):
            rows.append([name, *(np.format_float_positional(v, trim="-") for v in box), SHAPE_CLASSES[label - 1]])

    csv_path = out_dir / "annotations.csv"
    with open(csv_path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(ANNOTATION_COLUMNS)
        writer.writerows(rows)
    write_class_list(SHAPE_CLASSES, out_dir / "classes.txt")
    return csv_path
