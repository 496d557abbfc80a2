"""Grad-CAM, Guided Backpropagation and Guided Grad-CAM for single SSD detections and classifiers.

Everything is TensorFlow 2 eager code around one ``tf.GradientTape``; the model passed in is never
modified (no weights, activations, layers or graph nodes are added or changed).

* :class:`GradCAM` explains one *detection*: the score of one class at one prior (default box),
  by default its pre-softmax logit, with the gradients taken at the feature map that feeds that
  prior's head. Without a prior it explains a class summed over all priors; with a ``box`` it
  keeps only the part of the map inside the box (the seed's view). It works for classifiers too.
* :func:`guided_backprop` is the gradient of the same score with respect to the input pixels,
  where every ReLU lets a gradient through only where both its forward input and the incoming
  gradient are positive (Springenberg et al. 2015).
* :func:`guided_grad_cam` multiplies the two (Selvaraju et al. 2017).
* :func:`explain_detections` does this for the top rows of ``BBoxUtility.detection_out(...,
  return_indices=True)`` in one batch, and :func:`overlay` draws a map, box and caption over the
  picture with :mod:`ssd_keras.visualization`.

Example::

    rows = detect(model, [rgb], return_indices=True)[0]
    x = preprocess_input(resize_image(rgb, (300, 300)))
    for item in explain_detections(model, x, rows, VOC_CLASSES, top=3):
        picture = overlay(rgb, item["map"], box=item["detection"][layout.BOX], label=item["label"])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from . import layout
from .backends import require_tensorflow
from ._keras_compat import run_through_graph
from .gradcam_target import LOGITS_LAYER, PRIORBOX_SUFFIX, Target  # noqa: F401  (constants re-exported)
from .visualization import gradient_image, label_text, overlay  # noqa: F401  (overlay, gradient_image: re-exported)

__all__ = ["GradCAM", "guided_backprop", "guided_grad_cam", "guided_relu", "explain_detections", "overlay",
           "gradient_image", "METHODS"]

#: Methods of :func:`explain_detections`.
METHODS = ("gradcam", "guided", "guided-gradcam")


def _is_relu_layer(layer: Any) -> bool:
    """True for layers whose output is a plain ReLU: ``activation="relu"`` or ``layers.ReLU()``."""
    if isinstance(layer, keras.layers.ReLU):
        return (layer.max_value is None and float(layer.negative_slope) == 0.0
                and float(layer.threshold) == 0.0)
    return getattr(getattr(layer, "activation", None), "__name__", None) == "relu"


def _four_d_layers(model: keras.Model) -> list[str]:
    """Names of the layers with one 4-D output (candidate Grad-CAM layers), in graph order."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            output = layer.output
        except (AttributeError, ValueError):  # unbuilt, or shared by several nodes
            continue
        if not isinstance(output, (list, tuple, dict)) and len(output.shape) == 4:
            names.append(layer.name)
    return names


def _check_images(model: keras.Model, images: Any) -> tf.Tensor:
    """Preprocessed images ``(N, H, W, C)`` as float32, checked against the model input."""
    x = np.asarray(images, dtype=np.float32)
    expected = tuple(model.inputs[0].shape[1:])
    if x.ndim != 1 + len(expected) or len(x) == 0:
        raise ValueError(f"images must be a non-empty batch (N, {', '.join(map(str, expected))}) of "
                         f"preprocessed model inputs, got shape {x.shape} (one image: image[None])")
    if any(e is not None and e != s for e, s in zip(expected, x.shape[1:])):
        raise ValueError(f"images have shape {x.shape} but model {model.name!r} takes (N, "
                         f"{', '.join(map(str, expected))})")
    return tf.convert_to_tensor(x)


def _box_array(box: Any, count: int) -> np.ndarray:
    """Boxes ``(count, 4)`` from one box ``(4,)`` or one per image ``(count, 4)``."""
    boxes = np.asarray(box, dtype=np.float64)
    if boxes.shape == (4,):
        boxes = np.broadcast_to(boxes, (count, 4))
    if boxes.shape != (count, 4) or not np.all(np.isfinite(boxes)):
        raise ValueError(f"box must be normalised corners [xmin, ymin, xmax, ymax], one box or one per "
                         f"image ({count}, 4), finite, got {np.asarray(box).tolist()}")
    if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise ValueError(f"box corners must satisfy xmin <= xmax and ymin <= ymax, got {boxes.tolist()}")
    return boxes


