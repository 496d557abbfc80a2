"""The demo (``make demo``): each model on what it was made for, and one summary picture.

:func:`ssd_keras.models.resolve_model` chooses the model. The embedded shapes model (a thin
SSD300 trained on synthetic scenes, shipped in ``assets/``; the normal case offline) runs on
held-out synthetic scenes, drawn beside their ground truth, with its mAP on more such scenes. The
ported VOC SSD300 (``weights_SSD300.hdf5``, given or found) runs on a photograph that ships with
matplotlib. Neither runs on the other's images: shapes detected on a photograph mean nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np

from .models import DEFAULT_WEIGHTS_NAME, DEMO_CONFIG, DEMO_WEIGHTS, find_default_weights, load_demo_model

__all__ = ["DEMO_WEIGHTS", "DEMO_CONFIG", "DEMO_SEED", "DRAW_THRESHOLD", "VOC_HINT", "load_demo_model",
           "find_default_weights", "run_demo", "sample_photo_path", "sample_photos", "demo_scenes",
           "runs_on_scenes", "truth_rows", "shapes_map"]

DEMO_SEED = 20261124  # scenes of this seed were never used in training or validation
DRAW_THRESHOLD = 0.5
VOC_HINT = (f"With the VOC weights ({DEFAULT_WEIGHTS_NAME}, see weights/README.md) the demo runs the "
            f"ported VOC SSD300 on photographs instead.")
SCENE_PANEL = 256
"""Height (pixels) of a scene's panels in the summary: two scenes (six panels) to a row."""
PHOTO_PANEL = 400
"""Height (pixels) of a photograph's panels in the summary."""
SUMMARY_WIDTH = 1600
"""The summary's widest row (pixels): as many images to a row as fit."""
CAPTION_STRIP = 22
"""Height (pixels) of the caption strip above each panel."""
CAPTION_FONT = 0.45
PANEL_GAP = 3
"""Black pixels between an image's panels in the summary."""
IMAGE_GAP = 16
"""Black pixels after an image's last panel, between images in the summary."""
STRIP_COLOR = (32, 32, 32)


def sample_photo_path() -> str:
    """A real photograph that ships with matplotlib (Grace Hopper)."""
    import matplotlib.cbook

    return str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def sample_photos() -> list[tuple[str, np.ndarray]]:
    """``(name, RGB image)`` of the photographs the VOC model is shown (offline: matplotlib's)."""
    from .image import load_image

    return [("grace_hopper", load_image(sample_photo_path()))]


