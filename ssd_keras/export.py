"""Exporting SSD300 for deployment: LiteRT (``.tflite``), ONNX (``.onnx``) and TensorFlow
SavedModel, at float32, float16, dynamic-range or full int8 precision.

Every exported model maps preprocessed images (``preprocess_input``: RGB -> BGR, minus the Caffe
means) to detection rows ``[label, confidence, xmin, ymin, xmax, ymax]``, exactly the interface of
``with_detection_output(model)``: decoding and per-class NMS are inside the exported graph.

- LiteRT and ONNX files take one image, ``(1, H, W, 3)`` float32, and give ``(1, keep_top_k, 6)``
  float32. The graph runs the network up to its two heads (``mbox_loc_final`` and
  ``mbox_conf_final``), decodes the boxes against the priors (constants), then runs
  ``NonMaxSuppressionV5`` once per class and ``top_k`` over the classes: only LiteRT builtins
  (no Flex delegate), and ops ONNX maps one to one. Keeping the two heads apart (not the packed
  prediction tensor) lets int8 give offsets and confidences their own scales.
- SavedModel takes a dynamic batch and ends in :class:`ssd_keras.ssd_layers.DetectionOutput`.
- Quantized precisions touch the network only: box decoding and NMS run in float32. LiteRT int8
  is full-integer wherever LiteRT has an int8 kernel, except the confidences' softmax (input and
  output stay float32); ONNX int8 quantizes the convolutions, dense layers, ReLUs and pooling,
  weights per channel (QDQ, ONNX Runtime's static quantization), leaving ``Normalize`` (the
  conv4_3 scale), the softmax, decoding and NMS in float. ``dynamic``: LiteRT's dynamic-range
  quantization (int8 weights, hybrid kernels); ONNX stores the convolution kernels as int8 per
  channel, dequantized when the file is loaded.

Each file records the class names and the detection settings (LiteRT: a metadata buffer named
``ssd_keras``; ONNX: ``metadata_props``; SavedModel: ``assets/ssd_keras.json``), read back by
:func:`ssd_keras.exported.load_exported`. Files are written through a temporary name: a failed
export leaves nothing at ``path``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from . import __version__
from .backends import require_tensorflow
from .boxes import decode
from .checks import positive_int
from .exported import (DEFAULT_CALIBRATION_SIZE, FORMATS, METADATA_KEY, PRECISIONS, MissingRuntimeError,
                       check_export)
from .files import atomic_path
from .image import load_image, preprocess_input, resize_image
from .ssd import prior_boxes

__all__ = ["export_model", "calibration_images", "FORMATS", "PRECISIONS", "DEFAULT_CALIBRATION_SIZE",
           "MissingRuntimeError"]

ONNX_OPSET = 17
ONNX_QUANTIZED_OPS = ("Conv", "MatMul", "Gemm", "Relu", "MaxPool")
"""What ONNX int8 quantizes: the network's layers (with Relu and MaxPool, no dequantize /
quantize pair is left between a convolution and its activation). Decoding and NMS stay float."""
HEAD_LAYERS = ("mbox_loc_final", "mbox_conf_final")


# --------------------------------------------------------------------------- #
# What is exported
# --------------------------------------------------------------------------- #
def _ssd_heads(model: keras.Model) -> tuple[keras.Model, np.ndarray, int]:
    """The network up to its two heads, its priors ``(P, 8)`` and class count; ValueError for a
    model that is not an SSD300."""
    try:
        heads = [model.get_layer(name).output for name in HEAD_LAYERS]
        priors = prior_boxes(model)
    except ValueError as err:
        raise ValueError(f"model {getattr(model, 'name', '?')!r} is not an SSD300 (built by ssd_keras.SSD300): "
                         f"{err}") from None
    shape = tuple(model.input_shape)
    if len(shape) != 4 or None in shape[1:] or shape[-1] != 3:
        raise ValueError(f"model {model.name!r} takes input {shape}; export needs a fixed (batch, H, W, 3)")
    num_classes = int(heads[1].shape[-1])
    if heads[0].shape[1] != len(priors) or heads[1].shape[1] != len(priors):
        raise ValueError(f"model {model.name!r}: heads {heads[0].shape}, {heads[1].shape} do not match its "
                         f"{len(priors)} priors")
    return keras.Model(model.input, heads, name=f"{model.name}_heads"), priors, num_classes


def _detection_settings(num_classes: int, keep_top_k: int, detection_kwargs: dict) -> dict[str, Any]:
    """The checked detection settings (``DetectionOutput``'s checks and defaults)."""
    from .ssd_layers import DetectionOutput

    layer = DetectionOutput(num_classes, keep_top_k=keep_top_k, **detection_kwargs)
    config = layer.get_config()
    return {key: config[key] for key in ("background_label_id", "keep_top_k", "confidence_threshold",
                                         "nms_thresh", "top_k")}


def detection_rows(loc: tf.Tensor, conf: tf.Tensor, priors: np.ndarray, settings: dict[str, Any]) -> tf.Tensor:
    """Detection rows ``(keep_top_k, 6)`` of one image from its offsets ``(P, 4)`` and
    confidences ``(P, C)``: decoded against ``priors``, ``NonMaxSuppressionV5`` per class (hard
    NMS: ``soft_nms_sigma=0``), the best ``keep_top_k`` over all classes, zero rows as padding.
    The same detections as ``BBoxUtility.detection_out``; LiteRT builtins only."""
    corners, variances = tf.constant(priors[:, :4]), tf.constant(priors[:, 4:])  # constants in the graph
    boxes = decode(loc, corners, variances, tf.experimental.numpy)
    top_k, keep_top_k = settings["top_k"], settings["keep_top_k"]
    classes = [label for label in range(int(conf.shape[-1])) if label != settings["background_label_id"]]
    scores, kept = [], []
    for label in classes:
        index, score, count = tf.raw_ops.NonMaxSuppressionV5(
            boxes=boxes, scores=conf[:, label], max_output_size=top_k, iou_threshold=settings["nms_thresh"],
            score_threshold=settings["confidence_threshold"], soft_nms_sigma=0.0, pad_to_max_output_size=True)
        scores.append(tf.where(tf.range(top_k) < count, score, -1.0))
        kept.append(tf.gather(boxes, index))
    scores = tf.concat(scores, axis=0)
    best, order = tf.math.top_k(scores, k=min(keep_top_k, int(scores.shape[0])))
    # the label from the candidate's position (class-major): no large constant that a
    # weight quantizer would turn into int8
    labels = tf.gather(tf.constant(classes, tf.float32), order // top_k)
    rows = tf.concat([labels[:, None], best[:, None],
                      tf.gather(tf.concat(kept, axis=0), order)], axis=1)
    rows = tf.where((best >= 0.0)[:, None], rows, 0.0)
    missing = keep_top_k - int(rows.shape[0])  # fewer candidates than keep_top_k: pad
    return tf.pad(rows, [[0, missing], [0, 0]]) if missing else rows


def _single_image_function(heads: keras.Model, priors: np.ndarray, settings: dict[str, Any]):
    """The batch-1 graph of LiteRT and ONNX: images -> ``{"detections": (1, keep_top_k, 6)}``."""
    signature = [tf.TensorSpec((1, *heads.input_shape[1:]), tf.float32, name="images")]

    @tf.function(input_signature=signature)
    def serve(images):
        loc, conf = heads(images, training=False)
        return {"detections": detection_rows(loc[0], conf[0], priors, settings)[tf.newaxis]}

    return serve, signature


# --------------------------------------------------------------------------- #
# Calibration
# --------------------------------------------------------------------------- #
def calibration_images(source: Any, input_shape: Sequence[int] = (300, 300, 3),
                       size: int = DEFAULT_CALIBRATION_SIZE) -> np.ndarray:
    """Preprocessed images ``(n, H, W, 3)`` float32 to calibrate int8 activations.

    Args:
        source: an array of preprocessed images ``(n, H, W, 3)``; a folder of images (searched
            recursively, sorted); or an annotation CSV (its distinct images, in order). Images
            are loaded, resized and preprocessed as for detection.
        input_shape: the model's ``(H, W, 3)``.
        size: at most this many images (the first ones).

    Raises:
        ValueError: the set is empty, or the array has the wrong shape.
        FileNotFoundError: the folder or CSV does not exist.
        ImageLoadError: an image cannot be read.
    """
    size = positive_int(size, "calibration size")
    height, width = int(input_shape[0]), int(input_shape[1])
    if isinstance(source, np.ndarray):
        images = np.asarray(source, np.float32)
        if images.ndim != 4 or images.shape[1:] != (height, width, 3):
            raise ValueError(f"calibration images must be (n, {height}, {width}, 3) preprocessed, got {images.shape}")
        if not len(images):
            raise ValueError("the calibration array is empty")
        return images[:size]
    path = Path(source)
    if path.is_dir():
        from .data.csv_tools import list_images

        files = list_images(path)
    elif path.is_file() and path.suffix.lower() == ".csv":
        from .data.annotations import read_annotations

        files = list(dict.fromkeys(record["image_path"] for record in read_annotations(path)[0]))
    elif path.exists():
        raise ValueError(f"calibration source {path} is neither a folder of images nor an annotation .csv")
    else:
        raise FileNotFoundError(f"calibration source not found: {path}")
    if not files:
        raise ValueError(f"calibration source {path} has no images")
    batch = np.stack([resize_image(load_image(file), (height, width)) for file in files[:size]])
    return preprocess_input(batch).astype(np.float32)


# --------------------------------------------------------------------------- #
# Converters
# --------------------------------------------------------------------------- #
def _write_saved_model(folder: Path, model: keras.Model, function, signature) -> None:
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", function, input_signature=signature)
    archive.write_out(str(folder), verbose=False)


def _litert_bytes(heads, priors, settings, precision: str, calibration: np.ndarray | None, work: Path) -> bytes:
    serve, signature = _single_image_function(heads, priors, settings)
    _write_saved_model(work / "saved_model", heads, serve.python_function, signature)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(work / "saved_model"))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        return _litert_int8(converter, calibration)
    return converter.convert()


def _litert_int8(converter, calibration: np.ndarray) -> bytes:
    """Full-integer LiteRT: calibrated, then quantized with the confidences (softmax), decoding
    and NMS kept in float32 (``denylisted_nodes``): int8 boxes and labels would lose a pixel
    and their integer values, and NMS has no int8 kernel anyway."""
    converter.representative_dataset = lambda: ([image[np.newaxis]] for image in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: ([image[np.newaxis]] for image in calibration[:1]))
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(  # TOPK_V2: its node name alone is not enough
        denylisted_nodes=_float_tail(debugger.calibrated_model), denylisted_ops=["TOPK_V2"])
    return debugger.get_nondebug_quantized_model()


def _float_tail(content: bytes) -> list[str]:
    """Output tensor names of every LiteRT op from the confidences' softmax
    (``mbox_conf_final``) or the offsets' reshape (``mbox_loc_final``) on: the detection tail."""
    from ai_edge_litert import schema_py_generated as schema

    graph = schema.Model.GetRootAs(content, 0).Subgraphs(0)
    names = [graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength())]
    tail, nodes = set(), []  # tensors of the tail; names of the ops kept in float
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        inputs, outputs = op.InputsAsNumpy(), [int(o) for o in op.OutputsAsNumpy()]
        produced = [names[o] for o in outputs]
        if any(HEAD_LAYERS[0] in name for name in produced):  # the offsets: int8 up to here, float after
            tail.update(outputs)
        elif any(HEAD_LAYERS[1] in name and "Softmax" in name for name in produced) \
                or any(int(t) in tail for t in inputs if t >= 0):
            tail.update(outputs)
            nodes += produced
    if not nodes:
        raise RuntimeError("could not find the detection tail in the LiteRT graph (no mbox_conf_final softmax)")
    return nodes


