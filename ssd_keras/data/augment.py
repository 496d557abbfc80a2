"""The training augmentations of the original port, fast enough to feed a GPU from two cores.

Order, as in the original ``Generator``: random-sized crop, resize to the network input,
saturation / brightness / contrast jitter in random order, PCA lighting noise, horizontal flip,
vertical flip. Photometric steps work on float32 RGB in [0, 255] and clip after each step like
the original; each colour jitter is one affine colour map (``cv2.transform``), and the lighting
covariance comes from a few channel dot products instead of ``np.cov`` (same values, 10x less
time).

Differences from the original, on purpose: brightness uses its own range (the original used
the saturation range: a slip), and the vertical flip is off by default.

Boxes are normalised corners ``(n, 4)``; every function that drops boxes also returns the
indices of the kept ones, so that labels and other per-box arrays follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Augmentation", "augment", "random_sized_crop", "color_jitter", "pca_lighting",
           "horizontal_flip", "vertical_flip", "GRAY_WEIGHTS"]

GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114])  # RGB -> luma, as the original's grayscale


@dataclass(frozen=True)
class Augmentation:
    """Which augmentations run and how strongly (the original's defaults, vertical flip off).

    A ``*_var`` of 0 (or ``lighting_std`` 0, a probability 0, ``crop=False``) switches that step
    off. A jitter factor is drawn uniformly from ``[1 - var, 1 + var]``.

    Attributes:
        saturation_var: blend with the grayscale image.
        brightness_var: scale all channels.
        contrast_var: blend with the mean gray level.
        lighting_std: std of the PCA lighting noise (AlexNet style), in units of the colour
            covariance's eigenvalues.
        hflip_prob, vflip_prob: flip probabilities.
        crop: random-sized crop before resizing.
        crop_area_range: fraction of the image area kept by the crop.
        aspect_ratio_range: aspect ratios (width / height, either way round) of the crop.
    """

    saturation_var: float = 0.5
    brightness_var: float = 0.5
    contrast_var: float = 0.5
    lighting_std: float = 0.5
    hflip_prob: float = 0.5
    vflip_prob: float = 0.0
    crop: bool = True
    crop_area_range: tuple[float, float] = (0.75, 1.0)
    aspect_ratio_range: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)

    def __post_init__(self):
        for name in ("saturation_var", "brightness_var", "contrast_var"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("hflip_prob", "vflip_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        if self.lighting_std < 0:
            raise ValueError(f"lighting_std must be >= 0, got {self.lighting_std}")
        low, high = self.crop_area_range
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"crop_area_range must satisfy 0 < low <= high <= 1, "
                             f"got {self.crop_area_range}")
        low, high = self.aspect_ratio_range
        if not 0.0 < low <= high:
            raise ValueError(f"aspect_ratio_range must satisfy 0 < low <= high, "
                             f"got {self.aspect_ratio_range}")


DEFAULT_AUGMENTATION = Augmentation()
"""The original port's augmentations (the default of :func:`augment`)."""


def random_sized_crop(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
                      area_range=(0.75, 1.0), aspect_range=(3.0 / 4.0, 4.0 / 3.0)):
    """Crops a random window of the image, as the original.

    The window covers ``area_range`` of the image area with an aspect ratio from
    ``aspect_range`` (width and height swapped with probability 1/2), limited to the image.
    Boxes whose centres fall strictly inside the window are kept, re-expressed in the window
    and clipped to it.

    Args:
        image: ``(H, W, C)`` array.
        boxes: ``(n, 4)`` normalised corners.
        rng: random generator.

    Returns:
        ``(window, boxes, kept)``: a view of the image, ``(k, 4)`` boxes and the ``(k,)``
        indices of the kept input boxes.
    """
    img_h, img_w = image.shape[:2]
    area = rng.uniform(*area_range) * img_w * img_h
    ratio = rng.uniform(*aspect_range)
    w, h = np.round(np.sqrt(area * ratio)), np.round(np.sqrt(area / ratio))
    if rng.random() < 0.5:
        w, h = h, w
    w, h = int(max(1, min(w, img_w))), int(max(1, min(h, img_h)))
    x = int(rng.random() * (img_w - w))
    y = int(rng.random() * (img_h - h))
    x_rel, y_rel, w_rel, h_rel = x / img_w, y / img_h, w / img_w, h / img_h
    centers = 0.5 * (boxes[:, :2] + boxes[:, 2:4])
    kept = np.flatnonzero((centers[:, 0] > x_rel) & (centers[:, 0] < x_rel + w_rel)
                          & (centers[:, 1] > y_rel) & (centers[:, 1] < y_rel + h_rel))
    moved = (boxes[kept, :4] - [x_rel, y_rel, x_rel, y_rel]) / [w_rel, h_rel, w_rel, h_rel]
    return image[y:y + h, x:x + w], np.clip(moved, 0.0, 1.0), kept


def _jitter_matrix(kind: str, alpha: float, image: np.ndarray) -> np.ndarray:
    """The 3x4 affine colour map of one jitter step (``out = M[:, :3] @ rgb + M[:, 3]``)."""
    matrix = np.zeros((3, 4))
    if kind == "saturation":  # rgb * a + (1 - a) * gray(rgb)
        matrix[:, :3] = alpha * np.eye(3) + (1.0 - alpha) * GRAY_WEIGHTS[np.newaxis, :]
    elif kind == "brightness":  # rgb * a
        matrix[:, :3] = alpha * np.eye(3)
    else:  # contrast: rgb * a + (1 - a) * mean(gray(rgb))
        mean_gray = float(np.dot(cv2.mean(image)[:3], GRAY_WEIGHTS))
        matrix[:, :3] = alpha * np.eye(3)
        matrix[:, 3] = (1.0 - alpha) * mean_gray
    return matrix


def color_jitter(image: np.ndarray, rng: np.random.Generator, saturation_var: float = 0.5,
                 brightness_var: float = 0.5, contrast_var: float = 0.5) -> np.ndarray:
    """Saturation, brightness and contrast jitter in random order, clipping after each.

    Args:
        image: ``(H, W, 3)`` contiguous float32 RGB in [0, 255], modified in place.
        rng: random generator.
        saturation_var, brightness_var, contrast_var: factor ranges ``1 +- var`` (0: off).

    Returns:
        ``image``, changed in place, in [0, 255].
    """
    steps = [(kind, var) for kind, var in (("saturation", saturation_var),
                                           ("brightness", brightness_var),
                                           ("contrast", contrast_var)) if var]
    for k in rng.permutation(len(steps)):
        kind, var = steps[k]
        alpha = 1.0 - var + 2.0 * var * rng.random()
        cv2.transform(image, _jitter_matrix(kind, alpha, image).astype(np.float32), dst=image)
        np.clip(image, 0.0, 255.0, out=image)
    return image


def pca_lighting(image: np.ndarray, rng: np.random.Generator, std: float = 0.5) -> np.ndarray:
    """AlexNet-style lighting noise along the principal components of the image's colours.

    ``noise = eigvec @ (eigval * N(0, std)) * 255`` added to every pixel, with the covariance
    of the colours scaled to [0, 1] (the original's ``np.cov``, computed from channel dot
    products), then clipped to [0, 255].

    Args:
        image: ``(H, W, 3)`` float32 RGB in [0, 255], modified in place and returned.
        rng: random generator.
        std: noise standard deviation.
    """
    channels = [c.ravel() for c in cv2.split(image)]
    n = len(channels[0])
    mean = np.array(cv2.mean(image)[:3])
    gram = np.array([[np.dot(a, b) for b in channels] for a in channels], dtype=np.float64)
    cov = (gram - n * np.outer(mean, mean)) / ((n - 1) * 255.0 ** 2)
    eigval, eigvec = np.linalg.eigh(cov)
    noise = eigvec @ (eigval * rng.standard_normal(3) * std) * 255.0
    shift = np.hstack([np.eye(3), noise[:, np.newaxis]]).astype(np.float32)
    cv2.transform(image, shift, dst=image)  # a broadcast add over 3 channels is 10x slower
    np.clip(image, 0.0, 255.0, out=image)
    return image


def horizontal_flip(image: np.ndarray, boxes: np.ndarray):
    """Mirrors the image left-right (a view) and the boxes with it."""
    return image[:, ::-1], np.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0],
                                     boxes[:, 3]], axis=1).reshape(-1, 4)


