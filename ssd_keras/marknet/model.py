"""The MarkNet model: a compact convolutional classifier of marks, or a ``keras.applications`` backbone.

:func:`MarkNet` builds it with the functional API: a stride-2 stem, then blocks of two 3x3
convolutions with batch normalisation and ReLU (max pooling between blocks), global average
pooling, dropout, a ``Dense`` layer ``"logits"`` and a separate ``Activation("softmax",
name="predictions")``, so that :class:`ssd_keras.gradcam.GradCAM` explains the logits. With
``backbone="vgg16"`` or ``"mobilenetv2"`` the convolutions are those of a ``keras.applications``
network instead (random weights unless ``weights="imagenet"``).

Inputs are float32 RGB images scaled to [-1, 1] by :func:`marknet_preprocess`, whatever the
backbone: MobileNetV2 expects exactly that, and the VGG16 variant starts with a fixed 1x1
convolution ``"to_caffe"`` that turns it into the Caffe-mode input VGG16's ImageNet weights were
trained on (BGR, minus the ImageNet mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from ..image import CAFFE_MEAN_BGR, _as_numeric, _check_channels_last

__all__ = [
    "BACKBONES",
    "BN_MOMENTUM",
    "DEFAULT_FILTERS",
    "LOGITS_LAYER",
    "PREDICTIONS_LAYER",
    "MarkNet",
    "marknet_preprocess",
]

BACKBONES: tuple[str, ...] = ("vgg16", "mobilenetv2")
"""The ``keras.applications`` networks ``MarkNet(backbone=...)`` can be built on."""
DEFAULT_FILTERS: tuple[int, ...] = (32, 64, 128, 256)
"""Filters of the compact network's blocks (the stem has ``filters[0]``)."""
LOGITS_LAYER = "logits"
"""The name of the ``Dense`` layer whose outputs (the logits) Grad-CAM explains."""
PREDICTIONS_LAYER = "predictions"
"""The name of the final softmax ``Activation`` layer."""
BN_MOMENTUM = 0.9
"""Batch normalisation's moving-average momentum: 0.9 (Keras: 0.99) so that the inference
statistics settle within the few hundred steps of a short run."""
_HALF_RANGE = 127.5  # [0, 255] -> [-1, 1]


def marknet_preprocess(x: Any) -> np.ndarray:
    """MarkNet's input transform: RGB ``[0, 255]`` scaled to ``[-1, 1]`` (``x / 127.5 - 1``).

    The same for every backbone (see the module docstring); no channel swap, no mean.

    Args:
        x: RGB images ``(H, W, 3)`` or ``(N, H, W, 3)``, any numeric dtype; not modified.

    Returns:
        A new float32 array of the same shape.

    Raises:
        ValueError: ``x`` is not 3-D/4-D with 3 channels last.
        TypeError: ``x`` is not numeric.
    """
    x = _as_numeric(x, "x")
    _check_channels_last(x, "x")
    return x.astype(np.float32) / np.float32(_HALF_RANGE) - np.float32(1.0)


def _conv_bn_relu(x: Any, filters: int, name: str, strides: int = 1) -> Any:
    """3x3 convolution (no bias), batch normalisation, ReLU: layers ``<name>_conv/_bn/_relu``."""
    x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _compact_features(inputs: Any, filters: Sequence[int]) -> Any:
    """The compact network: stem (stride 2), then per block ``i`` a max pool (from block 2 on) and
    two ``_conv_bn_relu`` (``block<i>_1``, ``block<i>_2``). Output stride ``2 ** len(filters)``."""
    x = _conv_bn_relu(inputs, filters[0], "stem", strides=2)
    for index, count in enumerate(filters, start=1):
        if index > 1:
            x = keras.layers.MaxPooling2D(name=f"block{index}_pool")(x)
        x = _conv_bn_relu(x, count, f"block{index}_1")
        x = _conv_bn_relu(x, count, f"block{index}_2")
    return x


