"""The packed layouts of SSD's tensors, spelled out here and nowhere else.

**Predictions and training targets** share one layout, ``(batch, num_priors, 4 + num_classes + 8)``:

========================  ==========================================================
columns                   meaning
========================  ==========================================================
``0:4`` (:data:`LOC`)     location offsets of the box against its prior (encoded)
``4:4 + num_classes``     class confidences (softmax); column 4 is the background
``-8:-4`` (:data:`PRIORS`)  the prior's corners ``[xmin, ymin, xmax, ymax]``
``-4:`` (:data:`VARIANCES`)  the prior's variances ``[0.1, 0.1, 0.2, 0.2]``
========================  ==========================================================

In targets (``BBoxUtility.assign_boxes``), the class columns are one-hot and column
:data:`POSITIVE_COLUMN` (the first prior column, unused by the loss otherwise) is 1 for priors
assigned to a ground-truth box.

**Detection rows** (``BBoxUtility.detection_out``, ``DetectionOutput``, ``detect``) are
``[label, confidence, xmin, ymin, xmax, ymax]`` with normalised corners and ``label >= 1``
(0 is background), and a 7th column with the prior index when asked for
(``return_indices=True``).

Slicing works the same on NumPy arrays and Keras / TensorFlow tensors. This module imports
NumPy only.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LOC", "CONF", "PRIORS", "VARIANCES", "BACKGROUND_COLUMN", "POSITIVE_COLUMN", "EXTRA_COLUMNS",
    "LABEL", "CONFIDENCE", "BOX", "PRIOR_INDEX", "DETECTION_COLUMNS", "DETECTION_COLUMNS_WITH_INDEX",
    "prediction_columns", "class_count", "num_classes_of", "split_predictions", "confidences",
]

LOC = slice(0, 4)
"""Location offsets, the first 4 columns."""
CONF = slice(4, -8)
"""Class confidences, background first (whatever the class count)."""
PRIORS = slice(-8, -4)
"""Prior corners."""
VARIANCES = slice(-4, None)
"""Prior variances."""
BACKGROUND_COLUMN = 4
"""Column of the background class (label 0)."""
POSITIVE_COLUMN = -8
"""In targets: 1 for priors assigned to a ground-truth box, else 0."""
EXTRA_COLUMNS = 4 + 8
"""Columns that are not class confidences: offsets before them, prior corners and variances after."""

LABEL = 0
"""Detection row column of the class label (1-based; 0 is background)."""
CONFIDENCE = 1
"""Detection row column of the confidence."""
BOX = slice(2, 6)
"""Detection row columns of the normalised corners."""
PRIOR_INDEX = 6
"""Detection row column of the prior index (``return_indices=True``)."""
DETECTION_COLUMNS = 6
"""Columns of a detection row without the prior index."""
DETECTION_COLUMNS_WITH_INDEX = 7
"""Columns of a detection row with the prior index."""


def prediction_columns(num_classes: int) -> int:
    """Columns of predictions and targets for ``num_classes`` (background included)."""
    return int(num_classes) + EXTRA_COLUMNS


def class_count(columns: int) -> int:
    """The class count (background included) of predictions with ``columns`` columns."""
    return int(columns) - EXTRA_COLUMNS


def num_classes_of(model: Any) -> int:
    """The class count, background included, of an SSD model (from its output shape).

    Raises:
        ValueError: the model's output is not ``(batch, num_priors, 4 + num_classes + 8)``
            with at least two classes.
    """
    shape = tuple(model.output_shape)
    if len(shape) != 3 or shape[-1] is None or class_count(shape[-1]) < 2:
        raise ValueError(f"model {getattr(model, 'name', '?')!r} has output shape {shape}: expected "
                         f"SSD predictions (batch, num_priors, 4 + num_classes + 8)")
    return class_count(shape[-1])


def split_predictions(predictions: Any) -> tuple[Any, Any, Any, Any]:
    """``(loc, conf, priors, variances)`` views of predictions ``(..., 4 + num_classes + 8)``."""
    return (predictions[..., LOC], predictions[..., CONF], predictions[..., PRIORS],
            predictions[..., VARIANCES])


def confidences(predictions: Any, num_classes: int) -> Any:
    """The class columns ``(..., num_classes)`` when the class count is known (static shapes)."""
    return predictions[..., BACKGROUND_COLUMN:BACKGROUND_COLUMN + int(num_classes)]
