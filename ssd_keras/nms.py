"""Per-class non-maximum suppression in ``keras.ops``, for every Keras backend.

:func:`detection_rows` gives what ``BBoxUtility.detection_out`` gives, as a tensor with static
shapes: per class, greedy NMS with the rule of ``tf.image.non_max_suppression`` (candidates
scoring strictly above ``score_threshold``, a box dropped when its IoU with a kept box of its
class exceeds ``iou_threshold``, at most ``top_k`` kept, ties by box index), then the best
``keep_top_k`` over all classes (ties in class order), zero rows as padding.

The greedy loop runs all classes of all images at once, one kept box per class and step, for at
most ``top_k`` steps (it stops when no class has a candidate left); each step compares one box
per class with every prior, so memory stays ``batch x classes x priors``. ``DetectionOutput``
uses it on JAX and PyTorch; on TensorFlow it uses ``tf.image.combined_non_max_suppression``,
which gives the same detections faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras import ops

__all__ = ["detection_rows"]


def _iou_with_all(box: Any, boxes: Any) -> Any:
    """IoU of one box per (image, class) ``(B, C, 4)`` with every box of its image ``(B, P, 4)``:
    ``(B, C, P)``."""
    box = box[:, :, None, :]
    boxes = boxes[:, None, :, :]
    low = ops.maximum(box[..., :2], boxes[..., :2])
    high = ops.minimum(box[..., 2:], boxes[..., 2:])
    inter = ops.prod(ops.maximum(high - low, 0.0), axis=-1)
    area = ops.prod(box[..., 2:] - box[..., :2], axis=-1) + ops.prod(boxes[..., 2:] - boxes[..., :2], axis=-1)
    union = area - inter
    return ops.where(union > 0.0, inter / ops.where(union > 0.0, union, 1.0), 0.0)


def detection_rows(boxes: Any, scores: Any, labels: Sequence[int], score_threshold: float,
                   iou_threshold: float, top_k: int, keep_top_k: int) -> Any:
    """Detection rows of a batch from decoded boxes and class scores.

    Args:
        boxes: ``(B, P, 4)`` normalised corners.
        scores: ``(B, P, C)`` confidences of the ``C`` classes reported (background left out).
        labels: the label of each of the ``C`` score columns.
        score_threshold, iou_threshold, top_k, keep_top_k: as ``detection_out``'s.

    Returns:
        ``(B, keep_top_k, 6)`` float32 rows ``[label, confidence, xmin, ymin, xmax, ymax]`` by
        decreasing confidence, zero rows as padding.
    """
    boxes = ops.cast(boxes, "float32")
    candidates = ops.transpose(ops.cast(scores, "float32"), (0, 2, 1))  # (B, C, P)
    num_classes = len(labels)
    remaining = ops.where(candidates > score_threshold, candidates, -1.0)
    kept_scores = ops.full((ops.shape(boxes)[0], num_classes, top_k), -1.0)
    kept_index = ops.zeros((ops.shape(boxes)[0], num_classes, top_k), "int32")

    def more(step, remaining, kept_scores, kept_index):
        return ops.logical_and(step < top_k, ops.any(remaining > score_threshold))

    def keep_one(step, remaining, kept_scores, kept_index):
        best = ops.cast(ops.argmax(remaining, axis=-1), "int32")  # (B, C): first of equal scores
        score = ops.max(remaining, axis=-1)  # (B, C)
        found = score > score_threshold
        box = ops.take_along_axis(boxes, ops.repeat(best[..., None], 4, axis=-1), axis=1)  # (B, C, 4)
        suppressed = _iou_with_all(box, boxes) > iou_threshold  # (B, C, P)
        taken = ops.arange(ops.shape(remaining)[-1])[None, None, :] == best[..., None]
        remaining = ops.where(ops.logical_and(found[..., None], ops.logical_or(suppressed, taken)), -1.0,
                              remaining)
        slot = ops.arange(top_k)[None, None, :] == step
        kept_scores = ops.where(ops.logical_and(slot, found[..., None]), score[..., None], kept_scores)
        kept_index = ops.where(ops.logical_and(slot, found[..., None]), best[..., None], kept_index)
        return step + 1, remaining, kept_scores, kept_index

    _, _, kept_scores, kept_index = ops.while_loop(
        more, keep_one, (ops.convert_to_tensor(0, "int32"), remaining, kept_scores, kept_index),
        maximum_iterations=top_k)

    flat_scores = ops.reshape(kept_scores, (-1, num_classes * top_k))  # class-major: ties in class order
    count = min(keep_top_k, num_classes * top_k)
    best, order = ops.top_k(flat_scores, k=count, sorted=True)
    flat_index = ops.reshape(kept_index, (-1, num_classes * top_k))
    prior = ops.take_along_axis(flat_index, order, axis=1)
    chosen = ops.take_along_axis(boxes, ops.repeat(prior[..., None], 4, axis=-1), axis=1)
    label = ops.take(ops.convert_to_tensor(list(labels), "float32"), order // top_k)
    rows = ops.concatenate([label[..., None], best[..., None], chosen], axis=-1)
    rows = ops.where((best > score_threshold)[..., None], rows, 0.0)
    if count < keep_top_k:
        rows = ops.pad(rows, [[0, 0], [0, keep_top_k - count], [0, 0]])
    return rows