def _normalise(maps: tf.Tensor) -> tf.Tensor:
    """Each map ``(N, h, w)`` divided by its maximum; all-zero (never NaN) when that is not positive."""
    peak = tf.reduce_max(maps, axis=[1, 2], keepdims=True)
    return tf.where(peak > 0, tf.math.divide_no_nan(maps, peak), tf.zeros_like(maps))


# --------------------------------------------------------------------------- #
# Running a model eagerly, layer by layer, with a hook
# --------------------------------------------------------------------------- #
_Hook = Callable[[keras.layers.Layer, Any], Any]


def _run_graph(model: keras.Model, inputs: list[tf.Tensor], after: _Hook) -> Any:
    """Runs ``model`` eagerly node by node; each layer's output ``y`` is replaced by ``after(layer, y)``.

    The model's own layers are called on eager tensors, as ``model(x)`` does, so the weights are
    shared and nothing is added to the model (calling a layer on eager tensors records no node).
    Nested functional and Sequential models are run the same way.

    Args:
        model: a functional or Sequential model.
        inputs: its inputs, flattened.
        after: called on every layer's output, in execution order.

    Returns:
        The model's outputs, in its output structure.
    """
    def operation(op: Any) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if isinstance(op, keras.Model):
                return after(op, _run_graph(op, keras.tree.flatten(args[0]), after))
            return after(op, op(*args, **kwargs))
        return call

    if isinstance(model, keras.Sequential):
        x = inputs[0]
        for layer in model.layers:
            x = operation(layer)(x)
        return x
    try:
        return run_through_graph(model, inputs, operation)
    except ValueError as err:
        raise ValueError(f"{err}; Grad-CAM and guided backprop need a functional or Sequential model") from None


