"""ssd_keras: SSD300 in TensorFlow 2 / Keras 3, a faithful port of the Keras ``ssd_keras`` lineage.

The public API is re-exported here and loaded lazily: ``import ssd_keras`` is cheap and does not
import TensorFlow until a name that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module (inside this package) that defines it
_EXPORTS = {
    "SSD300": "ssd",
    "VOC_CLASSES": "ssd",
    "prior_boxes": "ssd",
    "detect": "ssd",
    "with_detection_output": "ssd",
    "Normalize": "ssd_layers",
    "PriorBox": "ssd_layers",
    "BBoxUtility": "ssd_utils",
    "MultiboxLoss": "ssd_training",
    "DetectionOutput": "ssd_utils",
    "load_weights": "weights",
    "evaluate_detections": "evaluation",
    "evaluate_model": "evaluation",
    "load_demo_model": "demo",
    "GradCAM": "gradcam",
    "guided_backprop": "gradcam",
    "guided_grad_cam": "gradcam",
    "explain_detections": "gradcam",
    "overlay": "gradcam",
    "MarkNet": "marknet",
    "marknet_preprocess": "marknet",
    "load_marknet": "marknet",
    "explain_marks": "marknet",
    "evaluate_marknet": "marknet",
    "LoadReport": "weights",
    "WeightsFileError": "weights",
    "load_image": "image",
    "preprocess_input": "image",
    "ImageLoadError": "image",
    "class_colors": "visualization",
    "draw_detections": "visualization",
    "plot_detections": "visualization",
    "overlay_heatmap": "visualization",
    "save_image": "visualization",
}

__all__ = [
    "BBoxUtility",
    "DetectionOutput",
    "GradCAM",
    "ImageLoadError",
    "LoadReport",
    "MarkNet",
    "MultiboxLoss",
    "Normalize",
    "PriorBox",
    "SSD300",
    "VOC_CLASSES",
    "WeightsFileError",
    "class_colors",
    "detect",
    "draw_detections",
    "evaluate_detections",
    "evaluate_marknet",
    "evaluate_model",
    "explain_marks",
    "explain_detections",
    "guided_backprop",
    "guided_grad_cam",
    "load_demo_model",
    "load_image",
    "load_marknet",
    "load_weights",
    "marknet_preprocess",
    "overlay",
    "overlay_heatmap",
    "plot_detections",
    "preprocess_input",
    "prior_boxes",
    "save_image",
    "with_detection_output",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    # ruff: noqa: F401
    from .demo import load_demo_model
    from .evaluation import evaluate_detections, evaluate_model
    from .gradcam import GradCAM, explain_detections, guided_backprop, guided_grad_cam, overlay
    from .image import ImageLoadError, load_image, preprocess_input
    from .marknet import MarkNet, evaluate_marknet, explain_marks, load_marknet, marknet_preprocess
    from .ssd import SSD300, VOC_CLASSES, detect, prior_boxes, with_detection_output
    from .ssd_layers import Normalize, PriorBox
    from .ssd_training import MultiboxLoss
    from .ssd_utils import BBoxUtility, DetectionOutput
    from .visualization import class_colors, draw_detections, overlay_heatmap, plot_detections, save_image
    from .weights import LoadReport, WeightsFileError, load_weights


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ssd_keras' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
