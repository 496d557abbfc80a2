"""The SSD multibox loss: softmax confidence loss with hard negative mining plus smooth L1.

A port of the original ``ssd_training.MultiboxLoss`` to Keras 3, written in ``keras.ops``
(no shape depends on the data: hard negatives are a rank mask), so it runs on every Keras
backend. Both ways of using it work::

    model.compile(optimizer, loss=MultiboxLoss(num_classes).compute_loss)  # the original call
    model.compile(optimizer, loss=MultiboxLoss(num_classes))               # a keras Loss

Either way the loss of one image is computed as in the original, and Keras averages it over
the batch (and takes care of the per-replica scaling under ``tf.distribute``). The number of
hard negatives is one number per batch, so under ``tf.distribute`` each replica takes its own,
from its share of the batch (as the original did on several GPUs).

Targets and predictions share one layout (:mod:`ssd_keras.layout`): encoded box offsets
(targets from :meth:`ssd_keras.ssd_utils.BBoxUtility.assign_boxes`), the one-hot class of the
target / the softmax probabilities of the prediction, and the prior columns, of which the target's
first (``layout.POSITIVE_COLUMN``) marks the priors assigned to a ground-truth box (positives);
the prediction's prior columns are ignored.

Differences from the original port, on purpose (each only where the original would fail):

- Hard negatives never include a positive prior. The original ranked ``max_conf * (1 - mask)``,
  which picks positives (of score 0) once an image has fewer non-positive priors than the
  batch-wide negative count; here such picks contribute nothing.
- The batch-wide negative count is capped at ``num_priors`` (the original's ``top_k`` failed
  when ``negatives_for_hard`` exceeded the number of priors).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from . import layout

__all__ = ["MultiboxLoss"]

PROB_EPSILON = 1e-15  # probabilities are clipped to [eps, 1 - eps] before the log


@keras.saving.register_keras_serializable(package="ssd_keras")
class MultiboxLoss(keras.losses.Loss):
    """The SSD loss of the original port: confidence loss over positives and hard negatives,
    plus ``alpha`` times the smooth L1 location loss over positives.

    For one image with ``P`` positive priors, and ``N`` the batch-wide number of hard
    negatives (see below)::

        loss = (pos_conf + neg_conf) / (P + N) + alpha * pos_loc / max(P, 1)

    where ``pos_conf`` and ``pos_loc`` sum the softmax cross-entropy and the smooth L1 loss over
    the positives, and ``neg_conf`` sums the cross-entropy over the ``N`` non-positive priors of
    the image with the highest predicted non-background confidence. ``N`` is one integer for
    the whole batch: the smallest positive value of ``min(neg_pos_ratio * P, num_priors - P)``
    over the images, or ``negatives_for_hard`` when no image has one (truncated to an integer
    and capped at ``num_priors``).

    Args:
        num_classes: classes including background.
        alpha: weight of the location loss.
        neg_pos_ratio: hard negatives per positive.
        background_label_id: the background class; only 0 is supported (as in the original).
        negatives_for_hard: hard negatives per image in a batch without positives.
        name: name of the loss.
        reduction: Keras reduction of the per-image losses (by default their mean).
        dtype: dtype of Keras' reduction; the loss itself is always computed in float32.

    Raises:
        ValueError: ``background_label_id`` is not 0, or another argument is out of range.
    """

    def __init__(self, num_classes: int, alpha: float = 1.0, neg_pos_ratio: float = 3.0,
                 background_label_id: int = 0, negatives_for_hard: float = 100.0,
                 name: str = "multibox_loss", reduction: str | None = "sum_over_batch_size",
                 dtype: Any = None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes counts background too and must be an integer >= 2, "
                             f"got {num_classes}")
        if background_label_id != 0:
            raise ValueError(f"MultiboxLoss supports only background_label_id=0 (background in "
                             f"the first class column, as assign_boxes writes it), got "
                             f"background_label_id={background_label_id}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if neg_pos_ratio < 0:
            raise ValueError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
        if negatives_for_hard < 0:
            raise ValueError(f"negatives_for_hard must be >= 0, got {negatives_for_hard}")
        self.num_classes = int(num_classes)
        self.alpha = float(alpha)
        self.neg_pos_ratio = float(neg_pos_ratio)
        self.background_label_id = int(background_label_id)
        self.negatives_for_hard = float(negatives_for_hard)

    @staticmethod
    def _l1_smooth_loss(y_true: Any, y_pred: Any) -> Any:
        """Smooth L1 loss summed over the last axis.

        Args:
            y_true: ``(..., 4)`` target offsets.
            y_pred: ``(..., 4)`` predicted offsets.

        Returns:
            ``(...)``: ``sum(0.5 d^2 if |d| < 1 else |d| - 0.5)`` with ``d = y_true - y_pred``.
        """
        diff = y_true - y_pred
        abs_diff = ops.abs(diff)
        per_coordinate = ops.where(abs_diff < 1.0, 0.5 * ops.square(diff), abs_diff - 0.5)
        return ops.sum(per_coordinate, axis=-1)

    @staticmethod
    def _softmax_loss(y_true: Any, y_pred: Any) -> Any:
        """Cross-entropy of probabilities summed over the last axis.

        Args:
            y_true: ``(..., num_classes)`` one-hot targets.
            y_pred: ``(..., num_classes)`` softmax probabilities.

        Returns:
            ``(...)``: ``-sum(y_true * log(clip(y_pred, 1e-15, 1 - 1e-15)))``.
        """
        y_pred = ops.clip(y_pred, PROB_EPSILON, 1.0 - PROB_EPSILON)
        return -ops.sum(y_true * ops.log(y_pred), axis=-1)

    def _check_columns(self, tensor: Any, what: str) -> None:
        """Raises ``ValueError`` when the static shape of ``tensor`` is not
        ``(batch, num_priors, 4 + num_classes + 8)``."""
        try:
            shape = tuple(tensor.shape)
        except (TypeError, ValueError):  # a TensorFlow tensor of unknown rank
            return
        expected = layout.prediction_columns(self.num_classes)
        if len(shape) != 3:
            raise ValueError(f"MultiboxLoss: {what} must be (batch, num_priors, {expected}), got "
                             f"shape {shape}")
        if shape[-1] is not None and shape[-1] != expected:
            raise ValueError(f"MultiboxLoss: {what} has {shape[-1]} columns, but num_classes="
                             f"{self.num_classes} needs 4 + {self.num_classes} + 8 = {expected}")

    def compute_loss(self, y_true: Any, y_pred: Any) -> Any:
        """The loss of each image (the original method).

        Args:
            y_true: ``(batch, num_priors, 4 + num_classes + 8)`` targets from
                :meth:`ssd_keras.ssd_utils.BBoxUtility.assign_boxes`.
            y_pred: ``(batch, num_priors, 4 + num_classes + 8)`` SSD predictions (any float
                dtype; computed in float32).

        Returns:
            ``(batch,)`` float32 per-image loss.
        """
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        self._check_columns(y_true, "y_true")
        self._check_columns(y_pred, "y_pred")
        conf = slice(layout.BACKGROUND_COLUMN, layout.BACKGROUND_COLUMN + self.num_classes)
        num_priors = ops.shape(y_true)[1]

        conf_loss = self._softmax_loss(y_true[:, :, conf], y_pred[:, :, conf])  # (batch, priors)
        loc_loss = self._l1_smooth_loss(y_true[:, :, layout.LOC], y_pred[:, :, layout.LOC])  # (batch, priors)

        positive = y_true[:, :, layout.POSITIVE_COLUMN]  # (batch, priors)
        num_pos = ops.sum(positive, axis=-1)  # (batch,)
        pos_loc_loss = ops.sum(loc_loss * positive, axis=-1)
        pos_conf_loss = ops.sum(conf_loss * positive, axis=-1)

        # One number of hard negatives for the whole batch: the smallest positive
        # min(ratio * P, num_priors - P) of its images, else negatives_for_hard.
        num_neg = ops.minimum(self.neg_pos_ratio * num_pos, ops.cast(num_priors, "float32") - num_pos)  # (batch,)
        has_neg = num_neg > 0.0
        smallest = ops.min(ops.where(has_neg, num_neg, float("inf")))
        num_neg_batch = ops.where(ops.any(has_neg), smallest, self.negatives_for_hard)
        k = ops.minimum(ops.floor(num_neg_batch), ops.cast(num_priors, "float32"))  # () whole number

        # Rank the non-positive priors of each image by their best non-background confidence
        # (positives rank below every probability and, if still within k, count for nothing)
        # and keep the first k: a mask, not a k-sized slice, so that no shape depends on the
        # data (JAX and XLA need static shapes). Ties rank by prior index, as top_k picks them.
        not_positive = 1.0 - positive
        max_confs = ops.max(y_pred[:, :, layout.BACKGROUND_COLUMN + 1:conf.stop], axis=-1)
        scores = ops.where(positive > 0.0, -1.0, max_confs)
        rank = ops.argsort(ops.argsort(-scores, axis=-1), axis=-1)  # (batch, priors): 0 = hardest
        hard = ops.cast(ops.cast(rank, "float32") < k, "float32")
        neg_conf_loss = ops.sum(conf_loss * not_positive * hard, axis=-1)  # (batch,)

        total_loss = (pos_conf_loss + neg_conf_loss) / (num_pos + k)
        num_pos = ops.where(ops.not_equal(num_pos, 0.0), num_pos, 1.0)
        return total_loss + self.alpha * pos_loc_loss / num_pos

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-image loss for Keras, which reduces it: see :meth:`compute_loss`.

        Args:
            y_true: ``(batch, num_priors, 4 + num_classes + 8)`` targets.
            y_pred: ``(batch, num_priors, 4 + num_classes + 8)`` predictions.

        Returns:
            ``(batch,)`` float32.
        """
        return self.compute_loss(y_true, y_pred)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (with Keras' ``name`` and ``reduction``)."""
        return {**super().get_config(), "num_classes": self.num_classes, "alpha": self.alpha,
                "neg_pos_ratio": self.neg_pos_ratio,
                "background_label_id": self.background_label_id,
                "negatives_for_hard": self.negatives_for_hard}
