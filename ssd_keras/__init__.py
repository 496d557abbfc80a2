"""ssd_keras: SSD300 in TensorFlow 2 / Keras 3, a faithful port of the Keras ``ssd_keras`` lineage.

The public API is re-exported here and loaded lazily: ``import ssd_keras`` is cheap and does not
import TensorFlow until a name that needs it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module (inside this package) that defines it
_EXPORTS = {
    "SSD300": ".ssd",
    "VOC_CLASSES": ".data.classes",
    "prior_boxes": ".ssd",
    "detect": ".ssd",
    "with_detection_output": ".ssd",
    "export_model": ".export",
    "load_exported": ".exported",
    "Normalize": ".ssd_layers",
    "PriorBox": ".ssd_layers",
    "PriorConfig": ".priors",
    "BBoxUtility": ".ssd_utils",
    "MultiboxLoss": ".ssd_training",
    "DetectionOutput": ".ssd_layers",
    "load_weights": ".weights",
    "evaluate_detections": ".evaluation",
    "evaluate_model": ".evaluation",
    "load_demo_model": ".models",
    "resolve_model": ".models",
    "GradCAM": ".gradcam",
    "guided_backprop": ".gradcam",
    "guided_grad_cam": ".gradcam",
    "explain_detections": ".gradcam",
    "overlay": ".visualization",
    "MarkNet": ".marknet.model",
    "marknet_preprocess": ".marknet.model",
    "load_marknet": ".marknet.training",
    "explain_marks": ".marknet.explain",
    "evaluate_marknet": ".marknet.metrics",
    "LoadReport": ".weights",
    "WeightsFileError": ".weights",
    "load_image": ".image",
    "preprocess_input": ".image",
    "ImageLoadError": ".image",
    "class_colors": ".visualization",
    "draw_detections": ".visualization",
    "plot_detections": ".plots",
    "overlay_heatmap": ".visualization",
    "save_image": ".visualization",
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
    "PriorConfig",
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
    "export_model",
    "guided_backprop",
    "guided_grad_cam",
    "load_demo_model",
    "load_exported",
    "load_image",
    "load_marknet",
    "load_weights",
    "marknet_preprocess",
    "overlay",
    "overlay_heatmap",
    "plot_detections",
    "preprocess_input",
    "prior_boxes",
    "resolve_model",
    "save_image",
    "with_detection_output",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    # ruff: noqa: F401
    from .evaluation import evaluate_detections, evaluate_model
    from .gradcam import GradCAM, explain_detections, guided_backprop, guided_grad_cam
    from .image import ImageLoadError, load_image, preprocess_input
    from .marknet.explain import explain_marks
    from .marknet.metrics import evaluate_marknet
    from .marknet.model import MarkNet, marknet_preprocess
    from .marknet.training import load_marknet
    from .models import load_demo_model, resolve_model
    from .plots import plot_detections
    from .priors import PriorConfig
    from .data.classes import VOC_CLASSES
    from .ssd import SSD300, detect, prior_boxes, with_detection_output
    from .export import export_model
    from .exported import load_exported
    from .ssd_layers import DetectionOutput, Normalize, PriorBox
    from .ssd_training import MultiboxLoss
    from .ssd_utils import BBoxUtility
    from .visualization import class_colors, draw_detections, overlay, overlay_heatmap, save_image
    from .weights import LoadReport, WeightsFileError, load_weights


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, __all__)