def _onnx_compressed_weights(model, precision: str):
    """Weights stored smaller, each behind a node that gives back float32 under its old name, so
    that compute stays float32 (ONNX Runtime folds these nodes when it loads the file):
    ``float16``: every float32 initializer of 2+ dimensions as float16, behind a ``Cast``;
    ``dynamic``: every convolution kernel as int8, symmetric per output channel, behind a
    ``DequantizeLinear``. (ONNX Runtime's own dynamic quantization turns convolutions into
    ``ConvInteger``, which ran at 0.24x Keras here: ``bench/RESULTS.md``.)"""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    kernels = {node.input[1] for node in graph.node if node.op_type == "Conv"}
    restoring = []
    for initializer in list(graph.initializer):
        name = initializer.name
        if initializer.data_type != onnx.TensorProto.FLOAT or len(initializer.dims) < 2:
            continue
        weights = numpy_helper.to_array(initializer)
        if precision == "float16":
            stored = [numpy_helper.from_array(weights.astype(np.float16), f"{name}__fp16")]
            node = onnx.helper.make_node("Cast", [stored[0].name], [name], to=onnx.TensorProto.FLOAT)
        elif name in kernels:
            peak = np.abs(weights).reshape(len(weights), -1).max(axis=1)
            scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
            values = np.clip(np.round(weights / scale.reshape(-1, *[1] * (weights.ndim - 1))), -127, 127)
            stored = [numpy_helper.from_array(values.astype(np.int8), f"{name}__int8"),
                      numpy_helper.from_array(scale, f"{name}__scale"),
                      numpy_helper.from_array(np.zeros(len(weights), np.int8), f"{name}__zero")]
            node = onnx.helper.make_node("DequantizeLinear", [t.name for t in stored], [name], axis=0)
        else:
            continue
        graph.initializer.remove(initializer)
        graph.initializer.extend(stored)
        node.name = f"{name}__restore"
        restoring.append(node)
    for node in reversed(restoring):
        graph.node.insert(0, node)
    return model


