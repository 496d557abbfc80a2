"""Pascal VOC evaluation: average precision, mAP and precision/recall curves of a detector.

The matching rule is the VOC devkit's (``VOCevaldet.m``), per class:

1. The detections of all images are sorted by confidence, descending. The sort is stable:
   ties keep image order, then row order within an image.
2. Each detection is compared with the ground truth of its class in its image and takes the
   box of highest IoU (the first such box on ties), whether or not that box is already taken.
3. IoU >= ``iou_threshold`` with a ``difficult`` box: the detection counts as neither a true
   nor a false positive (it is left out of the curves). IoU >= ``iou_threshold`` with a box not
   yet taken: true positive, and the box is taken. With a box already taken: false positive (a
   duplicate). IoU below the threshold (or no box of the class in the image): false positive.
4. Recall is over the class's non-difficult boxes; precision over the counted detections.

Two AP definitions (:func:`average_precision`): ``"voc07"``, VOC2007's mean of the interpolated
precision at the 11 recalls 0, 0.1, ..., 1; ``"area"`` (VOC2010 onwards), the area under the
monotone (non-increasing) envelope of the precision/recall curve.

One difference from the devkit: the devkit measures IoU on integer pixel boxes whose widths are
``xmax - xmin + 1``. Here boxes are continuous coordinates (normalised, or continuous pixels) and
widths are ``xmax - xmin``, without the ``+1`` (see :func:`ssd_keras.boxes.iou_matrix`). On
pixel boxes of VOC images the IoUs differ slightly (a box ``[0, 0, 1, 1]`` in ``[0, 0, 2, 1]`` has
IoU 0.5 here, 0.667 in the devkit), and so can the APs, by far less than a point in practice.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .data.annotations import read_annotations
from .image import load_image
from .plots import class_name, plot_pr_curves  # noqa: F401  (plot_pr_curves: re-exported, its old home)
from . import layout
from .boxes import iou_matrix, to_normalized
from .ssd_utils import BBoxUtility

if TYPE_CHECKING:  # Keras is imported where a model runs: scoring saved detections needs no TensorFlow
    import keras

    from .exported import ExportedModel

__all__ = [
    "AP_METHODS",
    "average_precision",
    "detect_records",
    "evaluate_detections",
    "evaluate_model",
    "evaluate_records",
    "format_results",
    "normalized_annotations",
    "plot_pr_curves",
    "save_results_json",
]

AP_METHODS: tuple[str, ...] = ("voc07", "area")
"""The ``method`` values of :func:`average_precision`."""

VOC07_RECALLS = np.arange(11) / 10.0
"""The 11 recall levels of VOC2007's AP, ``i / 10`` exactly (so that recall 3/10 reaches 0.3)."""



def _check_method(method: str) -> None:
    if method not in AP_METHODS:
        raise ValueError(f"method must be one of {AP_METHODS}, got {method!r}")


def average_precision(recall: np.ndarray, precision: np.ndarray, method: str = "area") -> float:
    """Average precision of one precision/recall curve.

    Args:
        recall: ``(k,)`` recall after each of the ``k`` detections, by decreasing confidence.
        precision: ``(k,)`` precision after each detection.
        method: ``"voc07"``: VOC2007's 11-point interpolated AP, the mean over
            ``t = 0, 0.1, ..., 1`` of the highest precision at a recall ``>= t`` (0 where the
            recall never reaches ``t``). ``"area"``: VOC2010+'s area under the precision
            envelope (the precision at each recall replaced by the highest precision at that
            recall or above), the curve starting at recall 0 and ending at recall 1 with
            precision 0.

    Returns:
        AP in [0, 1]; 0.0 for an empty curve.

    Raises:
        ValueError: ``method`` is unknown, or the arrays are not 1-D of the same length.
    """
    _check_method(method)
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.ndim != 1 or recall.shape != precision.shape:
        raise ValueError(f"recall and precision must be 1-D arrays of the same length, got shapes "
                         f"{recall.shape} and {precision.shape}")
    if method == "voc07":
        reached = recall[None, :] >= VOC07_RECALLS[:, None]  # (11, k)
        best = np.max(np.where(reached, precision[None, :], 0.0), axis=1, initial=0.0)
        return float(np.mean(best))
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[step] - mrec[step - 1]) * envelope[step]))


