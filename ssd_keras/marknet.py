"""MarkNet: the seed's mark classifier (logos and stamps on cups and plates), in Keras 3.

:func:`MarkNet` builds a compact convolutional classifier with the functional API: a stride-2
stem, then blocks of two 3x3 convolutions with batch normalisation and ReLU (max pooling between
blocks), global average pooling, dropout, a ``Dense`` layer ``"logits"`` and a separate
``Activation("softmax", name="predictions")``, so that :class:`ssd_keras.gradcam.GradCAM`
explains the logits. With ``backbone="vgg16"`` or ``"mobilenetv2"`` the convolutions are those of
a ``keras.applications`` network instead (random weights unless ``weights="imagenet"``).

Inputs are float32 RGB images scaled to [-1, 1] by :func:`marknet_preprocess`, whatever the
backbone: MobileNetV2 expects exactly that, and the VGG16 variant starts with a fixed 1x1
convolution ``"to_caffe"`` that turns it into the Caffe-mode input VGG16's ImageNet weights were
trained on (BGR, minus the ImageNet mean).

Training runs (:func:`train_marknet`, ``python -m ssd_keras marknet train``) write a folder::

    config.json                       classes, input shape, backbone, filters: what rebuilds the model
    history.csv                       loss and accuracy (and val_*) per epoch
    checkpoints/epoch_NNN.weights.h5  weights after each epoch
    final.weights.h5                  weights after the last epoch

and :func:`load_marknet` rebuilds the model from weights and the ``config.json`` beside them.
:func:`evaluate_marknet` gives accuracy, per-class precision and recall and the confusion matrix;
:func:`explain_marks` gives Grad-CAM and Guided Grad-CAM maps of the predicted class and any
other. Classification labels are 0-based (label ``i`` is ``class_names[i]``); there is no
background class.

Example::

    model = MarkNet(num_classes=4, input_shape=(96, 96, 3))
    x = marknet_preprocess(resize_image(load_image("cup.jpg"), (96, 96)))[None]
    probabilities = model.predict(x)[0]
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from .gradcam import GradCAM, guided_backprop
from .plots import plot_confusion_matrix  # noqa: F401  (re-exported: its old home)
from .image import CAFFE_MEAN_BGR, _as_numeric, _check_channels_last, resize_image
from .weights import load_weights

__all__ = [
    "BACKBONES",
    "CONFIG_FILENAME",
    "DEFAULT_FILTERS",
    "MarkNet",
    "MarkNetConfig",
    "classification_metrics",
    "evaluate_marknet",
    "explain_marks",
    "find_config",
    "format_classification_report",
    "load_marknet",
    "marknet_preprocess",
    "plot_confusion_matrix",
    "train_marknet",
]

logger = logging.getLogger(__name__)

BACKBONES: tuple[str, ...] = ("vgg16", "mobilenetv2")
"""The ``keras.applications`` networks ``MarkNet(backbone=...)`` can be built on."""
DEFAULT_FILTERS: tuple[int, ...] = (32, 64, 128, 256)
"""Filters of the compact network's blocks (the stem has ``filters[0]``)."""
CONFIG_FILENAME = "config.json"
"""The file beside a run's weights that says how to rebuild the model."""
LOGITS_LAYER = "logits"
PREDICTIONS_LAYER = "predictions"
CHECKPOINTS_DIR = "checkpoints"
BN_MOMENTUM = 0.9
"""Batch normalisation's moving-average momentum: 0.9 (Keras: 0.99) so that the inference
statistics settle within the few hundred steps of a short run."""
_HALF_RANGE = 127.5  # [0, 255] -> [-1, 1]


# --------------------------------------------------------------------------------------------
# input and model


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


# --------------------------------------------------------------------------------------------
# training and loading


