"""Scenes of tiny objects for the prior tests: small filled rectangles and ellipses (10-26 px by
default, aspect ratios 0.5-2) on a noisy background, with exact pixel boxes."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

CLASSES = ["ellipse", "rectangle"]


def tiny_boxes(rng: np.random.Generator, count: int, image_size: int = 300, sizes=(10.0, 26.0),
               ratios=(0.5, 2.0)) -> np.ndarray:
    """``count`` pixel boxes ``(count, 4)``: sizes ``sqrt(w * h)`` and aspect ratios ``w / h``
    log-uniform in the given ranges, anywhere inside an ``image_size`` square."""
    size = np.exp(rng.uniform(math.log(sizes[0]), math.log(sizes[1]), count))
    ratio = np.exp(rng.uniform(math.log(ratios[0]), math.log(ratios[1]), count))
    width, height = size * np.sqrt(ratio), size / np.sqrt(ratio)
    cx = rng.uniform(width / 2, image_size - width / 2)
    cy = rng.uniform(height / 2, image_size - height / 2)
    return np.stack([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], axis=1)


def tiny_scene(rng: np.random.Generator, image_size: int = 300, objects=(2, 6), sizes=(10.0, 26.0),
               ratios=(0.5, 2.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene: RGB uint8 image, integer pixel boxes ``(n, 4)`` that do not touch each other, labels
    ``(n,)`` in 1..2 (``CLASSES``)."""
    base = rng.integers(30, 110, 3)
    image = np.clip(base + rng.normal(0.0, 12.0, (image_size, image_size, 3)), 0, 255).astype(np.uint8)
    boxes, labels = [], []
    for _ in range(int(rng.integers(objects[0], objects[1] + 1)) * 4):
        if len(boxes) == objects[1] or (len(boxes) >= objects[0] and rng.uniform() < 0.3):
            break
        box = np.round(tiny_boxes(rng, 1, image_size, sizes, ratios)[0]).astype(int)
        if box[2] - box[0] < 3 or box[3] - box[1] < 3:
            continue
        if any(box[0] < b[2] + 2 and b[0] < box[2] + 2 and box[1] < b[3] + 2 and b[1] < box[3] + 2 for b in boxes):
            continue  # keep objects apart
        label = int(rng.integers(1, 3))
        color = tuple(int(c) for c in rng.integers(170, 256, 3))
        x0, y0, x1, y1 = (int(v) for v in box)
        if label == 1:
            cv2.ellipse(image, (((x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5), (x1 - x0, y1 - y0), 0.0), color, -1)
        else:
            cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), color, -1)
        boxes.append(box)
        labels.append(label)
    return image, np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(labels, dtype=np.int64)


def write_tiny_dataset(root: Path, count: int, seed: int = 0, image_size: int = 300, **scene) -> Path:
    """``count`` tiny scenes as PNGs under ``root/images`` and ``root/annotations.csv``; returns its path."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = ["image_path,xmin,ymin,xmax,ymax,class_name"]
    for index in range(count):
        image, boxes, labels = tiny_scene(np.random.default_rng([seed, index]), image_size, **scene)
        name = f"images/{index:04d}.png"
        cv2.imwrite(str(root / name), image[..., ::-1])
        rows += [f"{name},{x0:g},{y0:g},{x1:g},{y1:g},{CLASSES[label - 1]}"
                 for (x0, y0, x1, y1), label in zip(boxes, labels)]
    csv_path = root / "annotations.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    return csv_path
