"""MarkNet: the seed's mark classifier (logos and stamps on cups and plates), in Keras 3.

The package, by module:

- :mod:`~ssd_keras.marknet.model`: :func:`MarkNet`, a compact convolutional classifier (or a
  ``keras.applications`` backbone, VGG16 or MobileNetV2) ending in a ``"logits"`` layer and a
  separate softmax ``"predictions"`` layer, so that :class:`ssd_keras.gradcam.GradCAM` explains
  the logits; :func:`marknet_preprocess`, its input transform (RGB scaled to [-1, 1], whatever
  the backbone).
- :mod:`~ssd_keras.marknet.data`: the classification CSV (``image,label``), read and validated
  by :func:`read_classification_csv`, and :class:`ClassificationGenerator`, augmented batches
  for ``model.fit``.
- :mod:`~ssd_keras.marknet.marks`: seeded synthetic marks on cups and plates
  (:func:`make_marks_dataset`).
- :mod:`~ssd_keras.marknet.training`: :func:`train_marknet` writes a run folder
  (:class:`ssd_keras.runs.RunFolder`)::

      config.json                       classes, input shape, backbone, filters: what rebuilds the model
      history.csv                       loss and accuracy (and val_*) per epoch
      loss.png                          the loss curves
      checkpoints/epoch_NNN.weights.h5  weights, optimizer state and epoch after each epoch
      final.weights.h5                  weights after the last epoch

  and :func:`load_marknet` rebuilds the model from weights and the ``config.json`` beside them.
- :mod:`~ssd_keras.marknet.metrics`: :func:`evaluate_marknet` gives accuracy, per-class
  precision and recall and the confusion matrix.
- :mod:`~ssd_keras.marknet.explain`: :func:`explain_marks` gives Grad-CAM and Guided Grad-CAM
  maps of the predicted class and any other.

Classification labels are 0-based (label ``i`` is ``class_names[i]``); there is no background
class. The names below are loaded lazily: ``import ssd_keras.marknet`` imports neither TensorFlow
nor Keras; a name loads its module on first use.

Example::

    model = MarkNet(num_classes=4, input_shape=(96, 96, 3))
    x = marknet_preprocess(resize_image(load_image("cup.jpg"), (96, 96)))[None]
    probabilities = model.predict(x)[0]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# public name -> module (inside this package) that defines it
_EXPORTS = {
    "BACKBONES": ".model",
    "DEFAULT_FILTERS": ".model",
    "MarkNet": ".model",
    "marknet_preprocess": ".model",
    "CONFIG_FILENAME": ".training",
    "MarkNetConfig": ".training",
    "find_config": ".training",
    "load_marknet": ".training",
    "train_marknet": ".training",
    "classification_metrics": ".metrics",
    "evaluate_marknet": ".metrics",
    "format_classification_report": ".metrics",
    "plot_confusion_matrix": ".metrics",
    "explain_marks": ".explain",
    "ClassificationAugmentation": ".data",
    "ClassificationGenerator": ".data",
    "augment_classification": ".data",
    "read_classification_csv": ".data",
    "BOXES_CSV": ".marks",
    "MARKS_CSV": ".marks",
    "MARK_CLASSES": ".marks",
    "make_mark_image": ".marks",
    "make_marks_dataset": ".marks",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    # ruff: noqa: F401
    from .data import (ClassificationAugmentation, ClassificationGenerator, augment_classification,
                       read_classification_csv)
    from .explain import explain_marks
    from .marks import BOXES_CSV, MARK_CLASSES, MARKS_CSV, make_mark_image, make_marks_dataset
    from .metrics import classification_metrics, evaluate_marknet, format_classification_report, plot_confusion_matrix
    from .model import BACKBONES, DEFAULT_FILTERS, MarkNet, marknet_preprocess
    from .training import CONFIG_FILENAME, MarkNetConfig, find_config, load_marknet, train_marknet


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, __all__)
