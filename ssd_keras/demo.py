"""The embedded default: a small SSD300 trained on the project's synthetic shapes, and the demo.

``weights/ssd300_shapes.weights.h5`` (with ``weights/ssd300_shapes.json``, the training run's
``config.json``) is an ``SSD300`` at a small width multiplier trained by
``python -m ssd_keras train`` on generated scenes (``weights/README.md`` has the commands). It
needs no download, so the demo, the notebooks and the CLIs work offline on a fresh clone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np

__all__ = ["DEMO_WEIGHTS", "DEMO_CONFIG", "DEMO_SEED", "load_demo_model", "run_demo",
           "sample_photo_path", "shapes_map"]

from .models import DEMO_CONFIG, DEMO_WEIGHTS, find_default_weights, load_demo_model  # noqa: E402,F401
DEMO_SEED = 20261124  # scenes of this seed were never used in training or validation
DRAW_THRESHOLD = 0.5


def sample_photo_path() -> str:
    """A real photograph that ships with matplotlib (Grace Hopper)."""
    import matplotlib.cbook

    return str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def shapes_map(model: keras.Model, count: int = 100, seed: int = DEMO_SEED,
               batch_size: int = 8) -> dict:
    """VOC mAP@0.5 (area method) of a shapes model on ``count`` fresh scenes of ``seed``."""
    from .data.synthetic import make_scene
    from .evaluation import evaluate_detections
    from .ssd import detect

    scenes = [make_scene(np.random.default_rng([seed, i])) for i in range(count)]
    detections = detect(model, [s[0] for s in scenes], batch_size=batch_size)
    annotations = [{"boxes": boxes, "labels": labels} for _, boxes, labels in scenes]
    return evaluate_detections(detections, annotations, model.output_shape[-1] - 12)


def run_demo(out_dir: str | os.PathLike = "demo_output", weights: str | os.PathLike | None = None,
             num_scenes: int = 4, eval_scenes: int = 100) -> dict:
    """Detects and explains objects in a few images and writes the pictures.

    With VOC weights (``weights``, or ``weights/weights_SSD300.hdf5`` when present) the model is
    the ported VOC SSD300 on the photograph; otherwise the embedded shapes model on
    ``num_scenes`` held-out scenes and the photograph, and its mAP on ``eval_scenes`` more.

    Returns:
        ``{"model": description, "class_names", "images": [{"name", "detections",
        "picture", "gradcam"}], "mAP": float or None}``; pictures are PNG paths in ``out_dir``.
    """
    from .data.synthetic import make_scene
    from .gradcam import explain_detections, overlay
    from .image import load_image, preprocess_input, resize_image
    from .ssd import SSD300, VOC_CLASSES, detect
    from .visualization import draw_detections, save_image
    from .weights import load_weights

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    voc_weights = Path(weights) if weights else find_default_weights()
    photo = ("grace_hopper", load_image(sample_photo_path()))
    if voc_weights is not None:
        model = SSD300((300, 300, 3), num_classes=len(VOC_CLASSES) + 1)
        load_weights(model, voc_weights)
        class_names, images = list(VOC_CLASSES), [photo]
        description = f"SSD300 with the VOC weights {voc_weights}"
    else:
        model, class_names = load_demo_model()
        images = [(f"scene_{i}", make_scene(np.random.default_rng([DEMO_SEED + 1, i]))[0])
                  for i in range(num_scenes)] + [photo]
        description = f"the embedded shapes model {DEMO_WEIGHTS.name} (no VOC weights found)"

    detections = detect(model, [image for _, image in images], return_indices=True)
    results = []
    for (name, image), rows in zip(images, detections):
        picture = out / f"{name}.png"
        save_image(picture, draw_detections(image, rows[:, :6], class_names, DRAW_THRESHOLD))
        entry = {"name": name, "detections": rows, "picture": str(picture), "gradcam": None}
        if len(rows):
            x = preprocess_input(resize_image(image, model.input_shape[1:3]))
            heatmap = explain_detections(model, x, rows[:1], class_names, top=1)[0]["map"]
            label, score = int(rows[0, 0]), float(rows[0, 1])
            gradcam = out / f"{name}_gradcam.png"
            save_image(gradcam, overlay(image, heatmap, box=rows[0, 2:6],
                                        label=f"{class_names[label - 1]} {score:.2f}"))
            entry["gradcam"] = str(gradcam)
        results.append(entry)
    mean_ap = None
    if voc_weights is None and eval_scenes:
        mean_ap = float(shapes_map(model, eval_scenes)["mAP"])
    return {"model": description, "class_names": class_names, "images": results, "mAP": mean_ap}
