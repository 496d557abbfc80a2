"""Box maths used everywhere: IoU, the SSD box decoder, pixels <-> normalised corners.

Boxes are corners ``[xmin, ymin, xmax, ymax]``; inside the library they are normalised to the
image (``[0, 1]``), and pixels appear only at the edges (reading annotations, drawing, the CLI's
CSVs), through :func:`to_pixels` and :func:`to_normalized`. This module imports NumPy only;
:func:`decode` also runs on Keras tensors (``xp=keras.ops``).

The encoder lives in :class:`ssd_keras.ssd_utils.BBoxUtility`, which keeps the priors' centres and
sizes laid out for it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["iou_matrix", "iou_with_columns", "decode", "to_pixels", "to_normalized", "scale_factors",
           "clip_boxes"]


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``boxes_a`` with every box of ``boxes_b``.

    Args:
        boxes_a: ``(n, 4)`` corners (extra columns are ignored).
        boxes_b: ``(m, 4)`` corners (extra columns are ignored).

    Returns:
        ``(n, m)`` float64 IoU in [0, 1] (0 where the union is empty).
    """
    b = np.asarray(boxes_b, dtype=np.float64)
    return iou_with_columns(boxes_a, np.ascontiguousarray(b[:, :4].T))


def iou_with_columns(boxes: np.ndarray, columns: np.ndarray, area: np.ndarray | None = None) -> np.ndarray:
    """IoU of ``boxes`` ``(n, 4)`` with boxes given as corner columns ``(4, m)`` and, when
    known, their areas ``(m,)`` all positive: the layout that makes the priors' side fast."""
    a = np.asarray(boxes, dtype=np.float64)
    x1, y1, x2, y2 = columns
    width = np.minimum(a[:, 2, None], x2)
    width -= np.maximum(a[:, 0, None], x1)
    height = np.minimum(a[:, 3, None], y2)
    height -= np.maximum(a[:, 1, None], y1)
    np.maximum(width, 0.0, out=width)
    np.maximum(height, 0.0, out=height)
    inter = width
    inter *= height
    union = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None] + (
        (x2 - x1) * (y2 - y1) if area is None else area)
    union -= inter
    if area is not None and (union > 0).all():
        inter /= union
        return inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def decode(loc, prior_corners, variances, xp=np):
    """The SSD box decoder, written once for NumPy (``xp=np``) and Keras tensors
    (``xp=keras.ops``): ``centre = loc_xy * prior_wh * var_xy + prior_centre``,
    ``wh = exp(loc_wh * var_wh) * prior_wh``, corners clipped to [0, 1]. The y-centre uses the
    prior's height (the original port used its width: a defect, fixed here)."""
    prior_wh = prior_corners[..., 2:4] - prior_corners[..., :2]
    prior_center = 0.5 * (prior_corners[..., 2:4] + prior_corners[..., :2])
    center = loc[..., :2] * prior_wh * variances[..., :2] + prior_center
    half_wh = 0.5 * xp.exp(loc[..., 2:4] * variances[..., 2:4]) * prior_wh
    return xp.clip(xp.concatenate([center - half_wh, center + half_wh], axis=-1), 0.0, 1.0)


def scale_factors(width: float, height: float, dtype=np.float64) -> np.ndarray:
    """``[width, height, width, height]``: multiplies normalised corners into pixels.

    Raises:
        ValueError: a size is not positive.
    """
    if not (width > 0 and height > 0):
        raise ValueError(f"width and height must be > 0, got width={width}, height={height}")
    return np.array([width, height, width, height], dtype=dtype)


def _checked(boxes: np.ndarray, name: str, dtype) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=dtype)
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{name}: boxes must have shape (n, 4) [xmin, ymin, xmax, ymax], got shape {boxes.shape}")
    return boxes


def to_pixels(boxes: np.ndarray, width: float, height: float, dtype=np.float64) -> np.ndarray:
    """Normalised corners to pixel corners.

    Args:
        boxes: ``(n, 4)`` (or any ``(..., 4)``) normalised ``[xmin, ymin, xmax, ymax]``.
        width: Image width in pixels.
        height: Image height in pixels.
        dtype: of the result (float64 by default).

    Returns:
        An array of the same shape: ``[xmin * W, ymin * H, xmax * W, ymax * H]``. Not rounded,
        not clipped.

    Raises:
        ValueError: If the last axis is not 4 or a size is not positive.
    """
    return _checked(boxes, "to_pixels", dtype) * scale_factors(width, height, dtype)


def to_normalized(boxes: np.ndarray, width: float, height: float, dtype=np.float64) -> np.ndarray:
    """Pixel corners to normalised corners (inverse of :func:`to_pixels`).

    Args:
        boxes: ``(n, 4)`` (or any ``(..., 4)``) pixel ``[xmin, ymin, xmax, ymax]``.
        width: Image width in pixels.
        height: Image height in pixels.
        dtype: of the result (float64 by default).

    Returns:
        An array of the same shape, ``[xmin / W, ymin / H, xmax / W, ymax / H]``. Not clipped.

    Raises:
        ValueError: If the last axis is not 4 or a size is not positive.
    """
    return _checked(boxes, "to_normalized", dtype) / scale_factors(width, height, dtype)


def clip_boxes(boxes: np.ndarray, width: float = 1.0, height: float = 1.0) -> np.ndarray:
    """Corners clipped to ``[0, width] x [0, height]`` (``[0, 1]`` for normalised boxes), a new
    float array of the same shape."""
    boxes = np.asarray(boxes)
    if not np.issubdtype(boxes.dtype, np.floating):
        boxes = boxes.astype(np.float64)
    return np.clip(boxes, 0.0, scale_factors(width, height, boxes.dtype))
