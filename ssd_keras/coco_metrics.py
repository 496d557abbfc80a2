"""COCO detection metrics, computed by pycocotools (the reference implementation, not a copy).

AP@[.50:.95] (``AP``), ``AP50``, ``AP75``, AP of small / medium / large objects (``APs``,
``APm``, ``APl``: areas below 32², up to 96², above), AR with at most 1 / 10 / 100 detections per
image (``AR1``, ``AR10``, ``AR100``) and AR by size (``ARs``, ``ARm``, ``ARl``): overall, and per
class (pycocotools' ``params.catIds`` set to the one class). Ground truth and detections go to
pycocotools in pixels, numbered by :mod:`ssd_keras.data.coco`'s rule; ``difficult`` ground-truth
boxes go as ``iscrowd: 1`` (a detection matching one counts neither way; pycocotools' crowd rule).
A metric pycocotools cannot compute (no ground truth of the class or size) is NaN here (its -1).

pycocotools is imported when a metric is computed (not by importing this module), its prints
silenced. This module imports no TensorFlow.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import layout
from .boxes import to_pixels
from .checks import MissingDependencyError
from .data.coco import coco_dataset, coco_results

__all__ = ["METRIC_KEYS", "MissingDependencyError", "coco_evaluate", "format_coco_results", "require_pycocotools",
           "save_coco_json"]

METRIC_KEYS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
                                "ARl")
"""The metrics, in the order of pycocotools' ``COCOeval.stats``."""

INSTALL_HINT = "pip install 'pycocotools>=2.0.8'"


def require_pycocotools() -> tuple[Any, Any]:
    """pycocotools' ``COCO`` and ``COCOeval`` classes.

    Raises:
        MissingDependencyError: pycocotools is not installed (the message says how to install it).
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:
        raise MissingDependencyError(f"COCO metrics need the package pycocotools, which is not installed "
                                     f"({exc}): {INSTALL_HINT}") from None
    return COCO, COCOeval


def _stats(evaluator: Any) -> dict[str, float]:
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return {key: float(value) if value >= 0 else math.nan for key, value in zip(METRIC_KEYS, evaluator.stats)}


def _results(records: Sequence[Mapping[str, Any]], detections: Sequence[Any], num_classes: int) -> list[dict]:
    """The detections of every image in COCO's results format (pixel boxes, unrounded)."""
    results = []
    for image_id, (record, rows) in enumerate(zip(records, detections), start=1):
        rows = np.asarray(rows, np.float64)
        if rows.size == 0:
            continue
        if rows.ndim != 2 or rows.shape[1] < layout.DETECTION_COLUMNS:
            raise ValueError(f"detections of image {image_id - 1} must be (k, >=6) rows [label, confidence, xmin, "
                             f"ymin, xmax, ymax], got shape {rows.shape}")
        labels = rows[:, layout.LABEL]
        if np.any((labels != np.round(labels)) | (labels < 1) | (labels > num_classes)):
            raise ValueError(f"detections of image {image_id - 1}: labels must be integers in [1, {num_classes}], "
                             f"got {sorted(set(labels.tolist()))}")
        if not np.isfinite(rows[:, :layout.DETECTION_COLUMNS]).all():
            raise ValueError(f"detections of image {image_id - 1}: non-finite confidence or box")
        pixels = to_pixels(rows[:, layout.BOX], record["width"], record["height"])
        results += coco_results(image_id, labels.astype(np.int64), rows[:, layout.CONFIDENCE], pixels)
    return results


def coco_evaluate(records: Sequence[Mapping[str, Any]], detections: Sequence[Any],
                  class_names: Sequence[str]) -> dict[str, Any]:
    """COCO metrics of detections against ground truth, overall and per class.

    Args:
        records: The ground truth, as ``read_annotations`` returns it (pixel ``boxes``,
            ``width``, ``height``, 1-based ``labels``, optional ``difficult``).
        detections: One array per record, in the same order: rows ``[label, confidence, xmin,
            ymin, xmax, ymax]`` with normalised corners (as ``detect`` and
            ``BBoxUtility.detection_out`` give them; further columns ignored).
        class_names: The class names without background (label ``i + 1`` is ``class_names[i]``).

    Returns:
        ``{"metric": "coco", "num_images", "class_names", "AP", "AP50", ..., "ARl",
        "per_class": {name: {"AP", ..., "ARl", "num_gt", "num_crowd", "num_detections"}}}``; values
        in [0, 1], NaN where there is nothing to measure. ``num_gt`` counts the boxes that are not
        crowd (difficult).

    Raises:
        MissingDependencyError: pycocotools is not installed.
        ValueError: The sequences differ in length, or a detection array is mis-shaped, has a
            label outside ``[1, len(class_names)]`` or non-finite values.
    """
    coco, coco_eval = require_pycocotools()
    if len(detections) != len(records):
        raise ValueError(f"got detections for {len(detections)} images but ground truth for {len(records)}")
    dataset = coco_dataset(records, class_names, decimals=None)
    results = _results(records, detections, len(class_names))
    with contextlib.redirect_stdout(io.StringIO()):
        truth = coco()
        truth.dataset = dataset
        truth.createIndex()
        if results:
            found = truth.loadRes(results)
        else:  # loadRes needs at least one detection
            found = coco()
            found.dataset = {"images": list(dataset["images"]), "annotations": [],
                             "categories": copy.deepcopy(dataset["categories"])}
            found.createIndex()
        overall = _stats(coco_eval(truth, found, "bbox"))
        per_class = {}
        for category, name in enumerate(class_names, start=1):
            evaluator = coco_eval(truth, found, "bbox")
            evaluator.params.catIds = [category]
            per_class[name] = _stats(evaluator)
    boxes = Counter((a["category_id"], a["iscrowd"]) for a in dataset["annotations"])
    found_per_class = Counter(r["category_id"] for r in results)
    for category, name in enumerate(class_names, start=1):
        per_class[name].update(num_gt=boxes[category, 0], num_crowd=boxes[category, 1],
                               num_detections=found_per_class[category])
    return {"metric": "coco", "num_images": len(records), "class_names": list(class_names), **overall,
            "per_class": per_class}


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def format_coco_results(result: Mapping[str, Any]) -> str:
    """A text table: one line per class (AP, AP50, AP75, #gt, #det), then the overall metrics.

    Returns:
        The table, lines joined by newlines (no trailing newline); ``-`` where a metric is NaN.
    """
    width = max([len("class"), *map(len, result["per_class"])])
    lines = [f"{'class':<{width}}  {'AP':>6}  {'AP50':>6}  {'AP75':>6}  {'#gt':>6}  {'#det':>7}"]
    for name, c in result["per_class"].items():
        lines.append(f"{name:<{width}}  {_number(c['AP']):>6}  {_number(c['AP50']):>6}  {_number(c['AP75']):>6}  "
                     f"{c['num_gt']:>6}  {c['num_detections']:>7}")
    lines.append(f"COCO metrics over {result['num_images']} images (pycocotools):")
    for group in (("AP", "AP50", "AP75"), ("APs", "APm", "APl"), ("AR1", "AR10", "AR100"), ("ARs", "ARm", "ARl")):
        lines.append("  " + "   ".join(f"{key:<5} {_number(result[key])}" for key in group))
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_coco_json(result: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Writes :func:`coco_evaluate`'s result as strict JSON (NaN as ``null``; folders created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf8") as file:
        json.dump(_jsonable(result), file, allow_nan=False, indent=1)
        file.write("\n")