# --------------------------------------------------------------------------- #
# Grad-CAM
# --------------------------------------------------------------------------- #
class GradCAM:
    """Grad-CAM (Selvaraju et al. 2017) of one SSD detection, or of a classifier's class.

    The map of image ``n`` is ``ReLU(sum_k a_k A^k)`` with ``A`` the activations ``(h, w, K)`` of
    the feature layer and ``a_k`` the spatial mean of ``d target / d A^k``, upsampled bilinearly
    to the input size and divided by its maximum.

    The gradient model (a ``keras.Model`` sharing the given model's layers and weights, with the
    feature maps and the scores as outputs) is built once here; each call is one forward and one
    backward pass, for the whole batch. The forward pass runs the gradient model's layers eagerly
    and the tape starts recording at the feature maps, so the backward pass covers only the layers
    between them and the target (a few convolutions for a deep head), never the weights.

    Args:
        model: an SSD model from :func:`ssd_keras.ssd.SSD300` (3-D predictions), or a classifier
            with output ``(N, classes)``. Not modified.
        layer_name: the layer whose activations are explained (4-D output). ``None`` picks, for an
            SSD model, the convolution feeding the head of each explained prior (``conv4_3`` for
            the ``conv4_3_norm`` head, then ``fc7``, ``conv6_2``, ``conv7_2``, ``conv8_2``, and
            ``conv8_2`` for ``pool6``), and ``conv4_3`` when no prior is given (all heads depend on
            it); for a classifier, the last layer with a 4-D output.

    Raises:
        ValueError: the model is neither an SSD model nor a classifier, or ``layer_name`` is not a
            layer with a 4-D output (the message lists the valid names).

    Example::

        cam = GradCAM(model)
        maps = cam(x, class_index=rows[:, layout.LABEL], prior_index=rows[:, layout.PRIOR_INDEX])  # (N, 300, 300)
    """

    def __init__(self, model: keras.Model, layer_name: str | None = None):
        require_tensorflow("Grad-CAM (tf.GradientTape)")
        self.model = model
        self._target = Target(model)
        choices = _four_d_layers(model)
        if layer_name is not None:
            if layer_name not in choices:
                raise ValueError(f"layer_name {layer_name!r} is not a layer of model {model.name!r} with a "
                                 f"4-D output; valid choices: {', '.join(choices)}")
            features = [layer_name]
        elif self._target.is_ssd:
            features = list(dict.fromkeys(h.feature_layer for h in self._target.heads))
        elif choices:
            features = [choices[-1]]
        else:
            raise ValueError(f"model {model.name!r} has no layer with a 4-D output to explain")
        self.layer_name = layer_name
        self.feature_layers: tuple[str, ...] = tuple(features)
        outputs = [model.get_layer(name).output for name in features] + self._target.score_outputs
        self._gradient_model = keras.Model(model.inputs, outputs, name=f"{model.name}_gradcam")

    def layers_for(self, prior_index: np.ndarray | None, count: int) -> list[str]:
        """The feature layer used for each of ``count`` images, given their (checked) prior
        indices or None."""
        if self.layer_name is not None or not self._target.is_ssd:
            return [self.feature_layers[0]] * count
        if prior_index is None:
            return [self._target.heads[0].feature_layer] * count
        return [self._target.head_of(int(p)).feature_layer for p in prior_index]

    def feature_gradients(self, images: Any, class_index: Any, prior_index: Any = None,
                          use_logits: bool = True) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
        """Activations of each image's feature layer and the target's gradient with respect to them.

        Args:
            images, class_index, prior_index, use_logits: as for :meth:`__call__`.

        Returns:
            ``(layer_names, activations, gradients)``: per image the layer name, its activations
            ``(h, w, K)`` and ``d target / d activations`` ``(h, w, K)``, float32.
        """
        x = _check_images(self.model, images)
        names = [""] * len(x)
        activations: list[np.ndarray] = [np.empty(0)] * len(x)
        gradients: list[np.ndarray] = [np.empty(0)] * len(x)
        for name, (members, features, grads) in self._run(x, class_index, prior_index, use_logits).items():
            for member, feature, grad in zip(members, features.numpy(), grads.numpy()):
                names[member], activations[member], gradients[member] = name, feature, grad
        return names, activations, gradients

    def _run(self, x: tf.Tensor, class_index: Any, prior_index: Any, use_logits: bool
             ) -> dict[str, tuple[list[int], tf.Tensor, tf.Tensor]]:
        """One forward and one backward pass over checked images ``x``.

        Returns:
            Per feature layer used: the indices of its images, their activations and gradients
            ``(n, h, w, K)`` float32.
        """
        classes, priors = self._target.indices(len(x), class_index, prior_index)
        names = self.layers_for(priors, len(x))
        members = {name: [i for i, n in enumerate(names) if n == name] for name in dict.fromkeys(names)}
        watched = {id(self.model.get_layer(name)) for name in members}

        def record_from_features(layer: keras.layers.Layer, output: Any) -> Any:
            if id(layer) in watched:
                tape.watch(output)
            return output

        # Only what follows the watched feature maps is recorded, so the backward pass runs from the
        # target back to them and no further (not through the backbone below, nor into the weights).
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            outputs = _run_graph(self._gradient_model, [x], record_from_features)
            maps = dict(zip(self.feature_layers, outputs[:len(self.feature_layers)]))
            scores = self._target.scores(outputs[len(self.feature_layers):], use_logits)
            target = tf.reduce_sum(self._target.select(scores, classes, priors))
        grads = tape.gradient(target, [maps[name] for name in members],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return {name: (index, tf.gather(tf.cast(maps[name], tf.float32), index),
                       tf.gather(tf.cast(grad, tf.float32), index))
                for (name, index), grad in zip(members.items(), grads)}

    def __call__(self, images: Any, class_index: Any, prior_index: Any = None, box: Any = None,
                 use_logits: bool = True) -> np.ndarray:
        """Grad-CAM maps of a batch.

        Args:
            images: preprocessed model inputs ``(N, H, W, C)`` (for SSD: ``preprocess_input``-ed).
            class_index: the explained class (SSD: 0 is background), one integer or one per image.
            prior_index: SSD only: the prior (default box) explained, one integer or one per image
                (column 6 of ``detection_out(..., return_indices=True)``). ``None``: the class
                summed over all priors.
            box: normalised corners ``[xmin, ymin, xmax, ymax]``, ``(4,)`` or ``(N, 4)``: the map is
                zeroed outside the box and scaled again to a maximum of 1 (the seed's view).
            use_logits: SSD: explain the pre-softmax logit (layer ``mbox_conf_logits``), else the
                softmax probability. Classifier: the logit when the model ends in a softmax,
                else the output either way.

        Returns:
            ``(N, H, W)`` float32 maps in [0, 1] at the input resolution; all zero where the
            evidence is all negative.

        Raises:
            ValueError: bad images, class or prior index out of range, wrong number of indices
                or boxes (the message names the argument and the valid range).
        """
        x = _check_images(self.model, images)
        boxes = None if box is None else _box_array(box, len(x))
        size = tuple(int(s) for s in x.shape[1:3])
        maps = np.zeros((len(x),) + size, dtype=np.float32)
        for members, features, gradients in self._run(x, class_index, prior_index, use_logits).values():
            weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)
            cam = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1))
            maps[members] = _normalise(tf.image.resize(cam[..., None], size, method="bilinear")[..., 0]).numpy()
        if boxes is not None:
            maps = _normalise(maps * _box_masks(boxes, size)).numpy()
        return np.clip(maps, 0.0, 1.0)


