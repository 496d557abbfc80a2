"""SSD300, the 7308-prior variant of the original Keras port, as a Keras functional model.

Layer names and weight shapes are those of the original port, so its ported Caffe weights
(``weights_SSD300.hdf5``) load by name::

    model = SSD300((300, 300, 3), num_classes=21)
    model.load_weights("weights/weights_SSD300.hdf5", by_name=True)

The heads come from a prior configuration (:mod:`ssd_keras.priors`): by default the original six;
``SSD300(priors=config)`` builds others (e.g. a stride-4 ``conv3_3`` head for tiny objects), and
:func:`prior_config` reads a model's configuration back from its PriorBox layers.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import layers

from . import layout
from ._keras_compat import producing_layer
from .data.classes import VOC_CLASSES
from .priors import DEFAULT_PRIORS, NORMALIZED_SOURCES, VARIANCES, HeadSpec, PriorConfig, as_prior_config
from .ssd_layers import Normalize, PriorBox

__all__ = ["SSD300", "VOC_CLASSES", "HEADS", "HeadSpec", "PriorConfig", "prior_boxes", "prior_config",
           "prior_layers", "detect", "with_detection_output", "NUM_PRIORS_SSD300", "VARIANCES", "PRIORBOX_SUFFIX"]


NUM_PRIORS_SSD300 = 7308
_ORIGINAL_NUM_CLASSES = 21  # conf heads of other class counts get a suffix in their names
_DEFAULT_COUNTS = {head.source: head.num_priors for head in DEFAULT_PRIORS.heads}
NORM_SCALE = 20.0

HEADS = DEFAULT_PRIORS.heads
"""The six heads of SSD300 in output order (prior sizes in pixels of the 300x300 input):
:data:`ssd_keras.priors.DEFAULT_PRIORS`. A head's ``source`` is the backbone layer (``conv4_3``);
``layer`` is what it reads and names its layers by (``conv4_3_norm``)."""


def _conv(x, filters, kernel, name, width, strides=1, padding="same", dilation=1):
    channels = max(8, int(round(filters * width)))
    return layers.Conv2D(channels, kernel, strides=strides, padding=padding,
                         dilation_rate=dilation, activation="relu", name=name)(x)


def _pool(x, name, size=2, strides=2):
    return layers.MaxPooling2D(size, strides=strides, padding="same", name=name)(x)


def _head_names(head: HeadSpec, num_classes: int) -> tuple[str, str]:
    """The suffixes of a head's loc and conf layers: ``_p<n>`` when its priors per cell differ
    from the default head's on the same source, then ``_<num_classes>`` on conf for other class
    counts, so that a weight file of another layout reports them as skipped, not as a mismatch."""
    default = _DEFAULT_COUNTS.get(head.source)
    loc = "" if default in (None, head.num_priors) else f"_p{head.num_priors}"
    conf = loc + ("" if num_classes == _ORIGINAL_NUM_CLASSES else f"_{num_classes}")
    return loc, conf


def SSD300(input_shape: Sequence[int] = (300, 300, 3), num_classes: int = 21,
           width_multiplier: float = 1.0, priors: PriorConfig | dict | str | None = None) -> keras.Model:
    """Builds SSD300 (VGG16 backbone; by default six heads, 7308 default boxes at 300x300).

    Args:
        input_shape: ``(height, width, channels)`` of the preprocessed input (see
            :func:`ssd_keras.image.preprocess_input`: BGR, Caffe mean subtracted).
        num_classes: classes including background (21 for Pascal VOC). For any other count
            the confidence heads are named ``<source>_mbox_conf_<num_classes>``, so that the
            21-class weight file loads everything but them.
        width_multiplier: scales the channel count of every backbone and extra-layer
            convolution (rounded, at least 8); names, head outputs and priors do not change.
            1.0 is the original network exactly. Thin models train and test fast.
        priors: the heads (:class:`ssd_keras.priors.PriorConfig`, its JSON object or a JSON
            file; default :data:`ssd_keras.priors.DEFAULT_PRIORS`, the original network
            exactly). Heads on ``conv3_3`` / ``conv4_3`` read them L2-normalised
            (``conv3_3_norm`` / ``conv4_3_norm``). A head whose priors per cell differ from the
            default head's on the same source has ``_p<n>`` after ``mbox_loc`` / ``mbox_conf``
            in its layer names (e.g. ``fc7_mbox_loc_p4``), so that the VOC weights load the
            backbone and report such heads as skipped. Layers no head depends on are left out.

    Returns:
        A ``keras.Model`` named ``ssd300`` mapping ``(batch, H, W, 3)`` float32 to
        ``predictions`` ``(batch, num_priors, 4 + num_classes + 8)``: location offsets (4),
        softmax confidences (``num_classes``, layer ``mbox_conf_final``; the logits are layer
        ``mbox_conf_logits``), and per prior its corners and variances (8).
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(s is None or int(s) <= 0 for s in input_shape):
        raise ValueError(f"input_shape must be (height, width, channels) with positive sizes, "
                         f"got {input_shape}")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes counts background too and must be an integer >= 2, "
                         f"got {num_classes}")
    if not width_multiplier > 0:
        raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
    config = as_prior_config(priors)
    num_classes = int(num_classes)
    w = float(width_multiplier)

    inputs = keras.Input(shape=input_shape, name="input_1")
    net = {}
    x = inputs
    # VGG16 backbone: blocks 1-5.
    for block, (filters, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], 1):
        for i in range(1, convs + 1):
            x = net[f"conv{block}_{i}"] = _conv(x, filters, 3, f"conv{block}_{i}", w)
        if block < 5:
            x = _pool(x, f"pool{block}")
    x = _pool(x, "pool5", size=3, strides=1)
    # The fully connected layers of VGG16 as (dilated) convolutions.
    x = _conv(x, 1024, 3, "fc6", w, dilation=6)
    x = net["fc7"] = _conv(x, 1024, 1, "fc7", w)
    # Extra feature layers.
    x = _conv(x, 256, 1, "conv6_1", w)
    x = net["conv6_2"] = _conv(x, 512, 3, "conv6_2", w, strides=2)
    x = _conv(x, 128, 1, "conv7_1", w)
    x = layers.ZeroPadding2D(name="conv7_2_zero_padding")(x)
    x = net["conv7_2"] = _conv(x, 256, 3, "conv7_2", w, strides=2, padding="valid")
    x = _conv(x, 128, 1, "conv8_1", w)
    x = net["conv8_2"] = _conv(x, 256, 3, "conv8_2", w, strides=2)
    net["pool6"] = layers.GlobalAveragePooling2D(name="pool6")(x)
    for head in config.heads:
        if head.source in NORMALIZED_SOURCES and head.layer not in net:
            net[head.layer] = Normalize(NORM_SCALE, name=head.layer)(net[head.source])

    img_size = (input_shape[1], input_shape[0])
    locs, confs, priors_out = [], [], []
    for head in config.heads:
        src, n = head.layer, head.num_priors
        loc_suffix, conf_suffix = _head_names(head, num_classes)
        priorbox = PriorBox(img_size, head.min_size, head.max_size, head.aspect_ratios,
                            variances=VARIANCES, name=f"{src}_mbox_priorbox")
        if src == "pool6":
            # The global pool has no spatial grid: its head is two Dense layers.
            locs.append(layers.Dense(n * 4, name=f"pool6_mbox_loc_flat{loc_suffix}")(net[src]))
            confs.append(layers.Dense(n * num_classes,
                                      name=f"pool6_mbox_conf_flat{conf_suffix}")(net[src]))
            channels = net[src].shape[-1]
            reshaped = layers.Reshape((1, 1, channels), name="pool6_reshaped")(net[src])
            priors_out.append(priorbox(reshaped))
            continue
        loc = layers.Conv2D(n * 4, 3, padding="same", name=f"{src}_mbox_loc{loc_suffix}")(net[src])
        locs.append(layers.Flatten(name=f"{src}_mbox_loc_flat")(loc))
        conf = layers.Conv2D(n * num_classes, 3, padding="same",
                             name=f"{src}_mbox_conf{conf_suffix}")(net[src])
        confs.append(layers.Flatten(name=f"{src}_mbox_conf_flat")(conf))
        priors_out.append(priorbox(net[src]))

    def joined(tensors, name, **kwargs):
        # one head: no concatenation, but the layer name the rest of the package looks for
        if len(tensors) == 1:
            return layers.Identity(name=name, **kwargs)(tensors[0])
        return layers.Concatenate(axis=1, name=name, **kwargs)(tensors)

    mbox_loc = joined(locs, "mbox_loc")
    mbox_conf = joined(confs, "mbox_conf")
    mbox_priorbox = joined(priors_out, "mbox_priorbox", dtype="float32")
    num_boxes = mbox_loc.shape[-1] // 4
    # The outputs stay float32 under a mixed-precision policy (priors, softmax, box offsets).
    mbox_loc = layers.Reshape((num_boxes, 4), name="mbox_loc_final", dtype="float32")(mbox_loc)
    logits = layers.Reshape((num_boxes, num_classes), name="mbox_conf_logits",
                            dtype="float32")(mbox_conf)
    probs = layers.Activation("softmax", name="mbox_conf_final", dtype="float32")(logits)
    predictions = layers.Concatenate(axis=2, name="predictions", dtype="float32")(
        [mbox_loc, probs, mbox_priorbox])
    return keras.Model(inputs, predictions, name="ssd300")


