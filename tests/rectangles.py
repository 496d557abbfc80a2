"""A tiny annotation-CSV dataset for tests: red and blue rectangles on dark noise."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

CLASSES = ["blue", "red"]
COLORS = {"blue": (0, 0, 255), "red": (255, 0, 0)}  # RGB


def write_rectangles(root: Path, count: int, size=(120, 160), boxes_per_image=(1, 2),
                     empty=(), suffix=".png", seed=0) -> Path:
    """Writes ``count`` images of ``size`` (height, width) under ``root/img`` with
    ``boxes_per_image[i % len]`` rectangles each (none for the indices in ``empty``, which get an
    empty-box row), alternating classes, and ``root/train.csv``; returns the CSV path."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    height, width = size
    rows = ["image_path,xmin,ymin,xmax,ymax,class_name"]
    for i in range(count):
        image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        name = f"img/{i}{suffix}"
        if i in empty:
            rows.append(f"{name},,,,,")
        for k in range(0 if i in empty else boxes_per_image[i % len(boxes_per_image)]):
            x0, y0 = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 60))
            x1, y1 = x0 + int(rng.integers(20, 60)), y0 + int(rng.integers(20, 60))
            label = CLASSES[(i + k) % 2]
            cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), COLORS[label], -1)
            rows.append(f"{name},{x0},{y0},{x1},{y1},{label}")
        cv2.imwrite(str(root / name), image[..., ::-1])
    csv_path = root / "train.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    return csv_path
