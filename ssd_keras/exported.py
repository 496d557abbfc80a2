"""Running exported SSD300 files (:func:`ssd_keras.export.export_model`) with the runtime a
device has: the standalone LiteRT interpreter (``ai-edge-litert``) for ``.tflite``, ONNX Runtime
(CPU provider) for ``.onnx``, TensorFlow for a SavedModel folder.

:func:`load_exported` returns an :class:`ExportedModel` whose ``predict`` gives the rows of
``BBoxUtility.detection_out`` and whose ``detect`` takes RGB images of any size, as
:func:`ssd_keras.detect` does: ``detect --model``, ``evaluate --model`` and ``videotest.py
--model`` run the very file a user deploys. This module imports no TensorFlow or Keras (only a
SavedModel loads TensorFlow).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import layout
from .checks import MissingDependencyError

__all__ = ["load_exported", "ExportedModel", "MissingRuntimeError", "FORMATS", "PRECISIONS", "format_of",
           "require_runtime", "check_export", "export_format", "DEFAULT_CALIBRATION_SIZE"]

FORMATS = {"litert": ".tflite", "onnx": ".onnx", "saved_model": ""}
"""Export formats and their file suffixes (a SavedModel is a folder)."""
PRECISIONS = ("float32", "float16", "dynamic", "int8")
DEFAULT_CALIBRATION_SIZE = 200
"""Images used to calibrate int8 activations, at most."""
METADATA_KEY = "ssd_keras"
"""Name of the metadata entry that records class names and settings in an exported file."""
PACKAGES = {"ai_edge_litert": "ai-edge-litert", "onnxruntime": "onnxruntime", "onnx": "onnx",
            "tf2onnx": "tf2onnx", "tensorflow": "tensorflow"}
"""Module -> the pip package that provides it."""


class MissingRuntimeError(MissingDependencyError):
    """The package a format needs is not installed; the message says what to install."""


def require_runtime(module: str) -> None:
    """Raises :class:`MissingRuntimeError` naming the pip package when ``module`` is missing."""
    if importlib.util.find_spec(module) is None:
        package = PACKAGES.get(module, module)
        raise MissingRuntimeError(f"{module} is not installed: pip install {package} "
                                  f"(or pip install 'ssd_keras[export]')")


def _runtimes(format: str, precision: str) -> list[str]:
    """The modules exporting to ``format`` at ``precision`` needs."""
    modules = {"litert": ["ai_edge_litert"], "onnx": ["onnx", "tf2onnx"], "saved_model": []}[format]
    return modules + (["onnxruntime"] if format == "onnx" and precision in ("dynamic", "int8") else [])


def _check_writable(path: Path, format: str) -> None:
    """PermissionError / NotADirectoryError unless ``path`` can be written: a file is created for
    real in the nearest folder that exists (``os.access`` says yes to root on read-only or
    virtual file systems such as ``/proc``)."""
    if path.exists() and path.is_dir() != (format == "saved_model"):
        raise ValueError(f"{path} is {'a folder' if path.is_dir() else 'a file'}; {format} writes "
                         f"{'a folder' if format == 'saved_model' else 'a file'}")
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {folder} is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".ssd_keras_probe_", dir=folder)
    except OSError as err:
        raise PermissionError(f"cannot write {path}: no file can be created in {folder} "
                              f"({err.strerror or err})") from None
    os.close(handle)
    os.unlink(probe)


def export_format(path: str | os.PathLike[str], format: str | None = None) -> str:
    """The format of an export to ``path``: ``format``, or when None the one its suffix names
    (``.tflite``: litert, ``.onnx``: onnx). A file format needs its suffix (``load_exported``
    recognises files by it); a suffix that names another format is an error.

    Raises:
        ValueError: an unknown format, no format and no suffix naming one, or a contradiction.
    """
    suffix = Path(path).suffix.lower()
    named = {ending: name for name, ending in FORMATS.items() if ending}.get(suffix)
    if format is None:
        if named is None:
            raise ValueError(f"{path}: name the file .tflite (litert) or .onnx (onnx), or give the format "
                             f"(saved_model writes a folder)")
        return named
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
    if named is not None and named != format:
        raise ValueError(f"{path} ends in {suffix}, a {named} file, but the format asked for is {format}")
    if FORMATS[format] and suffix != FORMATS[format]:
        raise ValueError(f"name the {format} file {Path(path).name}{FORMATS[format]}, not {Path(path).name}: "
                         f"load_exported recognises {format} files by that suffix")
    return format


def check_export(path: str | os.PathLike[str], format: str | None, precision: str,
                 calibration: bool) -> tuple[Path, str]:
    """What :func:`ssd_keras.export.export_model` checks before any work (the CLI checks it before
    the model loads): the format (:func:`export_format`) and precision, that a SavedModel is
    float32, that int8 has ``calibration``, that the converters are installed and that ``path``
    can be written.

    Returns:
        ``(path, format)``, the format resolved by :func:`export_format`.

    Raises:
        ValueError, MissingRuntimeError, PermissionError, NotADirectoryError: naming the problem.
    """
    format = export_format(path, format)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if format == "saved_model" and precision != "float32":
        raise ValueError(f"saved_model is float32 only (got precision {precision!r}): for smaller numbers "
                         f"export to litert or onnx")
    if precision == "int8" and not calibration:
        raise ValueError("precision 'int8' needs calibration images (--calibration: a folder of images, an "
                         "annotation CSV or, for the shapes model, 'synthetic'; from Python also an array): "
                         "they fix the int8 ranges of the activations")
    for module in _runtimes(format, precision):
        require_runtime(module)
    path = Path(path)
    _check_writable(path, format)
    return path, format


@contextlib.contextmanager
def _stderr_quieted():
    """Native runtimes' start-up lines on file descriptor 2 (``INFO: Created TensorFlow Lite
    XNNPACK delegate``) are dropped."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def format_of(path: str | os.PathLike[str]) -> str:
    """The format of an exported model from its path: ``.tflite``, ``.onnx`` or a SavedModel
    folder (``saved_model.pb`` inside). ValueError for anything else."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return "saved_model"
        raise ValueError(f"{path} is a folder without saved_model.pb: not a SavedModel")
    for name, suffix in FORMATS.items():
        if suffix and path.suffix.lower() == suffix:
            return name
    raise ValueError(f"{path}: not an exported model (expected .tflite, .onnx or a SavedModel folder)")


class ExportedModel:
    """An exported SSD300 and its runtime.

    Attributes:
        path, format: where the model is and its format.
        class_names: class names without background (label ``i + 1`` is ``class_names[i]``).
        num_classes: classes including background.
        input_shape: ``(H, W, 3)``.
        batch_size: images per call of the runtime (1 for LiteRT and ONNX, None for any).
        settings: the file's recorded metadata (precision, keep_top_k, thresholds, ...).
    """

    def __init__(self, path: Path, format: str, run, metadata: dict[str, Any], batch_size: int | None):
        self.path, self.format, self._run = path, format, run
        self.settings = metadata
        self.class_names = list(metadata["class_names"])
        self.num_classes = len(self.class_names) + 1
        self.input_shape = tuple(int(v) for v in metadata["input_shape"])
        self.batch_size = batch_size
        self.name = path.stem or path.name

    @property
    def description(self) -> str:
        """The model in words: format, precision, path, classes, input and the NMS fixed at export."""
        settings = self.settings
        height, width = self.input_shape[:2]
        return (f"exported {self.format} {settings.get('precision', '?')} file {self.path} (classes "
                f"{', '.join(self.class_names)}; input {height}x{width}; NMS IoU {settings.get('nms_thresh', '?')}, "
                f"confidence > {settings.get('confidence_threshold', '?')} and at most "
                f"{settings.get('keep_top_k', '?')} detections per image, fixed at export)")

    def __repr__(self) -> str:
        return (f"ExportedModel({str(self.path)!r}, format={self.format!r}, "
                f"precision={self.settings.get('precision')!r}, classes={len(self.class_names)})")

    def predict_rows(self, images: np.ndarray) -> np.ndarray:
        """The raw output: ``(n, keep_top_k, 6)`` float32 rows, zero rows as padding."""
        images = np.ascontiguousarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != self.input_shape:
            shape = ", ".join(map(str, self.input_shape))
            raise ValueError(f"{self.path.name} takes preprocessed images (n, {shape}), got shape {images.shape}")
        step = self.batch_size or len(images) or 1
        return np.concatenate([self._run(images[start:start + step]) for start in range(0, len(images), step)]) \
            if len(images) else np.zeros((0, int(self.settings["keep_top_k"]), layout.DETECTION_COLUMNS), np.float32)

    def predict(self, images: np.ndarray, confidence_threshold: float | None = None,
                keep_top_k: int | None = None) -> list[np.ndarray]:
        """Detections of a preprocessed batch ``(n, H, W, 3)``: per image a float64 array of rows
        ``[label, confidence, xmin, ymin, xmax, ymax]`` by decreasing confidence, as
        ``BBoxUtility.detection_out`` gives them. ``confidence_threshold`` and ``keep_top_k``
        may only narrow what the file was exported with (rows are dropped, which equals
        running NMS at the higher threshold)."""
        results = []
        for rows in self.predict_rows(images):
            rows = rows[rows[:, layout.CONFIDENCE] > 0].astype(np.float64)
            if confidence_threshold is not None:
                rows = rows[rows[:, layout.CONFIDENCE] > confidence_threshold]
            results.append(rows[:keep_top_k] if keep_top_k is not None else rows)
        return results

    def detect(self, images: Sequence[np.ndarray], confidence_threshold: float = 0.01,
               keep_top_k: int = 200, batch_size: int = 8) -> list[np.ndarray]:
        """:func:`ssd_keras.detect` with this file: RGB ``uint8`` images of any size are resized
        and preprocessed; rows are normalised to the image."""
        from .image import model_batches

        results = []
        for batch in model_batches(images, self.input_shape[:2], batch_size):
            results += self.predict(batch, confidence_threshold, keep_top_k)
        return results


def _litert(path: Path, threads: int | None) -> tuple[Any, dict, int]:
    require_runtime("ai_edge_litert")
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    content = path.read_bytes()
    try:
        model = schema.Model.GetRootAs(content, 0)
        metadata = next(model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes()
                        for i in range(model.MetadataLength()) if model.Metadata(i).Name() == METADATA_KEY.encode())
    except StopIteration:
        raise ValueError(f"{path} is a LiteRT file but not one ssd_keras exported "
                         f"(no {METADATA_KEY} metadata)") from None
    except Exception as err:  # flatbuffers raises assorted errors on a damaged file
        raise ValueError(f"{path} is not a readable LiteRT model: {err}") from None
    with _stderr_quieted():
        interpreter = Interpreter(model_content=content, num_threads=threads)
        interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]

    def run(images: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(source, images)
        interpreter.invoke()
        return interpreter.get_tensor(target).copy()

    return run, json.loads(metadata), 1


def _onnx(path: Path, threads: int | None) -> tuple[Any, dict, int | None]:
    require_runtime("onnxruntime")
    import onnxruntime as ort

    def open_session(weights_only: bool = False):
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if weights_only:  # int8-stored weights dequantized once, at load: float32 convolutions (1.3x faster)
            options.add_session_config_entry("session.disable_quant_qdq", "1")
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    try:
        session = open_session()
    except Exception as err:
        raise ValueError(f"{path} is not a readable ONNX model: {err}") from None
    metadata = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if metadata is None:
        raise ValueError(f"{path} is an ONNX model but not one ssd_keras exported (no {METADATA_KEY} metadata)")
    metadata = json.loads(metadata)
    if metadata.get("precision") == "dynamic":
        session = open_session(weights_only=True)
    name = session.get_inputs()[0].name
    batch = session.get_inputs()[0].shape[0]
    return (lambda images: session.run(None, {name: images})[0]), metadata, batch if isinstance(batch, int) else None


def _saved_model(path: Path, threads: int | None) -> tuple[Any, dict, None]:
    require_runtime("tensorflow")
    from .models import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf

    metadata_file = path / "assets" / f"{METADATA_KEY}.json"
    if not metadata_file.exists():
        raise ValueError(f"{path} is a SavedModel but not one ssd_keras exported (no assets/{METADATA_KEY}.json)")
    serve = tf.saved_model.load(str(path)).signatures["serve"]
    (output,) = serve.structured_outputs

    def run(images: np.ndarray) -> np.ndarray:
        return serve(images=tf.constant(images))[output].numpy()

    return run, json.loads(metadata_file.read_text(encoding="utf-8")), None


def load_exported(path: str | os.PathLike[str], threads: int | None = None) -> ExportedModel:
    """Opens an exported SSD300 with its runtime.

    Args:
        path: a ``.tflite`` or ``.onnx`` file or a SavedModel folder written by
            :func:`ssd_keras.export.export_model`.
        threads: CPU threads of the runtime (default: the runtime's choice).

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: not an exported SSD300 (wrong suffix, unreadable, no ssd_keras metadata).
        MissingRuntimeError: the runtime is not installed (names the pip package).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"exported model not found: {path}")
    format = format_of(path)
    loader = {"litert": _litert, "onnx": _onnx, "saved_model": _saved_model}[format]
    run, metadata, batch_size = loader(path, threads)
    return ExportedModel(path, format, run, metadata, batch_size)