def prior_layers(model: keras.Model) -> list[PriorBox]:
    """The PriorBox layers of a model in the order their outputs are concatenated."""
    try:
        concat = model.get_layer("mbox_priorbox")
    except ValueError:
        concat = None
    if concat is not None:
        ordered = []
        for tensor in keras.tree.flatten(concat.input):
            layer = producing_layer(tensor)
            if not isinstance(layer, PriorBox):
                break
            ordered.append(layer)
        else:
            return ordered
    return [layer for layer in model.layers if isinstance(layer, PriorBox)]


def prior_boxes(model: keras.Model) -> np.ndarray:
    """The default boxes of a built SSD model, without running it.

    Args:
        model: a model built by :func:`SSD300` (or any model whose PriorBox outputs are
            concatenated by a layer named ``mbox_priorbox``).

    Returns:
        ``(num_priors, 8)`` float32 rows ``[xmin, ymin, xmax, ymax, var0..var3]``, normalised
        corners, in the order of the model's predictions (7308 rows for SSD300).
    """
    found = prior_layers(model)
    if not found:
        raise ValueError(f"model {model.name!r} has no PriorBox layers")
    return np.concatenate([layer.priors for layer in found], axis=0).astype(np.float32)


PRIORBOX_SUFFIX = "_mbox_priorbox"


