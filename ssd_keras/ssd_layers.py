"""The two custom layers of SSD300: ``Normalize`` and ``PriorBox``.

Both are Keras 3 layers, registered serializable under the package ``ssd_keras``, so that a model
that uses them saves to ``.keras`` and loads again without ``custom_objects``.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

__all__ = ["Normalize", "PriorBox", "prior_box_grid"]

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


def _expand_aspect_ratios(max_size, aspect_ratios, flip) -> list[float]:
    """The original port's ratio list: ``[1]``, a second ``1`` with ``max_size``, then each new
    ratio and (with ``flip``) its inverse."""
    ratios = [1.0]
    if max_size:
        ratios.append(1.0)
    for ratio in aspect_ratios or ():
        if ratio in ratios:
            continue
        ratios.append(float(ratio))
        if flip:
            ratios.append(1.0 / ratio)
    return ratios


def prior_box_grid(img_size: Sequence[float], feature_size: Sequence[int], min_size: float,
                   max_size: float | None = None, aspect_ratios: Sequence[float] | None = None,
                   flip: bool = True, variances: Sequence[float] = (0.1,),
                   clip: bool = True) -> np.ndarray:
    """Default boxes of one SSD head, computed in NumPy (float64) exactly as the original port.

    Args:
        img_size: ``(width, height)`` of the network input in pixels.
        feature_size: ``(width, height)`` of the feature map the head reads.
        min_size, max_size, aspect_ratios, flip, variances, clip: see :class:`PriorBox`.

    Returns:
        ``(feature_h * feature_w * num_ratios, 8)`` rows ``[xmin, ymin, xmax, ymax, v0, v1, v2,
        v3]``: corners normalised by the image size, grid row-major (y outer, x inner), the
        priors of one cell consecutive.
    """
    img_width, img_height = img_size
    layer_width, layer_height = feature_size
    ratios = _expand_aspect_ratios(max_size, aspect_ratios, flip)
    widths, heights = [], []
    for ratio in ratios:
        if ratio == 1 and not widths:
            widths.append(min_size)
            heights.append(min_size)
        elif ratio == 1:
            side = np.sqrt(min_size * max_size)
            widths.append(side)
            heights.append(side)
        else:
            widths.append(min_size * np.sqrt(ratio))
            heights.append(min_size / np.sqrt(ratio))
    half_w = 0.5 * np.asarray(widths)
    half_h = 0.5 * np.asarray(heights)

    step_x = img_width / layer_width
    step_y = img_height / layer_height
    lin_x = np.linspace(0.5 * step_x, img_width - 0.5 * step_x, layer_width)
    lin_y = np.linspace(0.5 * step_y, img_height - 0.5 * step_y, layer_height)
    centers_x, centers_y = np.meshgrid(lin_x, lin_y)  # (h, w), y outer
    cx = centers_x.reshape(-1, 1)
    cy = centers_y.reshape(-1, 1)

    boxes = np.stack([(cx - half_w) / img_width, (cy - half_h) / img_height,
                      (cx + half_w) / img_width, (cy + half_h) / img_height], axis=-1)
    boxes = boxes.reshape(-1, 4)  # (cells * ratios, 4), priors of one cell consecutive
    if clip:
        boxes = np.clip(boxes, 0.0, 1.0)
    variances = np.broadcast_to(np.asarray(variances, dtype=np.float64), (len(boxes), 4))
    return np.concatenate([boxes, variances], axis=1)


@keras.saving.register_keras_serializable(package="ssd_keras")
class PriorBox(keras.layers.Layer):
    """Default (prior) boxes of one SSD head, as a constant tiled over the batch.

    The boxes depend only on the static spatial size of the input feature map; they are
    computed once in ``build`` (see :func:`prior_box_grid`) and the call tiles them to the
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
        self.aspect_ratios = _expand_aspect_ratios(self.max_size, self.aspect_ratios_arg, flip)
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
