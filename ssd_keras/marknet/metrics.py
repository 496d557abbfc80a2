"""Scoring MarkNet: accuracy, per-class precision and recall, the confusion matrix, a text report.

:func:`evaluate_marknet` runs a classifier over a classification CSV and scores it with
:func:`classification_metrics`; :func:`format_classification_report` prints the result and
:func:`plot_confusion_matrix` (from :mod:`ssd_keras.plots`, re-exported here) draws it.
Classification labels are 0-based (label ``i`` is ``class_names[i]``); there is no background
class.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from ..plots import plot_confusion_matrix
from .data import ClassificationGenerator

__all__ = ["classification_metrics", "evaluate_marknet", "format_classification_report", "plot_confusion_matrix"]


def classification_metrics(labels: Any, predictions: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, confusion matrix, per-class precision and recall.

    Args:
        labels: ``(n,)`` true labels in ``[0, len(class_names))``.
        predictions: ``(n,)`` predicted labels, same range.
        class_names: the names of the labels.

    Returns:
        ``{"accuracy": float, "confusion": (K, K) int64 (row: true class, column: predicted),
        "precision": (K,), "recall": (K,) float64 (NaN for a class never predicted / without
        examples), "support": (K,) int64 examples per true class, "class_names": list,
        "num_images": int}``.

    Raises:
        ValueError: mismatched lengths, no example, or labels out of range.
    """
    labels, predictions = np.asarray(labels).reshape(-1), np.asarray(predictions).reshape(-1)
    count = len(class_names)
    if len(labels) != len(predictions) or not len(labels):
        raise ValueError(f"labels and predictions must be non-empty and of equal length, got {len(labels)} "
                         f"and {len(predictions)}")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.dtype.kind not in "iu" or values.min() < 0 or values.max() >= count:
            raise ValueError(f"{name} must be integers in [0, {count - 1}], got {values.dtype} in "
                             f"[{values.min()}, {values.max()}]")
    confusion = np.zeros((count, count), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    correct = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, correct / predicted, np.nan)
        recall = np.where(support > 0, correct / support, np.nan)
    return {"accuracy": float(correct.sum() / len(labels)), "confusion": confusion, "precision": precision,
            "recall": recall, "support": support, "class_names": list(class_names),
            "num_images": int(len(labels))}


def evaluate_marknet(model: keras.Model, csv_path: str | os.PathLike[str],
                     class_names: Sequence[str] | str | os.PathLike[str] | None = None, batch_size: int = 32,
                     verbose: int = 0) -> dict[str, Any]:
    """Runs a classifier over a classification CSV and scores it.

    Args:
        model: MarkNet (any classifier of :func:`~ssd_keras.marknet.marknet_preprocess`-ed inputs).
        csv_path: the classification CSV.
        class_names: the model's classes (list or file); default ``classes.txt`` beside the CSV.
            When both are there they must be the same list.
        batch_size: images per prediction batch.
        verbose: Keras ``predict`` verbosity.

    Returns:
        :func:`classification_metrics`'s dict plus ``"predictions"`` ``(n,)`` and
        ``"probabilities"`` ``(n, K)`` in CSV order, and ``"image_paths"``.

    Raises:
        ValueError: an invalid CSV (see :func:`ssd_keras.marknet.data.read_classification_csv`), or a
            model whose output does not have one score per class.
    """
    size = tuple(int(v) for v in model.input_shape[1:3])
    data = ClassificationGenerator(csv_path, batch_size, size, class_names, train=False)
    if model.output_shape[-1] != len(data.class_names):
        raise ValueError(f"model {model.name!r} scores {model.output_shape[-1]} classes but {csv_path} has "
                         f"{len(data.class_names)} ({', '.join(data.class_names)})")
    probabilities = np.asarray(model.predict(data, verbose=verbose))
    predictions = probabilities.argmax(axis=1)
    result = classification_metrics(data.labels, predictions, data.class_names)
    result.update(predictions=predictions, probabilities=probabilities,
                  image_paths=[record["image_path"] for record in data.records])
    return result


def format_classification_report(result: dict[str, Any]) -> str:
    """A text table: per class precision, recall and support, then the accuracy.

    Args:
        result: the dict of :func:`classification_metrics` or :func:`evaluate_marknet`.

    Returns:
        The lines joined by newlines (no trailing newline); ``-`` where a value is undefined.
    """
    names = result["class_names"]
    width = max(len("class"), *map(len, names))

    def cell(value: float) -> str:
        return "-" if np.isnan(value) else f"{value:.4f}"

    lines = [f"{'class':<{width}}  {'precision':>9}  {'recall':>9}  {'support':>7}"]
    for name, precision, recall, support in zip(names, result["precision"], result["recall"], result["support"]):
        lines.append(f"{name:<{width}}  {cell(precision):>9}  {cell(recall):>9}  {support:>7}")
    correct = int(np.trace(result["confusion"]))
    lines.append(f"accuracy: {result['accuracy']:.4f} ({correct}/{result['num_images']})")
    return "\n".join(lines)