def prior_config(model: keras.Model) -> PriorConfig:
    """The prior configuration a model was built from, read from its PriorBox layers
    (``<source>_mbox_priorbox``): ``SSD300(..., priors=prior_config(model))`` rebuilds its heads.

    Raises:
        ValueError: the model has no PriorBox layers, or one is not named after its source.
    """
    found = prior_layers(model)
    if not found:
        raise ValueError(f"model {model.name!r} has no PriorBox layers")
    heads = []
    for layer in found:
        if not layer.name.endswith(PRIORBOX_SUFFIX):
            raise ValueError(f"PriorBox layer {layer.name!r} is not named <source>{PRIORBOX_SUFFIX}")
        heads.append(HeadSpec(layer.name[:-len(PRIORBOX_SUFFIX)], layer.min_size, layer.max_size,
                              tuple(layer.aspect_ratios_arg or ())))
    return PriorConfig(tuple(heads))


def with_detection_output(model: keras.Model, **detection_kwargs) -> keras.Model:
    """An SSD model that ends in :class:`ssd_keras.ssd_layers.DetectionOutput`.

    Args:
        model: an SSD model (predictions ``(batch, num_priors, 4 + num_classes + 8)``).
        **detection_kwargs: ``background_label_id``, ``keep_top_k``, ``confidence_threshold``,
            ``nms_thresh``, ``top_k`` (see ``BBoxUtility.detection_out``).

    Returns:
        A ``keras.Model`` named ``<model>_detections`` sharing ``model``'s layers and weights:
        the same input (float32 ``(batch, 300, 300, 3)``, already ``preprocess_input``-ed) and
        output ``(batch, keep_top_k, 6)`` rows ``[label, confidence, xmin, ymin, xmax, ymax]``
        sorted by confidence, zero rows as padding. ``.export(dir)`` writes a SavedModel whose
        ``serve`` endpoint maps images to detections.
    """
    from .ssd_layers import DetectionOutput

    detections = DetectionOutput(layout.num_classes_of(model), name="detection_output",
                                 **detection_kwargs)(model.output)
    return keras.Model(model.input, detections, name=f"{model.name}_detections")


def detect(model: keras.Model, images: Sequence[np.ndarray], bbox_util=None,
           confidence_threshold: float = 0.01, keep_top_k: int = 200, batch_size: int = 8,
           return_indices: bool = False) -> list[np.ndarray]:
    """Runs an SSD model on RGB images of any size and decodes its detections.

    Each image is resized to the model's input size, passed through
    :func:`ssd_keras.image.preprocess_input`, predicted in batches and decoded with
    :meth:`ssd_keras.BBoxUtility.detection_out`.

    Args:
        model: an SSD model (for example from :func:`SSD300`).
        images: RGB uint8 arrays ``(H, W, 3)``, sizes may differ.
        bbox_util: a :class:`ssd_keras.BBoxUtility` (its ``nms_thresh`` and ``top_k`` apply);
            by default one for the model's class count.
        confidence_threshold, keep_top_k, return_indices: see ``detection_out``.
        batch_size: images per forward pass.

    Returns:
        One array per image of rows ``[label, confidence, xmin, ymin, xmax, ymax]``, corners
        normalised to the image (so they apply to the original size too).
    """
    from .image import model_batches
    from .ssd_utils import BBoxUtility

    if bbox_util is None:
        bbox_util = BBoxUtility(layout.num_classes_of(model))
    results = []
    for batch in model_batches(images, tuple(model.input_shape[1:3]), batch_size):
        predictions = model.predict_on_batch(batch)
        results.extend(bbox_util.detection_out(
            np.asarray(predictions), keep_top_k=keep_top_k,
            confidence_threshold=confidence_threshold, return_indices=return_indices))
    return results
