"""The custom layers of SSD300: ``Normalize`` and ``PriorBox``, and ``DetectionOutput`` (the
in-graph decoder that :func:`ssd_keras.ssd.with_detection_output` appends).

All are Keras 3 layers, registered serializable under the package ``ssd_keras``, so that a model
that uses them saves to ``.keras`` and loads again without ``custom_objects``.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from . import layout
from .boxes import decode
from .checks import fraction, non_negative_int, positive_int
from .priors import expand_aspect_ratios, prior_box_grid  # prior_box_grid: its old home

__all__ = ["Normalize", "PriorBox", "DetectionOutput", "prior_box_grid"]

L2_EPSILON = 1e-12  # as in tf.math.l2_normalize


@keras.saving.register_keras_serializable(package="ssd_keras")
class Normalize(keras.layers.Layer):
    """L2 normalisation over channels with a learnable per-channel scale (ParseNet).

    ``y = x / sqrt(max(sum_c x_c**2, 1e-12)) * gamma`` with ``gamma`` of shape ``(channels,)``
    initialised to ``scale``. SSD300 applies it to ``conv4_3`` with ``scale=20``.

    Args:
        scale: initial value of every entry of ``gamma``.

    Input shape: ``(batch, height, width, channels)``. Output shape: the same.
    The layer has one weight, ``gamma`` (the original's ``<name>_gamma``).
    """

    def __init__(self, scale: float, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"Normalize layer {self.name!r} needs a known channel count, "
                             f"got input shape {input_shape}")
        self.gamma = self.add_weight(
            name="gamma",
            shape=(channels,),
            initializer=keras.initializers.Constant(self.scale),
            trainable=True,
        )

    def call(self, x):
        # In float32 even under a mixed-precision policy: a float16 sum of squares over 512
        # channels overflows, and the epsilon underflows.
        x32 = ops.cast(x, "float32")
        squared = ops.sum(ops.square(x32), axis=-1, keepdims=True)
        normalized = x32 * ops.rsqrt(ops.maximum(squared, L2_EPSILON))
        return ops.cast(normalized * ops.cast(self.gamma, "float32"), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="ssd_keras")
class PriorBox(keras.layers.Layer):
    """Default (prior) boxes of one SSD head, as a constant tiled over the batch.

    The boxes depend only on the static spatial size of the input feature map; they are
    computed once in ``build`` (see :func:`ssd_keras.priors.prior_box_grid`) and the call tiles them to the
    dynamic batch size.

    Args:
        img_size: ``(width, height)`` of the network input in pixels.
        min_size: side of the first square prior in pixels (> 0).
        max_size: with it, a second square prior of side ``sqrt(min_size * max_size)``.
        aspect_ratios: extra ratios ``r`` (boxes ``min_size*sqrt(r)`` wide, ``min_size/sqrt(r)``
            high); ratios already present are skipped.
        flip: also add ``1/r`` for every added ratio.
        variances: one value (used for all four) or four values, appended to every box.
        clip: clip the corners to [0, 1]. (The original port ignored ``clip=False``.)

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, height * width * num_priors, 8)``, float32 under any dtype policy, rows
    ``[xmin, ymin, xmax, ymax, var0, var1, var2, var3]``.
    """

    def __init__(self, img_size: Sequence[float], min_size: float, max_size: float | None = None,
                 aspect_ratios: Sequence[float] | None = None, flip: bool = True,
                 variances: Sequence[float] = (0.1,), clip: bool = True, **kwargs):
        super().__init__(**kwargs)
        if min_size is None or min_size <= 0:
            raise ValueError(f"PriorBox {self.name!r}: min_size must be positive, got {min_size}")
        if max_size is not None and max_size < min_size:
            raise ValueError(f"PriorBox {self.name!r}: max_size ({max_size}) must not be smaller "
                             f"than min_size ({min_size})")
        variances = [float(v) for v in np.ravel(variances)]
        if len(variances) not in (1, 4):
            raise ValueError(f"PriorBox {self.name!r}: give one or four variances, "
                             f"got {len(variances)}: {variances}")
        if len(img_size) != 2:
            raise ValueError(f"PriorBox {self.name!r}: img_size is (width, height), got {img_size}")
        self.img_size = tuple(float(s) for s in img_size)
        self.min_size = float(min_size)
        self.max_size = None if max_size is None else float(max_size)
        self.aspect_ratios_arg = None if aspect_ratios is None else [float(a) for a in aspect_ratios]
        self.flip = bool(flip)
        self.variances = variances
        self.clip = bool(clip)
        # The full ratio list, as the original's ``aspect_ratios`` attribute.
        self.aspect_ratios = expand_aspect_ratios(self.max_size, self.aspect_ratios_arg, flip)
        self.priors: np.ndarray | None = None

    @property
    def num_priors(self) -> int:
        """Priors per feature-map cell."""
        return len(self.aspect_ratios)

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            raise ValueError(f"PriorBox {self.name!r} needs a static feature-map size, "
                             f"got input shape {input_shape}")
        self.priors = prior_box_grid(self.img_size, (width, height), self.min_size, self.max_size,
                                     self.aspect_ratios_arg, self.flip, self.variances,
                                     self.clip).astype(np.float32)

    def call(self, x):
        # Always float32, even under a mixed-precision policy: corners need the precision.
        priors = ops.convert_to_tensor(self.priors[np.newaxis], dtype="float32")
        batch = ops.shape(x)[0]
        return ops.broadcast_to(priors, (batch,) + tuple(self.priors.shape))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] * input_shape[2] * self.num_priors, 8)

    def get_config(self):
        return {
            **super().get_config(),
            "img_size": list(self.img_size),
            "min_size": self.min_size,
            "max_size": self.max_size,
            "aspect_ratios": self.aspect_ratios_arg,
            "flip": self.flip,
            "variances": list(self.variances),
            "clip": self.clip,
        }


@keras.saving.register_keras_serializable(package="ssd_keras")
class DetectionOutput(keras.layers.Layer):
    """In-graph :meth:`BBoxUtility.detection_out`: decoding, per-class NMS, top detections.

    On TensorFlow it uses ``tf.image.combined_non_max_suppression`` (imported when the layer is
    first called), so a model ending in this layer exports as one SavedModel from image to
    detections; on the other Keras backends, :func:`ssd_keras.nms.detection_rows` (``keras.ops``,
    the same detections).

    Args:
        num_classes: classes including background.
        background_label_id, keep_top_k, confidence_threshold: as in ``detection_out``.
        nms_thresh, top_k: as in :class:`BBoxUtility`.

    Input shape: ``(batch, num_priors, 4 + num_classes + 8)`` predictions of SSD300.
    Output shape: ``(batch, keep_top_k, 6)`` float32 rows ``[label, confidence, xmin, ymin,
    xmax, ymax]`` sorted by confidence, padded with zero rows (label 0 never occurs in a real
    row).
    """

    def __init__(self, num_classes: int, background_label_id: int = 0, keep_top_k: int = 200,
                 confidence_threshold: float = 0.01, nms_thresh: float = 0.45, top_k: int = 400,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = positive_int(num_classes, "num_classes")
        if self.num_classes < 2:
            raise ValueError(f"num_classes counts background too and must be >= 2, got {num_classes}")
        self.background_label_id = non_negative_int(background_label_id, "background_label_id")
        if self.background_label_id >= self.num_classes:
            raise ValueError(f"background_label_id must be in [0, {num_classes}), got {background_label_id}")
        self.keep_top_k = positive_int(keep_top_k, "keep_top_k")
        self.confidence_threshold = float(confidence_threshold)
        self.nms_thresh = fraction(nms_thresh, "nms_thresh")
        self.top_k = positive_int(top_k, "top_k")
        self._classes = [c for c in range(self.num_classes) if c != self.background_label_id]

    def call(self, predictions):
        if keras.backend.backend() != "tensorflow":
            from .nms import detection_rows

            predictions = ops.cast(predictions, "float32")
            loc, _, prior_corners, variances = layout.split_predictions(predictions)
            scores = ops.take(layout.confidences(predictions, self.num_classes), self._classes, axis=-1)
            return detection_rows(decode(loc, prior_corners, variances, ops), scores, self._classes,
                                  self.confidence_threshold, self.nms_thresh, self.top_k, self.keep_top_k)
        import tensorflow as tf

        predictions = tf.convert_to_tensor(predictions, tf.float32)
        loc, _, prior_corners, variances = layout.split_predictions(predictions)
        boxes = decode(loc, prior_corners, variances, ops)
        scores = tf.gather(layout.confidences(predictions, self.num_classes), self._classes, axis=-1)
        nmsed_boxes, nmsed_scores, nmsed_classes, valid = tf.image.combined_non_max_suppression(
            boxes[:, :, tf.newaxis, :], scores, max_output_size_per_class=self.top_k,
            max_total_size=self.keep_top_k, iou_threshold=self.nms_thresh,
            score_threshold=self.confidence_threshold, pad_per_class=False, clip_boxes=False)
        labels = tf.gather(tf.constant(self._classes, tf.float32),
                           tf.cast(nmsed_classes, tf.int32))
        rows = tf.concat([labels[..., tf.newaxis], nmsed_scores[..., tf.newaxis], nmsed_boxes],
                         axis=-1)
        real = tf.range(self.keep_top_k)[tf.newaxis, :] < valid[:, tf.newaxis]
        rows = tf.where(real[..., tf.newaxis], rows, tf.zeros_like(rows))
        # equal confidences in class order, as detection_out (padding rows stay last)
        for column, sign in ((layout.LABEL, 1.0), (layout.CONFIDENCE, -1.0)):
            order = tf.argsort(sign * rows[..., column], axis=1, stable=True)
            rows = tf.gather(rows, order, batch_dims=1)
        return rows

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.keep_top_k, layout.DETECTION_COLUMNS)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "background_label_id": self.background_label_id, "keep_top_k": self.keep_top_k,
                "confidence_threshold": self.confidence_threshold,
                "nms_thresh": self.nms_thresh, "top_k": self.top_k}