def _check_detections(rows: Any, image: int, num_classes: int) -> np.ndarray:
    """One image's detections as float64 ``(k, 6)``, checked."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.size == 0:
        return np.zeros((0, layout.DETECTION_COLUMNS))
    if rows.ndim != 2 or rows.shape[1] < layout.DETECTION_COLUMNS:
        raise ValueError(f"detections of image {image} must be (k, >=6) rows [label, confidence, "
                         f"xmin, ymin, xmax, ymax], got shape {rows.shape}")
    rows = rows[:, :layout.DETECTION_COLUMNS]
    labels = rows[:, layout.LABEL]
    bad = np.flatnonzero((labels != np.round(labels)) | (labels < 1) | (labels >= num_classes))
    if bad.size:
        raise ValueError(f"detections of image {image}, row {bad[0]}: label {labels[bad[0]]:g} is not "
                         f"an integer in [1, {num_classes - 1}] (num_classes={num_classes} counts "
                         "background as 0)")
    bad = np.flatnonzero(~np.isfinite(rows[:, layout.CONFIDENCE:]).all(axis=1))
    if bad.size:
        raise ValueError(f"detections of image {image}, row {bad[0]}: non-finite confidence or box "
                         f"{rows[bad[0]].tolist()}")
    return rows


def _check_annotation(annotation: Mapping[str, Any], image: int,
                      num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's ground truth as (boxes (n, 4) float64, labels (n,) int64, difficult (n,) bool)."""
    if not isinstance(annotation, Mapping) or "boxes" not in annotation or "labels" not in annotation:
        raise ValueError(f"annotation of image {image} must be a dict with 'boxes' and 'labels' "
                         f"(and optionally 'difficult'), got {type(annotation).__name__}")
    boxes, labels = annotation["boxes"], annotation["labels"]
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    labels = np.asarray(labels).reshape(-1)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(labels) != len(boxes):
        raise ValueError(f"annotation of image {image}: boxes must be (n, 4) and labels (n,), got "
                         f"shapes {boxes.shape} and {labels.shape}")
    if len(labels) and (np.any(labels != np.round(labels)) or labels.min() < 1 or labels.max() >= num_classes):
        raise ValueError(f"annotation of image {image}: labels must be integers in [1, {num_classes - 1}] "
                         f"(0 is background), got {labels.tolist()}")
    if not np.isfinite(boxes).all():
        raise ValueError(f"annotation of image {image}: non-finite box coordinates")
    difficult = annotation.get("difficult")
    if difficult is None:
        difficult = np.zeros(len(labels), dtype=bool)
    difficult = np.asarray(difficult, dtype=bool).reshape(-1)
    if len(difficult) != len(labels):
        raise ValueError(f"annotation of image {image}: 'difficult' has {len(difficult)} values for "
                         f"{len(labels)} boxes")
    return boxes, labels.astype(np.int64), difficult