class _CalibrationReader:
    """ONNX Runtime's calibration data reader over preprocessed images."""

    def __init__(self, images: np.ndarray, input_name: str):
        self._batches = iter([{input_name: image[np.newaxis]} for image in images])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self):  # some ORT calibrators rewind
        pass


def _onnx_bytes(heads, priors, settings, precision: str, calibration: np.ndarray | None, work: Path) -> bytes:
    import onnx
    import tf2onnx

    serve, signature = _single_image_function(heads, priors, settings)
    float_path = work / "float32.onnx"
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=ONNX_OPSET)
    if precision in ("float16", "dynamic"):
        proto = _onnx_compressed_weights(proto, precision)
    if precision != "int8":
        return proto.SerializeToString()
    onnx.save(proto, str(float_path))
    from onnxruntime import quantization as q

    out = work / f"{precision}.onnx"
    q.quantize_static(str(float_path), str(out), _CalibrationReader(calibration, "images"),
                      quant_format=q.QuantFormat.QDQ, per_channel=True, activation_type=q.QuantType.QUInt8,
                      weight_type=q.QuantType.QInt8, op_types_to_quantize=list(ONNX_QUANTIZED_OPS))
    return out.read_bytes()


def _with_litert_metadata(content: bytes, metadata: dict[str, Any]) -> bytes:
    """The LiteRT flatbuffer with a metadata buffer ``ssd_keras`` holding ``metadata`` as JSON."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_KEY, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _with_onnx_metadata(content: bytes, metadata: dict[str, Any]) -> bytes:
    import onnx

    model = onnx.load_from_string(content)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    model.producer_name, model.producer_version = "ssd_keras", __version__
    return model.SerializeToString()


# --------------------------------------------------------------------------- #
# The one entry point
# --------------------------------------------------------------------------- #
@contextlib.contextmanager
def _native_output_quieted():
    """The converters' C++ chatter (``fully_quantize: 0, ...``) on file descriptors 1 and 2 is
    kept back, and shown only when the conversion fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(captured.fileno(), 1)
            os.dup2(captured.fileno(), 2)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
                yield
        except BaseException:
            os.dup2(saved[1], 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace")[-4000:])
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def export_model(model: keras.Model, path: str | os.PathLike[str], format: str | None = None,
                 precision: str = "float32", calibration: Any = None, keep_top_k: int = 200,
                 calibration_size: int = DEFAULT_CALIBRATION_SIZE, class_names: Sequence[str] | None = None,
                 **detection_kwargs: Any) -> Path:
    """Exports an SSD300 with decoding and NMS inside, for LiteRT, ONNX Runtime or TensorFlow.

    Args:
        model: a model built by :func:`ssd_keras.SSD300` (any classes, widths and priors).
        path: the file to write (``.tflite``, ``.onnx``) or, for ``saved_model``, the folder.
        format: ``"litert"``, ``"onnx"`` or ``"saved_model"``; None: from ``path``'s suffix
            (``.tflite``, ``.onnx``). A file's suffix must be its format's.
        precision: ``"float32"``; ``"float16"`` (float16 weights, float32 compute);
            ``"dynamic"`` (int8 weights, float activations); ``"int8"`` (int8 weights and
            activations, calibrated; input and output stay float32). SavedModel is float32 only.
        calibration: for ``int8``: preprocessed images, a folder of images or an annotation CSV
            (see :func:`calibration_images`).
        keep_top_k: detection rows per image (zero rows pad the rest).
        calibration_size: calibration images used, at most.
        class_names: recorded in the file (without background) for ``load_exported``; default
            ``class_1``, ``class_2``, ...
        **detection_kwargs: ``background_label_id``, ``confidence_threshold``, ``nms_thresh``,
            ``top_k``, as for :class:`ssd_keras.ssd_layers.DetectionOutput`.

    Returns:
        ``path``. Nothing is left at ``path`` when the export fails.

    Raises:
        ValueError: an unknown format or precision, a precision the format lacks, int8 without
            calibration, an empty calibration set, a model that is not an SSD300, class names
            that do not match the model.
        MissingRuntimeError: the converter for ``format`` is not installed (it names the package).
        PermissionError, NotADirectoryError: ``path`` cannot be written.
    """
    require_tensorflow("export_model (the converters trace TensorFlow graphs)")
    path, format = check_export(path, format, precision, calibration is not None)
    heads, priors, num_classes = _ssd_heads(model)
    settings = _detection_settings(num_classes, keep_top_k, detection_kwargs)
    names = [str(name) for name in class_names] if class_names is not None else \
        [f"class_{i}" for i in range(1, num_classes)]
    if len(names) != num_classes - 1:
        raise ValueError(f"{len(names)} class names for a model of {num_classes - 1} classes (+ background)")
    images = calibration_images(calibration, heads.input_shape[1:], calibration_size) \
        if precision == "int8" else None
    metadata = {"format": format, "precision": precision, "class_names": names,
                "input_shape": list(heads.input_shape[1:]), "ssd_keras_version": __version__, **settings}

    if format == "saved_model":
        _export_saved_model(model, path, settings, metadata)
        return path
    with tempfile.TemporaryDirectory(prefix="ssd_keras_export_") as work, _native_output_quieted():
        if format == "litert":
            content = _with_litert_metadata(
                _litert_bytes(heads, priors, settings, precision, images, Path(work)), metadata)
        else:
            content = _with_onnx_metadata(
                _onnx_bytes(heads, priors, settings, precision, images, Path(work)), metadata)
    with atomic_path(path) as tmp:
        tmp.write_bytes(content)
    return path


def _export_saved_model(model: keras.Model, path: Path, settings: dict[str, Any], metadata: dict) -> None:
    """A SavedModel folder (dynamic batch, ``serve`` endpoint), written beside ``path`` and
    renamed into place."""
    from .ssd import with_detection_output

    detector = with_detection_output(model, **settings)
    signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="images")]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the folder from other users
    try:
        _write_saved_model(tmp, detector, lambda images: detector(images, training=False), signature)
        (tmp / "assets").mkdir(exist_ok=True)
        (tmp / "assets" / f"{METADATA_KEY}.json").write_text(json.dumps(metadata), encoding="utf-8")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
