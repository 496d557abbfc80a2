"""Explaining MarkNet's decisions: Grad-CAM and Guided Grad-CAM maps of any class.

:func:`explain_marks` explains the logits (the ``"logits"`` layer before the softmax) with
:class:`ssd_keras.gradcam.GradCAM` and :func:`ssd_keras.gradcam.guided_backprop`, for the
predicted class and any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from ..gradcam import GradCAM, guided_backprop
from ..image import resize_image
from .model import marknet_preprocess

__all__ = ["explain_marks"]


def explain_marks(model: keras.Model, image: np.ndarray, class_indices: Sequence[int] = (),
                  layer_name: str | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Grad-CAM and Guided Grad-CAM of one image for the predicted class and any others.

    Args:
        model: MarkNet (a classifier ending in a softmax layer: the logits are explained).
        image: RGB uint8 ``(H, W, 3)``, any size: resized to the model's input and
            :func:`marknet_preprocess`-ed here.
        class_indices: classes to explain besides the predicted one (0-based).
        layer_name: Grad-CAM's layer (default: the last with a 4-D output, see
            :func:`~ssd_keras.marknet.MarkNet`).

    Returns:
        ``(probabilities, explanations)``: ``(K,)`` softmax scores, and one dict per explained
        class, the predicted one first, then ``class_indices`` in order without repeats:
        ``{"class_index": int, "probability": float, "gradcam": (h, w) float32 in [0, 1],
        "guided_gradcam": (h, w, 3) float32}`` at the model's input size ``(h, w)``.

    Raises:
        ValueError: a class index out of range, or a bad image.
    """
    size = tuple(int(v) for v in model.input_shape[1:3])
    x = marknet_preprocess(resize_image(np.asarray(image), size))[np.newaxis]
    probabilities = np.asarray(model(x, training=False))[0]
    classes = list(dict.fromkeys([int(probabilities.argmax()), *(int(c) for c in class_indices)]))
    batch = np.repeat(x, len(classes), axis=0)
    maps = GradCAM(model, layer_name)(batch, classes)
    guided = guided_backprop(model, batch, classes) * maps[..., np.newaxis]
    return probabilities, [
        {"class_index": c, "probability": float(probabilities[c]), "gradcam": heat, "guided_gradcam": g}
        for c, heat, g in zip(classes, maps, guided)
    ]