def _best_matches(detections: list[np.ndarray], truths: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per detection (all images concatenated), the ground truth of its class in its image of
    highest IoU: its global index (images' boxes concatenated; -1 when there is none) and IoU."""
    best_gt, best_iou, offset = [], [], 0
    for rows, (boxes, labels, _) in zip(detections, truths):
        iou = iou_matrix(rows[:, layout.BOX], boxes)  # (k, n)
        iou[rows[:, 0, None] != labels[None, :]] = -1.0  # other classes never match
        index = np.argmax(iou, axis=1) if len(boxes) else np.zeros(len(rows), dtype=np.int64)
        value = iou[np.arange(len(rows)), index] if len(boxes) else np.full(len(rows), -1.0)
        best_gt.append(np.where(value >= 0, index + offset, -1))
        best_iou.append(value)
        offset += len(boxes)
    return (np.concatenate(best_gt).astype(np.int64) if best_gt else np.zeros(0, np.int64),
            np.concatenate(best_iou) if best_iou else np.zeros(0))


def evaluate_detections(detections: Sequence[np.ndarray], annotations: Sequence[Mapping[str, Any]],
                        num_classes: int, iou_threshold: float = 0.5, method: str = "area") -> dict[str, Any]:
    """VOC AP per class and mAP of detections against ground truth (the devkit's matching rule).

    See the module docstring for the rule. IoUs come from
    :func:`ssd_keras.ssd_utils.iou_matrix` (continuous coordinates, no ``+1`` in widths), one
    matrix per image; the true/false positive assignment is the devkit's sequential one, done
    exactly: a detection matching a box is its true positive iff it is the first detection (in
    confidence order) whose best box that is.

    Args:
        detections: one array per image, ``(k, >=6)`` rows ``[label, confidence, xmin, ymin,
            xmax, ymax]`` (the output of ``BBoxUtility.detection_out``; further columns are
            ignored; ``k`` may be 0).
        annotations: one dict per image, in the same order: ``"boxes"`` ``(n, 4)`` corners in the
            detections' coordinate system, ``"labels"`` ``(n,)`` integers in
            ``[1, num_classes - 1]``, optional ``"difficult"`` ``(n,)`` booleans.
        num_classes: classes including background (label 0), as for ``BBoxUtility``.
        iou_threshold: minimum IoU of a match, in (0, 1].
        method: ``"area"`` or ``"voc07"`` (see :func:`average_precision`).

    Returns:
        A dict::

            {"mAP": float,              # mean AP over the classes with ground truth (nan if none)
             "method": str, "iou_threshold": float, "num_images": int,
             "classes": {label: {       # every label 1 .. num_classes - 1
                 "ap": float,           # nan when the class has no (non-difficult) ground truth
                 "precision": (m,) float64, "recall": (m,) float64 (nan without ground truth),
                 "confidence": (m,) float64,  # the m counted detections, by decreasing confidence
                 "num_gt": int,         # non-difficult ground-truth boxes
                 "num_detections": int, # all detections of the class (m + those on difficult boxes)
                 "num_tp": int, "num_fp": int}}}

    Raises:
        ValueError: the sequences differ in length, a label is out of range, an array is
            mis-shaped or non-finite (naming the image), or an argument is invalid.
    """
    _check_method(method)
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes counts background too and must be an integer >= 2, got {num_classes}")
    num_classes = int(num_classes)
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if len(detections) != len(annotations):
        raise ValueError(f"got detections for {len(detections)} images but annotations for "
                         f"{len(annotations)}")
    rows = [_check_detections(d, i, num_classes) for i, d in enumerate(detections)]
    truths = [_check_annotation(a, i, num_classes) for i, a in enumerate(annotations)]

    every = np.concatenate(rows) if rows else np.zeros((0, layout.DETECTION_COLUMNS))
    best_gt, best_iou = _best_matches(rows, truths)
    gt_labels = np.concatenate([t[1] for t in truths]) if truths else np.zeros(0, np.int64)
    gt_difficult = np.concatenate([t[2] for t in truths]) if truths else np.zeros(0, bool)
    matched = best_iou >= iou_threshold
    on_difficult = np.zeros(len(every), dtype=bool)
    on_difficult[matched] = gt_difficult[best_gt[matched]]

    classes = {}
    for label in range(1, num_classes):
        mine = np.flatnonzero(every[:, layout.LABEL] == label)  # image order, then row order
        order = mine[np.argsort(-every[mine, layout.CONFIDENCE], kind="stable")]
        counted = order[~on_difficult[order]]
        hits = np.flatnonzero(matched[counted])  # positions in `counted` on a free or taken box
        _, first = np.unique(best_gt[counted[hits]], return_index=True)
        tp = np.zeros(len(counted), dtype=bool)
        tp[hits[first]] = True
        tp_sum = np.cumsum(tp)
        fp_sum = np.arange(1, len(counted) + 1) - tp_sum
        num_gt = int(np.count_nonzero((gt_labels == label) & ~gt_difficult))
        precision = tp_sum / np.maximum(tp_sum + fp_sum, 1)
        if num_gt:
            recall = tp_sum / num_gt
            ap = average_precision(recall, precision, method)
        else:
            recall, ap = np.full(len(counted), np.nan), math.nan
        classes[label] = {"ap": ap, "precision": precision, "recall": recall,
                          "confidence": every[counted, 1], "num_gt": num_gt,
                          "num_detections": len(mine), "num_tp": int(tp_sum[-1]) if len(tp) else 0,
                          "num_fp": int(fp_sum[-1]) if len(tp) else 0}
    aps = [c["ap"] for c in classes.values() if c["num_gt"]]
    return {"mAP": float(np.mean(aps)) if aps else math.nan, "method": method,
            "iou_threshold": float(iou_threshold), "num_images": len(rows), "classes": classes}


def detect(model: keras.Model, images: Sequence[np.ndarray], bbox_util: BBoxUtility | None = None,
           **kwargs: Any) -> list[np.ndarray]:
    """:func:`ssd_keras.ssd.detect`, imported when called (it imports Keras)."""
    from .ssd import detect as ssd_detect

    return ssd_detect(model, images, bbox_util, **kwargs)


def _exported(model: Any) -> ExportedModel | None:
    """``model`` when it is an exported model (:func:`ssd_keras.load_exported`), else None."""
    from .exported import ExportedModel

    return model if isinstance(model, ExportedModel) else None


def _check_exported_decoder(model: ExportedModel, bbox_util: Any) -> None:
    """An exported model decodes and runs NMS itself: a ``bbox_util`` may only agree with it."""
    fixed = float(model.settings["nms_thresh"])
    if bbox_util is not None and not math.isclose(float(getattr(bbox_util, "nms_thresh", fixed)), fixed):
        raise ValueError(f"{model.path} has decoding and NMS built in, its nms_thresh fixed at export ({fixed:g}): "
                         f"a bbox_util with nms_thresh={bbox_util.nms_thresh:g} cannot apply; pass bbox_util=None")


def detect_records(model: keras.Model | ExportedModel, records: Sequence[Mapping[str, Any]],
                   bbox_util: BBoxUtility | None = None, batch_size: int = 8, verbose: int = 1,
                   confidence_threshold: float = 0.01) -> list[np.ndarray]:
    """Runs an SSD model over the images of records: their detection rows (normalised boxes).

    Args:
        model: an SSD model (``SSD300``), or an exported one (:func:`ssd_keras.load_exported`:
            its own decoding and NMS run; rows below ``confidence_threshold`` are dropped).
        records: as :func:`ssd_keras.data.annotations.read_annotations` returns them (only
            ``image_path`` is used).
        bbox_util: decoder (its ``nms_thresh`` and ``top_k`` apply); by default ``BBoxUtility``
            for the model's classes. For an exported model: None, or one whose ``nms_thresh``
            is the file's (it is not used).
        batch_size: images loaded and predicted together.
        verbose: 0 silent, 1 a ``keras.utils.Progbar`` (2: one line at the end); none for an
            exported model (which runs without TensorFlow).
        confidence_threshold: minimum confidence of a detection (0.01 as in the SSD paper's
            evaluation; at most 200 detections per image).

    Returns:
        One ``(k, 6)`` array of rows ``[label, confidence, xmin, ymin, xmax, ymax]`` per record.

    Raises:
        ImageLoadError: an image cannot be read.
        ValueError: ``bbox_util``'s ``nms_thresh`` differs from an exported model's.
    """
    exported = _exported(model)
    if exported is not None:
        _check_exported_decoder(exported, bbox_util)
    elif bbox_util is None:
        bbox_util = BBoxUtility(layout.num_classes_of(model))
    progbar = None
    if verbose and exported is None:  # an exported model runs without TensorFlow: no Keras progress bar
        import keras

        progbar = keras.utils.Progbar(len(records), verbose=verbose, unit_name="image")
    detections = []
    for start in range(0, len(records), batch_size):
        batch = records[start:start + batch_size]
        images = [load_image(record["image_path"]) for record in batch]
        if exported is not None:
            detections += exported.detect(images, confidence_threshold=confidence_threshold, batch_size=batch_size)
        else:
            detections += detect(model, images, bbox_util, confidence_threshold=confidence_threshold,
                                 batch_size=batch_size)
        if progbar is not None:
            progbar.add(len(batch))
    return detections


def normalized_annotations(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ground truth of records as :func:`evaluate_detections` takes it: boxes divided by each
    image's width and height (``labels`` and ``difficult`` as they are)."""
    return [{"boxes": to_normalized(np.asarray(record["boxes"], np.float64).reshape(-1, 4), record["width"],
                                    record["height"]),
             "labels": record["labels"], "difficult": record.get("difficult")} for record in records]


def evaluate_records(model: keras.Model | ExportedModel, records: Sequence[Mapping[str, Any]],
                     class_names: Sequence[str], bbox_util: BBoxUtility | None = None, batch_size: int = 8,
                     verbose: int = 1, confidence_threshold: float = 0.01, iou_threshold: float = 0.5,
                     method: str = "area") -> dict[str, Any]:
    """Runs an SSD model over annotated images and evaluates its detections.

    Args:
        model: an SSD model (``SSD300``) for ``len(class_names) + 1`` classes, or an exported
            one (:func:`ssd_keras.load_exported`).
        records: as :func:`ssd_keras.data.annotations.read_annotations` returns them (pixel
            boxes, ``width``/``height``, 1-based labels, ``difficult``).
        class_names: the class names without background (label ``i + 1`` is name ``i``).
        bbox_util, batch_size, verbose, confidence_threshold: see :func:`detect_records`.
        iou_threshold, method: see :func:`evaluate_detections`.

    Returns:
        :func:`evaluate_detections`'s dict (boxes normalised by each image's width and height)
        plus ``"class_names"``.

    Raises:
        ValueError: the model's class count does not match ``class_names``.
        ImageLoadError: an image cannot be read.
    """
    num_classes = len(class_names) + 1
    exported = _exported(model)
    model_classes = exported.num_classes if exported is not None else layout.num_classes_of(model)
    if model_classes != num_classes:
        raise ValueError(f"model {model.name!r} predicts {model_classes} classes (with background) but "
                         f"there are {len(class_names)} class names (+ background = {num_classes})")
    detections = detect_records(model, records, bbox_util, batch_size, verbose, confidence_threshold)
    result = evaluate_detections(detections, normalized_annotations(records), num_classes, iou_threshold, method)
    result["class_names"] = list(class_names)
    return result


def evaluate_model(model: keras.Model | ExportedModel, csv_path: str | os.PathLike[str],
                   bbox_util: BBoxUtility | None = None,
                   classes: Sequence[str] | str | os.PathLike[str] | None = None, batch_size: int = 8,
                   verbose: int = 1, confidence_threshold: float = 0.01, iou_threshold: float = 0.5,
                   method: str = "area") -> dict[str, Any]:
    """VOC AP per class and mAP of an SSD model on an annotation CSV.

    Reads the CSV with :func:`ssd_keras.data.annotations.read_annotations`, then
    :func:`evaluate_records`.

    Args:
        model: an SSD model for the CSV's classes (plus background), or an exported one.
        csv_path: the annotation CSV (``difficult`` column optional).
        bbox_util: decoder; by default ``BBoxUtility`` for the model's classes.
        classes: class list (names or a file) fixing the labels; default: the CSV's sorted
            distinct class names.
        batch_size, verbose, confidence_threshold, iou_threshold, method: see
            :func:`evaluate_records`.

    Returns:
        :func:`evaluate_detections`'s dict plus ``"class_names"``.
    """
    records, class_names = read_annotations(csv_path, classes)
    return evaluate_records(model, records, class_names, bbox_util=bbox_util, batch_size=batch_size,
                            verbose=verbose, confidence_threshold=confidence_threshold,
                            iou_threshold=iou_threshold, method=method)


def format_results(result: Mapping[str, Any], class_names: Sequence[str] | None = None) -> str:
    """A text table: one line per class (name, AP, #gt, #detections), then the mAP.

    Classes without ground truth show AP ``-`` and are left out of the mAP.

    Args:
        result: the dict of :func:`evaluate_detections` or :func:`evaluate_model`.
        class_names: names without background; default ``result["class_names"]``, else labels.

    Returns:
        The table, lines joined by newlines (no trailing newline).
    """
    if class_names is None:
        class_names = result.get("class_names")
    names = {label: class_name(label, class_names) for label in result["classes"]}
    width = max([len("class"), *map(len, names.values())])
    lines = [f"{'class':<{width}}  {'AP':>6}  {'#gt':>6}  {'#det':>7}"]
    for label, c in result["classes"].items():
        ap = f"{c['ap']:.4f}" if c["num_gt"] else "-"
        lines.append(f"{names[label]:<{width}}  {ap:>6}  {c['num_gt']:>6}  {c['num_detections']:>7}")
    counted = sum(1 for c in result["classes"].values() if c["num_gt"])
    lines.append(f"mAP ({result.get('method', '?')}, IoU >= {result.get('iou_threshold', float('nan')):g}): "
                 f"{result['mAP']:.4f} over {counted} class{'es' if counted != 1 else ''} with ground truth")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    """Arrays to lists, numpy scalars to Python ones, NaN to None, keys to strings."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.ndarray, list, tuple)):
        return [_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_results_json(result: Mapping[str, Any], path: str | os.PathLike[str],
                      class_names: Sequence[str] | None = None) -> None:
    """Writes an evaluation result as strict JSON (folders created).

    Arrays become lists and NaN becomes ``null``; ``"classes"`` is keyed by the label as a
    string and each class gets its ``"name"`` (from ``class_names``, default
    ``result["class_names"]``).

    Args:
        result: the dict of :func:`evaluate_detections` or :func:`evaluate_model`.
        path: the JSON file.
        class_names: names without background.
    """
    if class_names is None:
        class_names = result.get("class_names")
    data = dict(result)
    data["classes"] = {label: {"name": class_name(label, class_names), **c} for label, c in result["classes"].items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf8") as file:
        json.dump(_jsonable(data), file, allow_nan=False)
        file.write("\n")
