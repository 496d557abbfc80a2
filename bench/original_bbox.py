"""The original port's box algorithms as written, the baselines of ``bench_bbox.py``.

A re-statement (not a copy) of what the Keras 1.2 ``ssd_utils.BBoxUtility`` did: ``assign_boxes``
through one ``encode_box`` call per ground-truth box (``np.apply_along_axis``, each call vectorised
over the priors, float64 throughout), and ``detection_out`` through a Python loop over images and
classes with one eager ``tf.image.non_max_suppression`` call per class. The decoding uses the
prior's height for the y-centre, as the project does, so that results can be compared.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ssd_keras.ssd_utils import BBoxUtility


class OriginalBBoxUtility:
    """The original algorithms over the same priors and thresholds."""

    def __init__(self, num_classes: int, priors: np.ndarray, overlap_threshold: float = 0.5,
                 nms_thresh: float = 0.45, top_k: int = 400):
        self.num_classes = num_classes
        self.priors = np.asarray(priors, dtype=np.float64)
        self.num_priors = len(self.priors)
        self.overlap_threshold = overlap_threshold
        self.nms_thresh = nms_thresh
        self.top_k = top_k

    def iou(self, box: np.ndarray) -> np.ndarray:
        inter_upleft = np.maximum(self.priors[:, :2], box[:2])
        inter_botright = np.minimum(self.priors[:, 2:4], box[2:])
        inter_wh = np.maximum(inter_botright - inter_upleft, 0)
        inter = inter_wh[:, 0] * inter_wh[:, 1]
        area_box = (box[2] - box[0]) * (box[3] - box[1])
        area_priors = ((self.priors[:, 2] - self.priors[:, 0])
                       * (self.priors[:, 3] - self.priors[:, 1]))
        return inter / (area_box + area_priors - inter)

    def encode_box(self, box: np.ndarray, return_iou: bool = True) -> np.ndarray:
        iou = self.iou(box)
        encoded = np.zeros((self.num_priors, 4 + return_iou))
        mask = iou > self.overlap_threshold
        if not mask.any():
            mask[iou.argmax()] = True
        if return_iou:
            encoded[:, -1][mask] = iou[mask]
        priors = self.priors[mask]
        box_center = 0.5 * (box[:2] + box[2:])
        box_wh = box[2:] - box[:2]
        prior_center = 0.5 * (priors[:, :2] + priors[:, 2:4])
        prior_wh = priors[:, 2:4] - priors[:, :2]
        encoded[:, :2][mask] = box_center - prior_center
        encoded[:, :2][mask] /= prior_wh
        encoded[:, :2][mask] /= priors[:, -4:-2]
        encoded[:, 2:4][mask] = np.log(box_wh / prior_wh)
        encoded[:, 2:4][mask] /= priors[:, -2:]
        return encoded.ravel()

    def assign_boxes(self, boxes: np.ndarray) -> np.ndarray:
        assignment = np.zeros((self.num_priors, 4 + self.num_classes + 8))
        assignment[:, 4] = 1.0
        if len(boxes) == 0:
            return assignment
        encoded = np.apply_along_axis(self.encode_box, 1, boxes[:, :4])
        encoded = encoded.reshape(-1, self.num_priors, 5)
        best_iou = encoded[:, :, -1].max(axis=0)
        best_idx = encoded[:, :, -1].argmax(axis=0)
        best_mask = best_iou > 0
        best_idx = best_idx[best_mask]
        encoded = encoded[:, best_mask, :]
        assignment[:, :4][best_mask] = encoded[best_idx, np.arange(len(best_idx)), :4]
        assignment[:, 4][best_mask] = 0
        assignment[:, 5:-8][best_mask] = boxes[best_idx, 4:]
        assignment[:, -8][best_mask] = 1
        return assignment

    def detection_out(self, predictions: np.ndarray, background_label_id: int = 0,
                      keep_top_k: int = 200, confidence_threshold: float = 0.01) -> list:
        loc, conf = predictions[:, :, :4], predictions[:, :, 4:-8]
        results = []
        for i in range(len(loc)):
            decoded = BBoxUtility.decode_boxes(loc[i], predictions[i, :, -8:-4],
                                               predictions[i, :, -4:])
            rows = []
            for c in range(self.num_classes):
                if c == background_label_id:
                    continue
                scores = conf[i, :, c]
                mask = scores > confidence_threshold
                if mask.any():
                    boxes, kept_scores = decoded[mask], scores[mask]
                    idx = tf.image.non_max_suppression(boxes, kept_scores, self.top_k,
                                                       iou_threshold=self.nms_thresh).numpy()
                    rows.extend(np.column_stack([np.full(len(idx), c), kept_scores[idx],
                                                 boxes[idx]]))
            rows = np.array(rows).reshape(-1, 6)
            results.append(rows[np.argsort(-rows[:, 1], kind="stable")][:keep_top_k])
        return results
