"""What Grad-CAM explains: the target score of a model, and how to select it.

For an SSD model the score is one class at one prior (a detection), by default its pre-softmax
logit from layer :data:`LOGITS_LAYER`; for a classifier, one class (its logit when the last
layer is a softmax). :class:`Target` finds those tensors in a model, checks the indices asked for
and picks each image's score; :mod:`ssd_keras.gradcam` takes the gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from . import layout
from ._keras_compat import producing_layer
from .ssd import PRIORBOX_SUFFIX, prior_layers

__all__ = ["LOGITS_LAYER", "PRIORBOX_SUFFIX", "Head", "Target", "index_array"]

#: Layer of an SSD model whose output holds the pre-softmax class scores ``(N, priors, classes)``.
LOGITS_LAYER = "mbox_conf_logits"


@dataclass(frozen=True)
class Head:
    """One SSD head: its source layer, the feature map Grad-CAM reads, and its prior indices."""

    source: str
    feature_layer: str
    start: int
    stop: int


def _is_softmax(activation: Any) -> bool:
    return getattr(activation, "__name__", None) == "softmax"


class Target:
    """The score a model is explained by, and how to select it.

    For an SSD model (3-D predictions ``(N, num_priors, 4 + num_classes + 8)``) the scores are
    ``(N, num_priors, num_classes)``: the logits of layer :data:`LOGITS_LAYER`, or the softmax
    columns of the predictions. For a classifier (2-D output ``(N, num_classes)``) the scores are
    the logits when the last layer is a softmax (an ``Activation``/``Softmax`` layer, or a
    ``Dense`` with softmax activation), else the output itself.
    """

    def __init__(self, model: keras.Model):
        if not isinstance(model, keras.Model):
            raise ValueError(f"expected a keras.Model, got {type(model).__name__}")
        if len(model.outputs) != 1:
            raise ValueError(f"model {model.name!r} has {len(model.outputs)} outputs; Grad-CAM explains "
                             f"models with one output (SSD predictions or classifier scores)")
        self.model = model
        output = model.outputs[0]
        self.rank = len(output.shape)
        if self.rank == 3:
            self._init_ssd(output)
        elif self.rank == 2:
            self._init_classifier(output)
        else:
            raise ValueError(f"model {model.name!r} has output shape {tuple(output.shape)}: expected SSD "
                             f"predictions (N, priors, 4 + classes + 8) or classifier scores (N, classes)")

    @property
    def is_ssd(self) -> bool:
        return self.rank == 3

    def _init_ssd(self, output: Any) -> None:
        model = self.model
        self.num_classes = layout.class_count(output.shape[-1])
        self.num_priors = int(output.shape[1])
        names = {layer.name for layer in model.layers}
        priorboxes = prior_layers(model) if "mbox_priorbox" in names else []
        if not priorboxes or self.num_classes < 1:
            raise ValueError(f"model {model.name!r} has 3-D output {tuple(output.shape)} but is not an SSD "
                             f"model built by SSD300 (no PriorBox layers concatenated by 'mbox_priorbox')")
        heads, start = [], 0
        for layer in priorboxes:  # in the order of the predictions, whatever the prior configuration
            count = int(layer.output.shape[1])
            source = layer.name[:-len(PRIORBOX_SUFFIX)] if layer.name.endswith(PRIORBOX_SUFFIX) else layer.name
            heads.append(Head(source, self._feature_layer(layer), start, start + count))
            start += count
        if start != self.num_priors:
            raise ValueError(f"the PriorBox layers of model {model.name!r} give {start} priors but its "
                             f"predictions have {self.num_priors}")
        self.heads = tuple(heads)
        self._logits = model.get_layer(LOGITS_LAYER).output if LOGITS_LAYER in names else None
        self.score_outputs = [output] + ([self._logits] if self._logits is not None else [])

    def _feature_layer(self, priorbox: keras.layers.Layer) -> str:
        """The nearest convolution below a head's PriorBox layer (conv4_3 for conv4_3_norm,
        conv8_2 for pool6): the spatial feature map the head reads."""
        source = priorbox.name
        layer = priorbox
        while not isinstance(layer, keras.layers.Conv2D):
            inputs = keras.tree.flatten(layer.input)
            if len(inputs) != 1:
                raise ValueError(f"cannot find the convolution that feeds head {source!r}: layer "
                                 f"{layer.name!r} has {len(inputs)} inputs")
            layer = producing_layer(inputs[0])
        return layer.name

    def _init_classifier(self, output: Any) -> None:
        self.num_classes = int(output.shape[-1])
        self.num_priors = None
        self.heads = ()
        last = producing_layer(output)
        self._dense = None
        if isinstance(last, keras.layers.Softmax) or (
                isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)):
            self._logits = last.input
        elif isinstance(last, keras.layers.Dense) and _is_softmax(last.activation):
            self._logits = last.input  # the Dense's input: the logits are computed in the tape
            self._dense = last
        else:
            self._logits = None
        self.score_outputs = [output] + ([self._logits] if self._logits is not None else [])

    def scores(self, outputs: Sequence[tf.Tensor], use_logits: bool) -> tf.Tensor:
        """The scores ``(N, priors, classes)`` or ``(N, classes)`` from the ``score_outputs``."""
        if self.is_ssd:
            if use_logits:
                if self._logits is None:
                    raise ValueError(f"model {self.model.name!r} has no layer {LOGITS_LAYER!r}; pass "
                                     f"use_logits=False to explain the probabilities")
                return tf.cast(outputs[1], tf.float32)
            return tf.cast(layout.confidences(outputs[0], self.num_classes), tf.float32)
        if not use_logits or self._logits is None:
            return tf.cast(outputs[0], tf.float32)
        logits = outputs[1]
        if self._dense is not None:
            logits = tf.matmul(tf.cast(logits, self._dense.kernel.dtype), self._dense.kernel)
            if self._dense.use_bias:
                logits = logits + self._dense.bias
        return tf.cast(logits, tf.float32)

    def indices(self, count: int, class_index: Any, prior_index: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-image class and prior indices, checked against the model."""
        classes = index_array(class_index, count, self.num_classes, "class_index",
                               f"model {self.model.name!r} has {self.num_classes} classes")
        if prior_index is None:
            return classes, None
        if not self.is_ssd:
            raise ValueError(f"prior_index applies to SSD models only; model {self.model.name!r} is a "
                             f"classifier with output (N, {self.num_classes})")
        priors = index_array(prior_index, count, self.num_priors, "prior_index",
                              f"model {self.model.name!r} has {self.num_priors} priors")
        return classes, priors

    def select(self, scores: tf.Tensor, classes: np.ndarray, priors: np.ndarray | None) -> tf.Tensor:
        """Each image's target score ``(N,)``: its class at its prior, or summed over priors."""
        rows = np.arange(len(classes))
        if not self.is_ssd:
            return tf.gather_nd(scores, np.stack([rows, classes], axis=1))
        if priors is None:
            return tf.reduce_sum(scores * tf.one_hot(classes, self.num_classes)[:, None, :], axis=[1, 2])
        return tf.gather_nd(scores, np.stack([rows, priors, classes], axis=1))

    def head_of(self, prior: int) -> Head:
        return next(h for h in self.heads if h.start <= prior < h.stop)


def index_array(value: Any, count: int, limit: int, name: str, what: str) -> np.ndarray:
    """``value`` (an integer or ``count`` integers) as an int64 array ``(count,)`` in ``[0, limit)``.

    Integral floats are accepted (detection rows are float).
    """
    array = np.asarray(value)
    if array.ndim == 0:
        array = np.full(count, array)
    if array.shape != (count,):
        raise ValueError(f"{name} must be an integer or a sequence of {count} integers (one per image), "
                         f"got shape {array.shape}")
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name} must hold integers, got {array.dtype} values {array.tolist()}")
    if not (np.all(np.isfinite(array)) and np.all(array == np.round(array))):
        raise ValueError(f"{name} must hold integers, got {array.tolist()}")
    array = array.astype(np.int64)
    bad = array[(array < 0) | (array >= limit)]
    if bad.size:
        raise ValueError(f"{name} {bad.tolist()} out of range: {what} (valid 0..{limit - 1})")
    return array