def _caffe_input(inputs: Any) -> tuple[Any, keras.layers.Layer]:
    """A frozen 1x1 convolution from ``[-1, 1]`` RGB to Caffe-mode BGR minus the ImageNet mean."""
    layer = keras.layers.Conv2D(3, 1, name="to_caffe", trainable=False)
    return layer(inputs), layer


def _set_caffe_weights(layer: keras.layers.Layer) -> None:
    # output channel c (B, G, R) = 127.5 * input channel 2 - c (R, G, B) + 127.5 - mean[c]
    kernel = (_HALF_RANGE * np.eye(3)[::-1]).reshape(1, 1, 3, 3).astype(np.float32)
    bias = (_HALF_RANGE - np.array(CAFFE_MEAN_BGR)).astype(np.float32)
    layer.set_weights([kernel, bias])


def MarkNet(num_classes: int, input_shape: tuple[int, int, int] = (224, 224, 3), backbone: str | None = None,
            weights: str | None = None, filters: Sequence[int] = DEFAULT_FILTERS, dropout: float = 0.2,
            name: str = "marknet") -> keras.Model:
    """Builds MarkNet, a mark classifier.

    Args:
        num_classes: number of classes (>= 2; no background class).
        input_shape: ``(height, width, 3)``; inputs are :func:`marknet_preprocess`-ed (RGB in
            [-1, 1]). The compact network needs sides divisible by ``2 ** len(filters)`` for its
            pooling to tile exactly (other sizes work, cropping a border row or column).
        backbone: ``None`` for the compact network, or one of :data:`BACKBONES` for a
            ``keras.applications`` network (without its top) under the same head.
        weights: a backbone's initial weights: ``None`` (random) or ``"imagenet"`` (downloaded
            by Keras on first use). Must be ``None`` without a backbone.
        filters: the compact network's block widths (ignored with a backbone).
        dropout: dropout rate before the logits (0 for none).
        name: the model's name.

    Returns:
        A functional ``keras.Model``: ``(N, height, width, 3)`` float32 ->
        ``(N, num_classes)`` softmax probabilities. Its last layers are
        ``"avg_pool"`` (global average pooling), ``"dropout"``, ``"logits"`` (``Dense``) and
        ``"predictions"`` (``Activation("softmax")``). Grad-CAM's default layer (the last with a
        4-D output) is the last ReLU of the compact network (``block<n>_2_relu``), ``block5_pool``
        of VGG16 or ``out_relu`` of MobileNetV2.

    Raises:
        ValueError: a bad argument (the message names it).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 3 or input_shape[2] != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (height, width, 3), got {input_shape}")
    if backbone is not None and backbone not in BACKBONES:
        raise ValueError(f"backbone must be None or one of {', '.join(BACKBONES)}, got {backbone!r}")
    if weights not in (None, "imagenet"):
        raise ValueError(f"weights must be None or 'imagenet', got {weights!r} (load trained weights with "
                         f"load_marknet or ssd_keras.load_weights)")
    if weights is not None and backbone is None:
        raise ValueError("weights='imagenet' needs a backbone (vgg16 or mobilenetv2); the compact network "
                         "has no pretrained weights")
    filters = tuple(int(f) for f in filters)
    if not filters or min(filters) < 1:
        raise ValueError(f"filters must be a non-empty sequence of positive integers, got {filters}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")

    inputs = keras.Input(input_shape, name="image")
    caffe = None
    if backbone is None:
        x = _compact_features(inputs, filters)
    elif backbone == "vgg16":
        x, caffe = _caffe_input(inputs)
        x = keras.applications.VGG16(include_top=False, weights=weights, input_tensor=x).output
    else:
        x = keras.applications.MobileNetV2(include_top=False, weights=weights, input_tensor=inputs,
                                           input_shape=input_shape).output
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Dense(int(num_classes), name=LOGITS_LAYER)(x)
    outputs = keras.layers.Activation("softmax", name=PREDICTIONS_LAYER)(x)
    model = keras.Model(inputs, outputs, name=name)
    if caffe is not None:
        _set_caffe_weights(caffe)
    return model