@dataclass
class MarkNetConfig:
    """A MarkNet training run; ``config.json`` in the run folder is this, as JSON (plus
    ``classes`` and ``input_shape``).

    Attributes:
        csv, val_csv: classification CSVs (``image,label``, ``classes.txt`` beside them).
        out: the run folder (created; must not hold a run already).
        classes: class names; default ``classes.txt`` beside ``csv``.
        epochs, batch_size: as for ``model.fit``.
        lr: Adam's initial learning rate, decayed to 0 along a cosine over the run.
        image_size: the input's side (square images).
        backbone, weights, filters, dropout: as for :func:`MarkNet`.
        seed: seeds weights, order and augmentation (``None``: not reproducible).
        workers: data loading threads.
    """

    csv: str
    out: str
    val_csv: str | None = None
    classes: list[str] | None = None
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    image_size: int = 224
    backbone: str | None = None
    weights: str | None = None
    filters: tuple[int, ...] = DEFAULT_FILTERS
    dropout: float = 0.2
    seed: int | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.image_size < 1 or self.workers < 1:
            raise ValueError(f"epochs, batch_size, image_size and workers must be positive, got {self.epochs}, "
                             f"{self.batch_size}, {self.image_size} and {self.workers}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        self.filters = tuple(int(f) for f in self.filters)


def train_marknet(config: MarkNetConfig, verbose: int = 1) -> tuple[keras.Model, keras.callbacks.History]:
    """Trains MarkNet on a classification CSV and writes the run folder (module docstring).

    Args:
        config: the run.
        verbose: Keras ``fit`` verbosity.

    Returns:
        ``(model, history)``: the trained model and ``fit``'s ``History``.

    Raises:
        FileExistsError: ``config.out`` already holds a run (a ``config.json``).
        ValueError, FileNotFoundError: bad CSVs, class lists or arguments (named in the message).
    """
    from .data.classification import ClassificationGenerator

    folder = Path(config.out)
    if (folder / CONFIG_FILENAME).exists():
        raise FileExistsError(f"{folder} already holds a training run ({CONFIG_FILENAME}): choose another "
                              f"output folder")
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    size = (config.image_size, config.image_size)
    train_data = ClassificationGenerator(config.csv, config.batch_size, size, config.classes, train=True,
                                         seed=config.seed, workers=config.workers)
    class_names = train_data.class_names
    val_data = (ClassificationGenerator(config.val_csv, config.batch_size, size, class_names, train=False,
                                        workers=config.workers) if config.val_csv else None)
    model = MarkNet(len(class_names), (*size, 3), config.backbone, config.weights, config.filters,
                    config.dropout)
    schedule = keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=config.epochs * len(train_data))
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    (folder / CHECKPOINTS_DIR).mkdir(parents=True, exist_ok=True)
    record = {**asdict(config), "classes": class_names, "input_shape": [*size, 3],
              "filters": list(config.filters)}
    for key in ("csv", "val_csv"):
        record[key] = os.path.abspath(record[key]) if record[key] else None
    (folder / CONFIG_FILENAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(folder / CHECKPOINTS_DIR / "epoch_{epoch:03d}.weights.h5"),
                                        save_weights_only=True),
        keras.callbacks.CSVLogger(str(folder / "history.csv")),
    ]
    history = model.fit(train_data, validation_data=val_data, epochs=config.epochs, callbacks=callbacks,
                        verbose=verbose)
    model.save_weights(str(folder / "final.weights.h5"))
    logger.info("MarkNet run written to %s", folder)
    return model, history


def find_config(weights: str | os.PathLike[str]) -> Path:
    """The ``config.json`` of a weights file: in its folder, or the run folder above ``checkpoints/``.

    Raises:
        FileNotFoundError: the weights file or its ``config.json`` does not exist.
    """
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"weights file not found: {weights}")
    candidates = [weights.parent / CONFIG_FILENAME]
    if weights.parent.name == CHECKPOINTS_DIR:
        candidates.append(weights.parent.parent / CONFIG_FILENAME)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {CONFIG_FILENAME} beside {weights}: MarkNet weights are rebuilt from the "
                            f"{CONFIG_FILENAME} that `marknet train` writes in the same run folder")


def load_marknet(weights: str | os.PathLike[str]) -> tuple[keras.Model, dict[str, Any]]:
    """Rebuilds a trained MarkNet from its weights and the run's ``config.json`` (:func:`find_config`).

    Args:
        weights: ``final.weights.h5`` or a checkpoint of a run folder.

    Returns:
        ``(model, config)``: the model with the weights loaded, and the run's configuration
        (``config["classes"]`` are the class names).

    Raises:
        FileNotFoundError: the weights or ``config.json`` are missing.
        ValueError: ``config.json`` is invalid, or the weights do not fit the model it describes.
    """
    path = find_config(weights)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        classes = list(config["classes"])
        model = MarkNet(len(classes), tuple(config["input_shape"]), config.get("backbone"), None,
                        config.get("filters", DEFAULT_FILTERS), config.get("dropout", 0.2))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a MarkNet run configuration: {exc!r}") from None
    load_weights(model, weights)
    return model, config


# --------------------------------------------------------------------------------------------
# evaluation


