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
- ``assign_boxes`` and ``encode_box`` clip ground-truth corners to [0, 1] first (a box empty
  after clipping raises ``ValueError``); ``assign_boxes`` returns float32.

Everything is vectorised over priors; ``detection_out`` runs the per-class NMS of all classes
in one pass and stops once ``keep_top_k`` detections are certain (see :func:`multiclass_nms`),
with results equal to one ``tf.image.non_max_suppression`` per class.
:class:`ssd_keras.ssd_layers.DetectionOutput` does the same decoding in the graph, for models that
go from image to detections and export as one SavedModel.

This module imports NumPy only. The packed layouts are :mod:`ssd_keras.layout`'s; IoU and the decoder are
:mod:`ssd_keras.boxes`'s.
"""

from __future__ import annotations

import numpy as np

from . import layout
from .boxes import decode, iou_matrix
from .checks import fraction, positive_int

__all__ = ["BBoxUtility", "multiclass_nms", "nms", "decode", "iou_matrix"]

NMS_BLOCK = 128  # candidates resolved together by multiclass_nms
HEAD_PER_KEPT = 4  # multiclass_nms sorts about this many candidates per detection kept first


def _descending_chunks(scores: np.ndarray, first: int):
    """Indices of ``scores`` in stable descending order, yielded in chunks: about the ``first``
    best (all ties of the last one included), then the rest. Sorting only the head is what
    makes early stopping pay; the ties keep the order exact."""
    if first < len(scores):
        cut = np.partition(scores, len(scores) - first)[len(scores) - first]
        head = np.flatnonzero(scores >= cut)
        yield head[np.argsort(-scores[head], kind="stable")]
        tail = np.flatnonzero(scores < cut)
        yield tail[np.argsort(-scores[tail], kind="stable")]
    else:
        yield np.argsort(-scores, kind="stable")


def multiclass_nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float,
                   iou_threshold: float, top_k: int, keep_top_k: int,
                   block_size: int = NMS_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Per-class greedy NMS of one image, then the best ``keep_top_k`` over all classes.

    Exactly the result of running ``tf.image.non_max_suppression`` once per class (candidates
    scoring strictly above ``score_threshold``, a box dropped when its IoU with a kept box of
    its class exceeds ``iou_threshold``, at most ``top_k`` kept per class, ties by box index),
    concatenating the classes in order and stable-sorting by score; but computed in one pass:
    all candidates in that final order, a block at a time, each block checked against the boxes
    already kept and then resolved greedily inside itself (a fixed-point iteration that ends
    on the unique greedy solution). It stops once ``keep_top_k`` detections are certain, so the
    many low-scoring candidates of a real image are never compared.

    Args:
        boxes: ``(num_boxes, 4)`` corners, shared by all classes.
        scores: ``(num_boxes, num_classes)``.
        score_threshold, iou_threshold, top_k, keep_top_k: as described above.
        block_size: candidates resolved together.

    Returns:
        ``(class_index, box_index)``, two ``(k,)`` int64 arrays in decreasing score order,
        ``k <= keep_top_k``.
    """
    num_boxes, num_classes = scores.shape
    class_major = np.ascontiguousarray(scores.T).ravel()  # index = class * num_boxes + box
    candidates = np.flatnonzero(class_major > score_threshold)  # in (class, box) order
    if not candidates.size or keep_top_k <= 0 or top_k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    kept_boxes, kept_classes = np.zeros((0, 4)), np.zeros(0, np.int64)
    kept_per_class = np.zeros(num_classes, np.int64)
    selected, num_selected = [], 0
    for chunk in _descending_chunks(class_major[candidates], HEAD_PER_KEPT * keep_top_k):
        order = candidates[chunk]
        for start in range(0, len(order), block_size):
            block_classes, block_index = np.divmod(order[start:start + block_size], num_boxes)
            block_boxes = boxes[block_index]
            suppressed = ((iou_matrix(block_boxes, kept_boxes) > iou_threshold)
                          & (block_classes[:, None] == kept_classes[None, :])).any(axis=1)
            overlaps = np.triu((iou_matrix(block_boxes, block_boxes) > iou_threshold)
                               & (block_classes[:, None] == block_classes[None, :]), k=1)
            keep = ~suppressed
            while True:  # keep[j] = not suppressed and no kept i < j of its class overlaps it
                update = ~suppressed & ~(overlaps & keep[:, None]).any(axis=0)
                if np.array_equal(update, keep):
                    break
                keep = update
            kept = np.flatnonzero(keep)
            one_hot = block_classes[kept, None] == np.arange(num_classes)
            rank = kept_per_class[block_classes[kept]] + (np.cumsum(one_hot, axis=0)[
                np.arange(len(kept)), block_classes[kept]] - 1)
            kept_per_class += one_hot.sum(axis=0)
            reported = kept[rank < top_k]  # past top_k: kept, but never reported
            selected.append(order[start + reported])
            num_selected += len(reported)
            kept_boxes = np.concatenate([kept_boxes, block_boxes[kept]])
            kept_classes = np.concatenate([kept_classes, block_classes[kept]])
            if num_selected >= keep_top_k:
                break
        if num_selected >= keep_top_k:
            break
    return np.divmod(np.concatenate(selected)[:keep_top_k], num_boxes)


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
    scores = np.asarray(scores, dtype=np.float64)
    return multiclass_nms(np.asarray(boxes), scores[:, None], -np.inf, iou_threshold,
                          max_output, max_output)[1]


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
        self.priors = priors
        self.overlap_threshold = float(overlap_threshold)
        self.nms_thresh = nms_thresh
        self.top_k = top_k

    @property
    def priors(self) -> np.ndarray | None:
        """``(num_priors, 8)`` float64 priors with variances, or None."""
        return self._priors

    @priors.setter
    def priors(self, priors: np.ndarray | None) -> None:
        if priors is not None:
            priors = np.asarray(priors, dtype=np.float64)
            if priors.ndim != 2 or priors.shape[1] != 8:
                raise ValueError(f"priors must be (num_priors, 8) rows [xmin, ymin, xmax, ymax, "
                                 f"4 variances], got shape {priors.shape}")
            # what encoding needs, laid out once
            self._prior_columns = np.ascontiguousarray(priors[:, :4].T)
            self._prior_area = (priors[:, 2] - priors[:, 0]) * (priors[:, 3] - priors[:, 1])
            self._prior_center = 0.5 * (priors[:, :2] + priors[:, 2:4])
            self._prior_wh = priors[:, 2:4] - priors[:, :2]
            self._prior_scale = self._prior_wh * priors[:, 4:6]  # centre offsets divide by it
        self._priors = priors
        self._background = None  # assign_boxes' all-background template, made on first use

    @property
    def num_priors(self) -> int:
        return 0 if self.priors is None else len(self.priors)

    @property
    def nms_thresh(self) -> float:
        return self._nms_thresh

    @nms_thresh.setter
    def nms_thresh(self, value: float) -> None:
        self._nms_thresh = fraction(value, "nms_thresh")

    @property
    def top_k(self) -> int:
        return self._top_k

    @top_k.setter
    def top_k(self, value: int) -> None:
        self._top_k = positive_int(value, "top_k")

    def _require_priors(self) -> np.ndarray:
        if self.priors is None:
            raise ValueError("this BBoxUtility has no priors: pass priors=prior_boxes(model)")
        return self.priors

    @staticmethod
    def _check_boxes(boxes: np.ndarray, what: str = "box", clip: bool = False) -> np.ndarray:
        """``(n, >=4)`` float64 boxes, corners clipped to [0, 1] when ``clip``; raises
        ``ValueError`` naming the first box that is not finite or (after clipping) empty."""
        boxes = np.atleast_2d(np.asarray(boxes, dtype=np.float64))
        if boxes.shape[-1] < 4:
            raise ValueError(f"{what} needs 4 corners [xmin, ymin, xmax, ymax], "
                             f"got shape {boxes.shape}")
        finite = np.isfinite(boxes[:, :4]).all(axis=1)
        if clip:
            boxes = boxes.copy()
            np.clip(boxes[:, :4], 0.0, 1.0, out=boxes[:, :4])
        bad = np.flatnonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
                             | ~finite)
        if bad.size:
            inside = " inside [0, 1]" if clip else ""
            raise ValueError(f"{what} {bad[0]} is degenerate or not finite (need xmin < xmax and "
                             f"ymin < ymax{inside}): {boxes[bad[0], :4].tolist()}")
        return boxes

    def iou(self, box: np.ndarray) -> np.ndarray:
        """IoU of one box ``(4,)`` (normalised corners) with every prior, ``(num_priors,)``."""
        box = self._check_boxes(box)
        return iou_matrix(box, self._require_priors())[0]

    def _encode(self, boxes: np.ndarray, prior_index: np.ndarray) -> np.ndarray:
        """Offsets ``(k, 4)`` of ``boxes`` ``(k, 4)`` against the priors ``prior_index``."""
        center = 0.5 * (boxes[:, :2] + boxes[:, 2:4])
        center -= self._prior_center[prior_index]
        center /= self._prior_scale[prior_index]
        wh = boxes[:, 2:4] - boxes[:, :2]
        wh /= self._prior_wh[prior_index]
        log_wh = np.log(wh)
        log_wh /= self._priors[prior_index, 6:8]
        return np.concatenate([center, log_wh], axis=1)

    def _match(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The original matching rule, as sparse ``(box, prior, iou)`` triples: for each box the
        priors with IoU above ``overlap_threshold``, or its single best prior when none is.

        One box at a time against the prior columns (scalar-array NumPy is the fast path), and
        IoU > t tested as ``inter > t / (1 + t) * (area_box + area_prior)``, so that only the
        matched pairs are ever divided.
        """
        self._require_priors()
        x1, y1, x2, y2 = self._prior_columns
        t = self.overlap_threshold
        scaled_area = (t / (1.0 + t)) * self._prior_area
        box_ids, prior_ids, ious = [], [], []
        for i, (bx1, by1, bx2, by2) in enumerate(boxes[:, :4].tolist()):
            inter = np.minimum(x2, bx2)
            inter -= np.maximum(x1, bx1)
            np.maximum(inter, 0.0, out=inter)
            height = np.minimum(y2, by2)
            height -= np.maximum(y1, by1)
            inter *= height  # negative where only the height is: never matched below
            box_area = (bx2 - bx1) * (by2 - by1)
            matched = np.flatnonzero(inter > scaled_area + (t / (1.0 + t)) * box_area)
            if not matched.size:
                np.maximum(inter, 0.0, out=inter)
                matched = np.array([np.argmax(inter / (self._prior_area + box_area - inter))])
            inter = inter[matched]
            box_ids.append(np.full(len(matched), i))
            prior_ids.append(matched)
            ious.append(inter / (self._prior_area[matched] + box_area - inter))
        return np.concatenate(box_ids), np.concatenate(prior_ids), np.concatenate(ious)

    def encode_box(self, box: np.ndarray, return_iou: bool = True) -> np.ndarray:
        """Encodes one ground-truth box against every prior.

        Args:
            box: ``(4,)`` normalised corners (clipped to [0, 1] first).
            return_iou: append the IoU of each assigned prior as a last column.

        Returns:
            ``(num_priors, 4 + return_iou)``: for the priors whose IoU exceeds
            ``overlap_threshold`` (or, if none does, the single best prior), the offsets
            ``((box_c - prior_c) / prior_wh / var_xy, log(box_wh / prior_wh) / var_wh)`` and the
            IoU; zero rows elsewhere.
        """
        box = self._check_boxes(box, clip=True)[:1, :4]
        priors = self._require_priors()
        _, prior, iou = self._match(box)
        out = np.zeros((len(priors), 4 + bool(return_iou)))
        out[prior, :4] = self._encode(np.repeat(box, len(prior), axis=0), prior)
        if return_iou:
            out[prior, 4] = iou
        return out

    def assign_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """Training targets for one image.

        Args:
            boxes: ``(n, 4 + num_classes - 1)``: normalised corners (clipped to [0, 1] first;
                a box empty after clipping raises ``ValueError``), then the one-hot class
                without the background column.

        Returns:
            ``(num_priors, 4 + num_classes + 8)`` float32: encoded offsets (0-3), one-hot class with
            background in column 4 (1 for unassigned priors), 1 in column -8 for assigned
            priors, zeros in the last 7 columns. Each prior takes the box, among the boxes that
            matched it, with the highest IoU.
        """
        priors = self._require_priors()
        columns = layout.prediction_columns(self.num_classes)
        if self._background is None or self._background.shape[1] != columns:
            self._background = np.zeros((len(priors), columns), np.float32)
            self._background[:, layout.BACKGROUND_COLUMN] = 1.0
        assignment = self._background.copy()
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.size == 0:
            return assignment
        if boxes.ndim != 2 or boxes.shape[1] != 4 + self.num_classes - 1:
            raise ValueError(f"boxes must be (n, 4 + num_classes - 1) = (n, "
                             f"{3 + self.num_classes}) rows of corners and one-hot classes, "
                             f"got shape {boxes.shape}")
        boxes = self._check_boxes(boxes, "ground-truth box", clip=True)
        box, prior, iou = self._match(boxes[:, :4])
        if len(boxes) > 1:
            # each prior takes its box of highest IoU (the first box on ties)
            order = np.lexsort((box, -iou, prior))
            first = np.ones(len(order), dtype=bool)
            first[1:] = prior[order[1:]] != prior[order[:-1]]
            box, prior, iou = box[order[first]], prior[order[first]], iou[order[first]]
        positive = iou > 0  # a best prior of IoU 0 assigns nothing
        assigned, owner = prior[positive], box[positive]
        rows = np.zeros((len(assigned), assignment.shape[1]))
        rows[:, :4] = self._encode(boxes[owner, :4], assigned)
        rows[:, layout.BACKGROUND_COLUMN + 1:layout.BACKGROUND_COLUMN + self.num_classes] = boxes[owner, 4:]
        rows[:, layout.POSITIVE_COLUMN] = 1.0
        assignment[assigned] = rows
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
        return decode(mbox_loc, mbox_priorbox, variances, np)

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
        if predictions.shape[-1] != layout.prediction_columns(self.num_classes):
            raise ValueError(
                f"predictions have {predictions.shape[-1]} columns, which is "
                f"{layout.class_count(predictions.shape[-1])} classes, but this BBoxUtility has num_classes="
                f"{self.num_classes} (expected {layout.prediction_columns(self.num_classes)} columns)")
        loc, conf, prior_corners, variances = layout.split_predictions(predictions)
        decoded = self.decode_boxes(loc, prior_corners, variances)
        columns = layout.DETECTION_COLUMNS_WITH_INDEX if return_indices else layout.DETECTION_COLUMNS
        classes = np.array([c for c in range(self.num_classes) if c != background_label_id])
        results = []
        for boxes, scores in zip(decoded, conf):
            class_index, prior = multiclass_nms(boxes, scores[:, classes], confidence_threshold,
                                                self.nms_thresh, self.top_k, keep_top_k)
            label = classes[class_index]
            rows = np.column_stack([label, scores[prior, label], boxes[prior], prior])
            results.append(rows[:, :columns].astype(np.float64))
        return results



def __getattr__(name: str):
    if name == "DetectionOutput":  # its home before the layer moved beside the other layers
        from .ssd_layers import DetectionOutput

        return DetectionOutput
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