def _box_masks(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Masks ``(N, H, W)`` float32: 1 on the pixels whose centres lie inside each box."""
    height, width = size
    xs = (np.arange(width) + 0.5) / width
    ys = (np.arange(height) + 0.5) / height
    inside_x = (xs[None] >= boxes[:, 0:1]) & (xs[None] <= boxes[:, 2:3])
    inside_y = (ys[None] >= boxes[:, 1:2]) & (ys[None] <= boxes[:, 3:4])
    return (inside_y[:, :, None] & inside_x[:, None, :]).astype(np.float32)


# --------------------------------------------------------------------------- #
# Guided backpropagation
# --------------------------------------------------------------------------- #
@tf.custom_gradient
def guided_relu(x: tf.Tensor) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
    """``max(x, 0)`` whose gradient passes only where both ``x`` and the incoming gradient are positive."""
    def grad(upstream: tf.Tensor) -> tf.Tensor:
        keep = tf.logical_and(x > 0, upstream > 0)
        return tf.where(keep, upstream, tf.zeros_like(upstream))
    return tf.nn.relu(x), grad


def _guide(layer: keras.layers.Layer, output: Any) -> Any:
    """Puts a :func:`guided_relu` after a ReLU layer.

    Such a layer outputs ``y = relu(z)``; ``guided_relu(y)`` has the same value, and its gradient
    followed by the layer's own ReLU gradient is ``g * (g > 0) * (z > 0)``: the guided rule, with
    the layer itself untouched.
    """
    return guided_relu(output) if _is_relu_layer(layer) else output


def guided_backprop(model: keras.Model, images: Any, class_index: Any, prior_index: Any = None) -> np.ndarray:
    """Guided backpropagation: input gradients of a target score through guided ReLUs.

    The target is that of :class:`GradCAM` with ``use_logits=True``. The model is not cloned: its
    own layers run eagerly node by node (sharing its weights live, adding no node to it) with a
    ``tf.custom_gradient`` guided ReLU after every ReLU layer (``activation="relu"`` or a ``ReLU``
    layer), so nothing needs caching and nothing in the model changes. ReLUs hidden inside
    subclassed layers or models keep their ordinary gradient.

    Args:
        model: SSD model or classifier, functional or Sequential. Not modified.
        images: preprocessed inputs ``(N, H, W, C)``.
        class_index, prior_index: as for :meth:`GradCAM.__call__`.

    Returns:
        ``(N, H, W, C)`` float32 gradients, in the input's channel order (BGR for SSD inputs);
        see :func:`gradient_image` to look at them.
    """
    require_tensorflow("guided backpropagation (tf.GradientTape)")
    target = Target(model)
    x = _check_images(model, images)
    classes, priors = target.indices(len(x), class_index, prior_index)
    score_model = keras.Model(model.inputs, target.score_outputs, name=f"{model.name}_scores")
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        outputs = keras.tree.flatten(_run_graph(score_model, [x], _guide))
        score = tf.reduce_sum(target.select(target.scores(outputs, use_logits=True), classes, priors))
    return tape.gradient(score, x).numpy()


def guided_grad_cam(model: keras.Model, images: Any, class_index: Any, prior_index: Any = None,
                    layer_name: str | None = None, box: Any = None) -> np.ndarray:
    """Guided Grad-CAM: :func:`guided_backprop` times the :class:`GradCAM` map.

    Args:
        model, images, class_index, prior_index: as for :func:`guided_backprop`.
        layer_name, box: as for :class:`GradCAM`.

    Returns:
        ``(N, H, W, C)`` float32.
    """
    maps = GradCAM(model, layer_name)(images, class_index, prior_index, box=box)
    return guided_backprop(model, images, class_index, prior_index) * maps[..., None]


# --------------------------------------------------------------------------- #
# Detections and pictures
# --------------------------------------------------------------------------- #
def explain_detections(model: keras.Model, image: np.ndarray, detections: np.ndarray,
                       class_names: Sequence[str] | None = None, top: int = 5, method: str = "gradcam",
                       mask_box: bool = False, layer_name: str | None = None) -> list[dict[str, Any]]:
    """Explains the most confident detections of one image, all in one batch.

    Args:
        model: the SSD model that produced the detections.
        image: its preprocessed input ``(H, W, 3)``.
        detections: ``(k, 7)`` rows ``[label, confidence, xmin, ymin, xmax, ymax, prior_index]``
            from ``BBoxUtility.detection_out(..., return_indices=True)`` or
            ``detect(..., return_indices=True)``.
        class_names: names without background, for the ``"label"`` captions.
        top: at most this many detections, by decreasing confidence.
        method: ``"gradcam"`` (:class:`GradCAM`, default layer per prior), ``"guided"``
            (:func:`guided_backprop`) or ``"guided-gradcam"`` (:func:`guided_grad_cam`).
        mask_box: zero the Grad-CAM map outside the detection's box (the seed's view).
        layer_name: the Grad-CAM layer for every detection (default: the one feeding each
            detection's head); not used by ``"guided"``.

    Returns:
        One dict per explained detection, most confident first: ``"detection"`` the row (7,),
        ``"map"`` ``(H, W)`` in [0, 1] for gradcam or ``(H, W, 3)`` gradients otherwise, and
        ``"label"`` its caption, e.g. ``"dog 0.87"``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    rows = np.asarray(detections, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != layout.DETECTION_COLUMNS_WITH_INDEX:
        raise ValueError(f"detections must be (k, 7) rows with the prior index in the last column "
                         f"(detection_out(..., return_indices=True)), got shape {rows.shape}")
    if int(top) != top or top < 0:
        raise ValueError(f"top must be a non-negative integer, got {top}")
    rows = rows[np.argsort(-rows[:, layout.CONFIDENCE], kind="stable")][:int(top)]
    if len(rows) == 0:
        return []
    images = np.repeat(np.asarray(image, dtype=np.float32)[None], len(rows), axis=0)
    classes, priors = rows[:, layout.LABEL], rows[:, layout.PRIOR_INDEX]
    boxes = rows[:, layout.BOX] if mask_box else None
    if method == "gradcam":
        maps = GradCAM(model, layer_name)(images, classes, priors, box=boxes)
    elif method == "guided":
        maps = guided_backprop(model, images, classes, priors)
    else:
        maps = guided_grad_cam(model, images, classes, priors, layer_name=layer_name, box=boxes)
    names = list(class_names) if class_names is not None else []
    return [{"detection": row, "map": heat, "label": label_text(row[0], row[1], names)}
            for row, heat in zip(rows, maps)]