def classification_metrics(labels: Any, predictions: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, confusion matrix, per-class precision and recall.

    Args:
        labels: ``(n,)`` true labels in ``[0, len(class_names))``.
        predictions: ``(n,)`` predicted labels, same range.
        class_names: the names of the labels.

    Returns:
        ``{"accuracy": float, "confusion": (K, K) int64 (row: true class, column: predicted),
        "precision": (K,), "recall": (K,) float64 (NaN for a class never predicted / without
        examples), "support": (K,) int64 examples per true class, "class_names": list,
        "num_images": int}``.

    Raises:
        ValueError: mismatched lengths, no example, or labels out of range.
    """
    labels, predictions = np.asarray(labels).reshape(-1), np.asarray(predictions).reshape(-1)
    count = len(class_names)
    if len(labels) != len(predictions) or not len(labels):
        raise ValueError(f"labels and predictions must be non-empty and of equal length, got {len(labels)} "
                         f"and {len(predictions)}")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.dtype.kind not in "iu" or values.min() < 0 or values.max() >= count:
            raise ValueError(f"{name} must be integers in [0, {count - 1}], got {values.dtype} in "
                             f"[{values.min()}, {values.max()}]")
    confusion = np.zeros((count, count), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    correct = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, correct / predicted, np.nan)
        recall = np.where(support > 0, correct / support, np.nan)
    return {"accuracy": float(correct.sum() / len(labels)), "confusion": confusion, "precision": precision,
            "recall": recall, "support": support, "class_names": list(class_names),
            "num_images": int(len(labels))}


def evaluate_marknet(model: keras.Model, csv_path: str | os.PathLike[str],
                     class_names: Sequence[str] | str | os.PathLike[str] | None = None, batch_size: int = 32,
                     verbose: int = 0) -> dict[str, Any]:
    """Runs a classifier over a classification CSV and scores it.

    Args:
        model: MarkNet (any classifier of :func:`marknet_preprocess`-ed inputs).
        csv_path: the classification CSV.
        class_names: the model's classes (list or file); default ``classes.txt`` beside the CSV.
            When both are there they must be the same list.
        batch_size: images per prediction batch.
        verbose: Keras ``predict`` verbosity.

    Returns:
        :func:`classification_metrics`'s dict plus ``"predictions"`` ``(n,)`` and
        ``"probabilities"`` ``(n, K)`` in CSV order, and ``"image_paths"``.

    Raises:
        ValueError: an invalid CSV (see :func:`ssd_keras.data.read_classification_csv`), or a
            model whose output does not have one score per class.
    """
    from .data.classification import ClassificationGenerator

    size = tuple(int(v) for v in model.input_shape[1:3])
    data = ClassificationGenerator(csv_path, batch_size, size, class_names, train=False)
    if model.output_shape[-1] != len(data.class_names):
        raise ValueError(f"model {model.name!r} scores {model.output_shape[-1]} classes but {csv_path} has "
                         f"{len(data.class_names)} ({', '.join(data.class_names)})")
    probabilities = np.asarray(model.predict(data, verbose=verbose))
    predictions = probabilities.argmax(axis=1)
    result = classification_metrics(data.labels, predictions, data.class_names)
    result.update(predictions=predictions, probabilities=probabilities,
                  image_paths=[record["image_path"] for record in data.records])
    return result


def format_classification_report(result: dict[str, Any]) -> str:
    """A text table: per class precision, recall and support, then the accuracy.

    Args:
        result: the dict of :func:`classification_metrics` or :func:`evaluate_marknet`.

    Returns:
        The lines joined by newlines (no trailing newline); ``-`` where a value is undefined.
    """
    names = result["class_names"]
    width = max(len("class"), *map(len, names))

    def cell(value: float) -> str:
        return "-" if np.isnan(value) else f"{value:.4f}"

    lines = [f"{'class':<{width}}  {'precision':>9}  {'recall':>9}  {'support':>7}"]
    for name, precision, recall, support in zip(names, result["precision"], result["recall"], result["support"]):
        lines.append(f"{name:<{width}}  {cell(precision):>9}  {cell(recall):>9}  {support:>7}")
    correct = int(np.trace(result["confusion"]))
    lines.append(f"accuracy: {result['accuracy']:.4f} ({correct}/{result['num_images']})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# explanations


def explain_marks(model: keras.Model, image: np.ndarray, class_indices: Sequence[int] = (),
                  layer_name: str | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Grad-CAM and Guided Grad-CAM of one image for the predicted class and any others.

    Args:
        model: MarkNet (a classifier ending in a softmax layer: the logits are explained).
        image: RGB uint8 ``(H, W, 3)``, any size: resized to the model's input and
            :func:`marknet_preprocess`-ed here.
        class_indices: classes to explain besides the predicted one (0-based).
        layer_name: Grad-CAM's layer (default: the last with a 4-D output, see :func:`MarkNet`).

    Returns:
        ``(probabilities, explanations)``: ``(K,)`` softmax scores, and one dict per explained
        class, the predicted one first, then ``class_indices`` in order without repeats:
        ``{"class_index": int, "probability": float, "gradcam": (h, w) float32 in [0, 1],
        "guided_gradcam": (h, w, 3) float32}`` at the model's input size ``(h, w)``.

    Raises:
        ValueError: a class index out of range, or a bad image.
    """
    size = tuple(int(v) for v in model.input_shape[1:3])
    x = marknet_preprocess(resize_image(np.asarray(image), size))[np.newaxis]
    probabilities = np.asarray(model(x, training=False))[0]
    classes = list(dict.fromkeys([int(probabilities.argmax()), *(int(c) for c in class_indices)]))
    batch = np.repeat(x, len(classes), axis=0)
    maps = GradCAM(model, layer_name)(batch, classes)
    guided = guided_backprop(model, batch, classes) * maps[..., np.newaxis]
    return probabilities, [
        {"class_index": c, "probability": float(probabilities[c]), "gradcam": heat, "guided_gradcam": g}
        for c, heat, g in zip(classes, maps, guided)
    ]