def vertical_flip(image: np.ndarray, boxes: np.ndarray):
    """Mirrors the image top-bottom (a view) and the boxes with it."""
    return image[::-1], np.stack([boxes[:, 0], 1.0 - boxes[:, 3], boxes[:, 2],
                                  1.0 - boxes[:, 1]], axis=1).reshape(-1, 4)


def augment(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
            size: tuple[int, int], config: Augmentation | None = DEFAULT_AUGMENTATION):
    """One training example through the whole chain (or, with ``config=None``, resize only).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        boxes: ``(n, 4)`` normalised corners.
        rng: random generator (seed it per example for reproducible runs).
        size: ``(height, width)`` of the output.
        config: the augmentations; None for validation (resize only).

    Returns:
        ``(image, boxes, kept)``: ``(height, width, 3)`` float32 RGB in [0, 255], ``(k, 4)``
        boxes and the indices of the kept input boxes.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    kept = np.arange(len(boxes))
    if config is not None and config.crop:
        image, boxes, kept = random_sized_crop(image, boxes, rng, config.crop_area_range,
                                               config.aspect_ratio_range)
    height, width = size
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    image = image.astype(np.float32)
    if config is None:
        return image, boxes, kept
    image = color_jitter(image, rng, config.saturation_var, config.brightness_var,
                         config.contrast_var)
    if config.lighting_std:
        image = pca_lighting(image, rng, config.lighting_std)
    if config.hflip_prob and rng.random() < config.hflip_prob:
        image, boxes = horizontal_flip(image, boxes)
    if config.vflip_prob and rng.random() < config.vflip_prob:
        image, boxes = vertical_flip(image, boxes)
    return image, boxes, kept