def truth_rows(boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Ground truth as detection rows ``(n, 6)`` (confidence 1), the layout of ``detect``'s."""
    from . import layout

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    rows = np.zeros((len(boxes), layout.DETECTION_COLUMNS))
    rows[:, layout.LABEL] = np.asarray(labels).reshape(-1)
    rows[:, layout.CONFIDENCE] = 1.0
    rows[:, layout.BOX] = boxes
    return rows


def demo_scenes(count: int, seed: int = DEMO_SEED + 1) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, image, truth rows)`` of ``count`` held-out synthetic scenes (scene ``i`` of ``seed``)."""
    from .data.synthetic import make_scene

    scenes = []
    for i in range(count):
        image, boxes, labels = make_scene(np.random.default_rng([seed, i]))
        scenes.append((f"scene_{i}", image, truth_rows(boxes, labels)))
    return scenes


def runs_on_scenes(class_names: Sequence[str]) -> bool:
    """True for a shapes model (the synthetic scenes' classes): the demo shows it scenes, not photographs."""
    from .data.synthetic import SHAPE_CLASSES

    return [str(name) for name in class_names] == list(SHAPE_CLASSES)


def shapes_map(model: keras.Model, count: int = 100, seed: int = DEMO_SEED,
               batch_size: int = 8) -> dict:
    """VOC mAP@0.5 (area method) of a shapes model on ``count`` fresh scenes of ``seed``."""
    from . import layout
    from .data.synthetic import make_scene
    from .evaluation import evaluate_detections
    from .ssd import detect

    scenes = [make_scene(np.random.default_rng([seed, i])) for i in range(count)]
    detections = detect(model, [s[0] for s in scenes], batch_size=batch_size)
    annotations = [{"boxes": boxes, "labels": labels} for _, boxes, labels in scenes]
    return evaluate_detections(detections, annotations, layout.num_classes_of(model))


# --------------------------------------------------------------------------- #
# Pictures
# --------------------------------------------------------------------------- #
def _draw_truth(image: np.ndarray, rows: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """The ground-truth boxes, named (no score), in the colours of their classes' detections."""
    from . import layout
    from .visualization import class_colors, draw_box

    colors = class_colors(len(class_names))
    picture = image
    for row in rows:
        label = int(row[layout.LABEL])
        picture = draw_box(picture, row[layout.BOX], class_names[label - 1], colors[label - 1])
    return picture


def _pictures(image: np.ndarray, rows: np.ndarray, truth: np.ndarray | None, explained: dict | None,
              class_names: Sequence[str]) -> dict[str, np.ndarray | None]:
    """One image's pictures at its own size: detections, ground truth, Grad-CAM overlay."""
    from . import layout
    from .visualization import draw_detections, overlay

    pictures: dict[str, np.ndarray | None] = {
        "detections": draw_detections(image, rows, class_names, DRAW_THRESHOLD),
        "truth": None if truth is None else _draw_truth(image, truth, class_names),
        "gradcam": None}
    if explained is not None:
        pictures["gradcam"] = overlay(image, explained["map"], box=explained["detection"][layout.BOX],
                                      label=explained["label"])  # overlay's white box
    return pictures


def _captioned(picture: np.ndarray, caption: str) -> np.ndarray:
    """The picture under a dark strip that holds ``caption``."""
    from .visualization import draw_box

    strip = np.empty((CAPTION_STRIP, picture.shape[1], 3), dtype=np.uint8)
    strip[:] = STRIP_COLOR
    canvas = np.concatenate([strip, picture], axis=0)
    # the strip's own box, in the strip's colour: only the caption shows
    return draw_box(canvas, [0.0, 0.0, 1.0, (CAPTION_STRIP - 1) / canvas.shape[0]], caption, STRIP_COLOR,
                    thickness=1, font_scale=CAPTION_FONT)


def _panels(name: str, image: np.ndarray, rows: np.ndarray, truth: np.ndarray | None,
            explained: dict | None, class_names: Sequence[str], height: int) -> list[np.ndarray]:
    """The summary's captioned panels of one image, drawn at the panel size (crisp labels)."""
    import cv2

    from . import layout

    width = max(1, round(image.shape[1] * height / image.shape[0]))
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    pictures = _pictures(small, rows, truth, explained, class_names)
    drawn = int(np.sum(np.asarray(rows)[:, layout.CONFIDENCE] >= DRAW_THRESHOLD)) if len(rows) else 0
    panels = [_captioned(pictures["detections"], f"{name}: {drawn} detected (score >= {DRAW_THRESHOLD})")]
    if pictures["truth"] is not None:
        panels.append(_captioned(pictures["truth"], f"{name}: ground truth ({len(truth)})"))
    if pictures["gradcam"] is not None:
        panels.append(_captioned(pictures["gradcam"], f"Grad-CAM of {explained['label']}"))
    else:
        panels.append(_captioned(small, "Grad-CAM: no detection"))
    return panels


def _summary(panels: list[list[np.ndarray]], height: int) -> np.ndarray:
    """All images' panels in one grid: each image's panels side by side in a strip, as many
    strips to a row as fit in :data:`SUMMARY_WIDTH`."""
    from .visualization import tile

    strips = []
    for image_panels in panels:
        gaps = [PANEL_GAP] * (len(image_panels) - 1) + [IMAGE_GAP]
        strips.append(np.concatenate([np.pad(panel, ((0, 0), (0, gap), (0, 0)))
                                      for panel, gap in zip(image_panels, gaps)], axis=1))
    widest = max(strip.shape[1] for strip in strips)
    per_row = max(1, min(len(strips), (SUMMARY_WIDTH + IMAGE_GAP) // widest))
    return tile(strips, height=height + CAPTION_STRIP, columns=per_row)[:, :-IMAGE_GAP]


# --------------------------------------------------------------------------- #
# The demo
# --------------------------------------------------------------------------- #
def run_demo(out_dir: str | os.PathLike = "demo_output", weights: str | os.PathLike | None = None,
             num_scenes: int = 4, eval_scenes: int = 100) -> dict[str, Any]:
    """Detects and explains objects with the model :func:`ssd_keras.models.resolve_model` chooses,
    on the images it was made for, and writes the pictures.

    A shapes model (the embedded one, when no VOC weights are given or found) runs on
    ``num_scenes`` held-out synthetic scenes, drawn beside their ground truth, and is scored
    (mAP@0.5) on ``eval_scenes`` more. Any other model (the VOC SSD300 of ``weights``, or of
    :func:`find_default_weights`) runs on the sample photograph(s), which have no ground truth.

    Writes ``<name>.png`` (detections of score >= :data:`DRAW_THRESHOLD`), ``<name>_truth.png``
    (scenes), ``<name>_gradcam.png`` (Grad-CAM of the top detection) per image and
    ``summary.png``, all of them in one grid, into ``out_dir``.

    Returns:
        ``{"model": description, "class_names", "images": [{"name", "detections", "truth",
        "picture", "truth_picture", "gradcam"}], "mAP": float or None, "summary": path}``;
        ``detections`` are ``detect``'s rows with the prior index, ``truth`` the ground truth
        as rows ``[label, 1, xmin, ymin, xmax, ymax]`` (None for photographs); pictures are PNG
        paths in ``out_dir`` (None when not drawn).
    """
    from . import models
    from .gradcam import explain_detections
    from .image import preprocess_input, resize_image
    from .ssd import detect
    from .visualization import save_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, class_names, description = models.resolve_model(weights)
    scenes = runs_on_scenes(class_names)
    images = demo_scenes(num_scenes) if scenes else [(name, photo, None) for name, photo in sample_photos()]
    panel_height = SCENE_PANEL if scenes else PHOTO_PANEL

    detections = detect(model, [image for _, image, _ in images], return_indices=True)
    results, panels = [], []
    for (name, image, truth), rows in zip(images, detections):
        explained = None
        if len(rows):
            x = preprocess_input(resize_image(image, model.input_shape[1:3]))
            explained = explain_detections(model, x, rows, class_names, top=1)[0]
        pictures = _pictures(image, rows, truth, explained, class_names)
        entry = {"name": name, "detections": rows, "truth": truth, "picture": str(out / f"{name}.png"),
                 "truth_picture": None, "gradcam": None}
        save_image(entry["picture"], pictures["detections"])
        for key, picture_key, suffix in (("truth", "truth_picture", "_truth"), ("gradcam", "gradcam", "_gradcam")):
            if pictures[key] is not None:
                entry[picture_key] = str(out / f"{name}{suffix}.png")
                save_image(entry[picture_key], pictures[key])
        results.append(entry)
        panels.append(_panels(name, image, rows, truth, explained, class_names, panel_height))
    summary = out / "summary.png"
    save_image(summary, _summary(panels, panel_height))

    mean_ap = None
    if scenes and eval_scenes:
        mean_ap = float(shapes_map(model, eval_scenes)["mAP"])
    return {"model": description, "class_names": list(class_names), "images": results, "mAP": mean_ap,
            "summary": str(summary)}
