"""Box utilities of SSD: IoU, encoding ground truth to priors, decoding predictions, NMS.

All boxes are normalised corners ``[xmin, ymin, xmax, ymax]`` in [0, 1]. Priors are rows
``[xmin, ymin, xmax, ymax, var0, var1, var2, var3]`` as returned by
:func:`ssd_keras.ssd.prior_boxes`.

Differences from the original port, on purpose:

- ``encode_box`` returns ``(num_priors, 4 + return_iou)`` rather than the same values flattened.
- ``decode_boxes`` offsets the y-centre by the prior's *height* (the original used the width,
  which breaks ``decode(encode(b)) == b`` for non-square priors).
- ``detection_out`` returns ``(0, 6)`` arrays (not empty lists) for images without detections
  and can return the prior index of each detection.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BBoxUtility", "iou_matrix", "nms"]

LOC = slice(0, 4)
BACKGROUND_COLUMN = 4


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``boxes_a`` with every box of ``boxes_b``.

    Args:
        boxes_a: ``(n, 4)`` corners (extra columns are ignored).
        boxes_b: ``(m, 4)`` corners (extra columns are ignored).

    Returns:
        ``(n, m)`` IoU in [0, 1] (0 where the union is empty).
    """
    a = np.asarray(boxes_a, dtype=np.float64)[:, None, :4]
    b = np.asarray(boxes_b, dtype=np.float64)[None, :, :4]
    inter_wh = np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]),
                       0.0, None)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        max_output: int) -> np.ndarray:
    """Greedy non-maximum suppression, the rule of ``tf.image.non_max_suppression``.

    Boxes are taken in order of decreasing score (ties in input order); a box is dropped when
    its IoU with an already kept box exceeds ``iou_threshold``.

    Args:
        boxes: ``(n, 4)`` corners.
        scores: ``(n,)``.
        iou_threshold: suppression threshold.
        max_output: at most this many boxes are kept.

    Returns:
        Indices into ``boxes`` of the kept boxes, by decreasing score, ``(k,)`` int64.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    while order.size and len(keep) < max_output:
        best = order[0]
        keep.append(best)
        rest = order[1:]
        if not rest.size:
            break
        order = rest[iou_matrix(boxes[best:best + 1], boxes[rest])[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class BBoxUtility:
    """Encodes ground truth for training and decodes SSD predictions into detections.

    Args:
        num_classes: classes including background.
        priors: ``(num_priors, 8)`` default boxes with variances (from
            :func:`ssd_keras.ssd.prior_boxes`); needed for encoding, not for
            :meth:`detection_out`, which reads the priors from the predictions.
        overlap_threshold: IoU above which a prior is matched to a ground-truth box.
        nms_thresh: IoU threshold of the per-class non-maximum suppression.
        top_k: boxes kept per class by the NMS.
    """

    def __init__(self, num_classes: int, priors: np.ndarray | None = None,
                 overlap_threshold: float = 0.5, nms_thresh: float = 0.45, top_k: int = 400):
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes counts background too and must be >= 2, "
                             f"got {num_classes}")
        self.num_classes = int(num_classes)
        if priors is not None:
            priors = np.asarray(priors, dtype=np.float64)
            if priors.ndim != 2 or priors.shape[1] != 8:
                raise ValueError(f"priors must be (num_priors, 8) rows [xmin, ymin, xmax, ymax, "
                                 f"4 variances], got shape {priors.shape}")
        self.priors = priors
        self.overlap_threshold = float(overlap_threshold)
        self.nms_thresh = nms_thresh
        self.top_k = top_k

    @property
    def num_priors(self) -> int:
        return 0 if self.priors is None else len(self.priors)

    @property
    def nms_thresh(self) -> float:
        return self._nms_thresh

    @nms_thresh.setter
    def nms_thresh(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"nms_thresh must be in [0, 1], got {value}")
        self._nms_thresh = float(value)

    @property
    def top_k(self) -> int:
        return self._top_k

    @top_k.setter
    def top_k(self, value: int) -> None:
        if int(value) != value or value < 1:
            raise ValueError(f"top_k must be a positive integer, got {value}")
        self._top_k = int(value)

    def _require_priors(self) -> np.ndarray:
        if self.priors is None:
            raise ValueError("this BBoxUtility has no priors: pass priors=prior_boxes(model)")
        return self.priors

    @staticmethod
    def _check_boxes(boxes: np.ndarray, what: str = "box") -> np.ndarray:
        boxes = np.atleast_2d(np.asarray(boxes, dtype=np.float64))
        if boxes.shape[-1] < 4:
            raise ValueError(f"{what} needs 4 corners [xmin, ymin, xmax, ymax], "
                             f"got shape {boxes.shape}")
        bad = np.flatnonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
                             | ~np.isfinite(boxes[:, :4]).all(axis=1))
        if bad.size:
            raise ValueError(f"{what} {bad[0]} is degenerate or not finite (need xmin < xmax and "
                             f"ymin < ymax): {boxes[bad[0], :4].tolist()}")
        return boxes

    def iou(self, box: np.ndarray) -> np.ndarray:
        """IoU of one box ``(4,)`` (normalised corners) with every prior, ``(num_priors,)``."""
        box = self._check_boxes(box)
        return iou_matrix(box, self._require_priors())[0]

    def _encode(self, boxes: np.ndarray, priors: np.ndarray) -> np.ndarray:
        """Offsets of ``boxes`` ``(..., 4)`` relative to ``priors`` ``(..., 8)``, ``(..., 4)``."""
        box_center = 0.5 * (boxes[..., :2] + boxes[..., 2:4])
        box_wh = boxes[..., 2:4] - boxes[..., :2]
        prior_center = 0.5 * (priors[..., :2] + priors[..., 2:4])
        prior_wh = priors[..., 2:4] - priors[..., :2]
        return np.concatenate([(box_center - prior_center) / prior_wh / priors[..., 4:6],
                               np.log(box_wh / prior_wh) / priors[..., 6:8]], axis=-1)

    def _match(self, boxes: np.ndarray) -> np.ndarray:
        """``(n, num_priors)`` IoU where prior p is assigned to box i, else 0 (the original rule:
        IoU above the threshold, or the single best prior when none is)."""
        ious = iou_matrix(boxes, self._require_priors())
        matched = ious > self.overlap_threshold
        best = ious.argmax(axis=1)
        unmatched = ~matched.any(axis=1)
        matched[np.flatnonzero(unmatched), best[unmatched]] = True
        return np.where(matched, ious, 0.0)

    def encode_box(self, box: np.ndarray, return_iou: bool = True) -> np.ndarray:
        """Encodes one ground-truth box against every prior.

        Args:
            box: ``(4,)`` normalised corners.
            return_iou: append the IoU of each assigned prior as a last column.

        Returns:
            ``(num_priors, 4 + return_iou)``: for the priors whose IoU exceeds
            ``overlap_threshold`` (or, if none does, the single best prior), the offsets
            ``((box_c - prior_c) / prior_wh / var_xy, log(box_wh / prior_wh) / var_wh)`` and the
            IoU; zero rows elsewhere.
        """
        box = self._check_boxes(box)[:1, :4]
        priors = self._require_priors()
        matched_iou = self._match(box)[0]
        out = np.zeros((len(priors), 4 + bool(return_iou)))
        assigned = matched_iou > 0
        out[assigned, :4] = self._encode(box, priors[assigned])
        if return_iou:
            out[:, 4] = matched_iou
        return out

    def assign_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """Training targets for one image.

        Args:
            boxes: ``(n, 4 + num_classes - 1)``: normalised corners, then the one-hot class
                without the background column.

        Returns:
            ``(num_priors, 4 + num_classes + 8)``: encoded offsets (0-3), one-hot class with
            background in column 4 (1 for unassigned priors), 1 in column -8 for assigned
            priors, zeros in the last 7 columns. Each prior takes the box, among the boxes that
            matched it, with the highest IoU.
        """
        priors = self._require_priors()
        assignment = np.zeros((len(priors), 4 + self.num_classes + 8))
        assignment[:, BACKGROUND_COLUMN] = 1.0
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.size == 0:
            return assignment
        if boxes.ndim != 2 or boxes.shape[1] != 4 + self.num_classes - 1:
            raise ValueError(f"boxes must be (n, 4 + num_classes - 1) = (n, "
                             f"{3 + self.num_classes}) rows of corners and one-hot classes, "
                             f"got shape {boxes.shape}")
        self._check_boxes(boxes, "ground-truth box")
        matched_iou = self._match(boxes[:, :4])  # (n, P)
        best_box = matched_iou.argmax(axis=0)
        assigned = matched_iou.max(axis=0) > 0
        owner = best_box[assigned]
        assignment[assigned, :4] = self._encode(boxes[owner, :4], priors[assigned])
        assignment[assigned, BACKGROUND_COLUMN] = 0.0
        assignment[assigned, 5:-8] = boxes[owner, 4:]
        assignment[assigned, -8] = 1.0
        return assignment

    @staticmethod
    def decode_boxes(mbox_loc: np.ndarray, mbox_priorbox: np.ndarray,
                     variances: np.ndarray) -> np.ndarray:
        """Turns location offsets into corners.

        Args:
            mbox_loc: ``(..., num_priors, 4)`` predicted offsets.
            mbox_priorbox: ``(..., num_priors, 4)`` prior corners.
            variances: ``(..., num_priors, 4)``.

        Returns:
            ``(..., num_priors, 4)`` corners clipped to [0, 1].
        """
        prior_wh = mbox_priorbox[..., 2:4] - mbox_priorbox[..., :2]
        prior_center = 0.5 * (mbox_priorbox[..., 2:4] + mbox_priorbox[..., :2])
        center = mbox_loc[..., :2] * prior_wh * variances[..., :2] + prior_center
        half_wh = 0.5 * np.exp(mbox_loc[..., 2:4] * variances[..., 2:4]) * prior_wh
        return np.clip(np.concatenate([center - half_wh, center + half_wh], axis=-1), 0.0, 1.0)

    def detection_out(self, predictions: np.ndarray, background_label_id: int = 0,
                      keep_top_k: int = 200, confidence_threshold: float = 0.01,
                      return_indices: bool = False) -> list[np.ndarray]:
        """Decodes a batch of predictions into detections.

        Per image and class (background skipped): the priors scoring above
        ``confidence_threshold``, NMS at ``nms_thresh`` keeping at most ``top_k``; then all
        classes sorted by confidence (descending) and cut to ``keep_top_k``.

        Args:
            predictions: ``(batch, num_priors, 4 + num_classes + 8)`` model output.
            background_label_id: the class not reported.
            keep_top_k: detections kept per image.
            confidence_threshold: minimum class confidence.
            return_indices: add a 7th column with the prior index of each detection.

        Returns:
            One array per image, ``(k, 6)`` rows ``[label, confidence, xmin, ymin, xmax, ymax]``
            (``(k, 7)`` with the prior index), float64, by decreasing confidence; ``(0, 6)``
            (``(0, 7)``) when there is nothing.
        """
        predictions = np.asarray(predictions)
        if predictions.ndim != 3:
            raise ValueError(f"predictions must be (batch, num_priors, 4 + num_classes + 8), got "
                             f"shape {predictions.shape}")
        if predictions.shape[-1] != 4 + self.num_classes + 8:
            raise ValueError(
                f"predictions have {predictions.shape[-1]} columns, which is "
                f"{predictions.shape[-1] - 12} classes, but this BBoxUtility has num_classes="
                f"{self.num_classes} (expected {4 + self.num_classes + 8} columns)")
        decoded = self.decode_boxes(predictions[..., LOC], predictions[..., -8:-4],
                                    predictions[..., -4:])
        conf = predictions[..., 4:-8]
        columns = 7 if return_indices else 6
        results = []
        for boxes, scores in zip(decoded, conf):
            rows = []
            for c in range(self.num_classes):
                if c == background_label_id:
                    continue
                candidates = np.flatnonzero(scores[:, c] > confidence_threshold)
                if not candidates.size:
                    continue
                kept = candidates[nms(boxes[candidates], scores[candidates, c],
                                      self.nms_thresh, self.top_k)]
                rows.append(np.column_stack([np.full(len(kept), c), scores[kept, c],
                                             boxes[kept], kept])[:, :columns])
            if not rows:
                results.append(np.zeros((0, columns)))
                continue
            rows = np.concatenate(rows).astype(np.float64)
            order = np.argsort(-rows[:, 1], kind="stable")[:keep_top_k]
            results.append(rows[order])
        return results
