"""Loading weights safely: the original port's Keras 1.2 HDF5 files and Keras 3 files.

``model.load_weights(path, by_name=True)`` works on the original ``weights_SSD300.hdf5``, but when
no layer name matches it silently loads nothing. :func:`load_weights` is the front door that
checks: the file exists and is readable, enough layers match, shapes agree; and it says what it
loaded and what it skipped.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from dataclasses import dataclass, field

import h5py
import keras
import numpy as np

__all__ = ["load_weights", "LoadReport", "WeightsFileError", "read_legacy_weights"]

logger = logging.getLogger(__name__)

LEGACY_SUFFIXES = (".h5", ".hdf5")
KERAS3_WEIGHTS_SUFFIX = ".weights.h5"
KERAS_SUFFIX = ".keras"
MIN_MATCHED_FRACTION = 0.5


class WeightsFileError(OSError):
    """A weights file that exists but cannot be read (truncated, corrupt, wrong format)."""


@dataclass
class LoadReport:
    """What :func:`load_weights` did.

    Attributes:
        path: the file.
        format: ``"legacy-h5"`` (Keras 1/2 ``save_weights`` layout, loaded by layer name),
            ``"weights.h5"`` or ``"keras"`` (Keras 3 files, loaded by Keras).
        loaded: names of the model layers whose weights were set from the file.
        skipped: ``{layer name: reason}`` for model layers with weights that were not set
            (absent from the file, or a shape mismatch with ``skip_mismatch=True``).
        unused: names of file layers that match no layer of the model.
    """

    path: str
    format: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [(f"{self.path} ({self.format}): loaded {len(self.loaded)} layers, "
                  f"skipped {len(self.skipped)}, unused in file {len(self.unused)}")]
        lines += [f"  skipped {name}: {reason}" for name, reason in self.skipped.items()]
        return "\n".join(lines)


def _decode(values) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _legacy_root(f: h5py.File) -> h5py.Group | None:
    if "layer_names" in f.attrs:
        return f
    if "model_weights" in f and "layer_names" in f["model_weights"].attrs:
        return f["model_weights"]
    return None


def read_legacy_weights(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Reads a Keras 1/2 ``save_weights`` HDF5 file (or a whole-model file's ``model_weights``).

    Args:
        path: the file.

    Returns:
        ``{layer name: [arrays in the file's weight order]}`` for every layer the file lists
        (layers without weights, like pools, map to ``[]``).

    Raises:
        FileNotFoundError, WeightsFileError: see :func:`load_weights`.
    """
    path = os.fspath(path)
    with _open_h5(path) as f:
        root = _legacy_root(f)
        if root is None:
            raise WeightsFileError(f"{path}: not a Keras weights file (no 'layer_names' "
                                   f"attribute at its root or in 'model_weights')")
        return _read_legacy_group(path, root)


def _read_legacy_group(path: str, root: h5py.Group) -> dict[str, list[np.ndarray]]:
    weights = {}
    for name in _decode(root.attrs["layer_names"]):
        try:
            group = root[name]
            names = _decode(group.attrs.get("weight_names", []))
            weights[name] = [np.asarray(group[w]) for w in names]
        except (KeyError, OSError, ValueError) as err:
            raise WeightsFileError(f"{path}: cannot read the weights of layer {name!r} "
                                   f"(truncated or corrupt file?): {err}") from err
    return weights


def _open_h5(path: str, fileobj=None) -> h5py.File:
    if fileobj is None and not os.path.exists(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if fileobj is None and os.path.isdir(path):
        raise WeightsFileError(f"{path}: is a directory, expected a weights file")
    try:
        return h5py.File(fileobj if fileobj is not None else path, "r")
    except OSError as err:
        raise WeightsFileError(f"{path}: cannot be read as HDF5 (truncated or corrupt "
                               f"file?): {err}") from err


def _weighted_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    return {layer.name: layer for layer in model.layers if layer.weights}


def _check_enough(path: str, model: keras.Model, report: LoadReport, total: int) -> None:
    if total == 0:
        raise ValueError(f"model {model.name!r} has no weights to load from {path}")
    if len(report.loaded) < MIN_MATCHED_FRACTION * total:
        examples = ", ".join(sorted(report.skipped)[:5])
        raise ValueError(
            f"{path}: only {len(report.loaded)} of the {total} layers with weights of model "
            f"{model.name!r} would load from it (e.g. not loaded: {examples}); this file does not "
            f"belong to this model. Nothing was loaded.")


def _shape_problem(layer, values) -> str | None:
    variables = layer.trainable_weights + layer.non_trainable_weights  # the legacy order
    if len(values) != len(variables):
        return f"the file has {len(values)} weights, the layer has {len(variables)}"
    for var, value in zip(variables, values):
        if tuple(var.shape) != tuple(value.shape):
            return (f"shape mismatch for {var.path}: file {tuple(value.shape)}, "
                    f"model {tuple(var.shape)}")
    return None


def _load_legacy(model, path, root, skip_mismatch) -> LoadReport:
    file_weights = _read_legacy_group(path, root)
    report = LoadReport(path, "legacy-h5")
    layers = _weighted_layers(model)
    plan = []
    for name, layer in layers.items():
        if name not in file_weights:
            report.skipped[name] = "not in the file"
            continue
        problem = _shape_problem(layer, file_weights[name])
        if problem is None:
            plan.append((layer, file_weights[name]))
            report.loaded.append(name)
        elif skip_mismatch:
            report.skipped[name] = problem
        else:
            raise ValueError(f"{path}: layer {name!r}: {problem} (pass skip_mismatch=True to "
                             f"skip such layers). Nothing was loaded.")
    report.unused = [n for n, w in file_weights.items() if w and n not in layers]
    _check_enough(path, model, report, len(layers))
    # Everything is checked before the first assignment: an error leaves the model untouched.
    for layer, values in plan:
        for var, value in zip(layer.trainable_weights + layer.non_trainable_weights, values):
            var.assign(value.astype(var.dtype))
    return report


def _dataset_shapes(group: h5py.Group) -> list[tuple[int, ...]]:
    shapes = []
    group.visititems(lambda _, obj: shapes.append(tuple(obj.shape))
                     if isinstance(obj, h5py.Dataset) else None)
    return shapes


def _keras3_file_layers(f: h5py.File) -> dict[str, list[tuple[int, ...]]]:
    """Top-level layers of a Keras 3 weights file: ``{layer name: shapes of its variables}``."""
    found = {}
    layers_group = f.get("layers")
    if layers_group is None:
        return found
    for key in layers_group:
        group = layers_group[key]
        vars_group = group.get("vars")
        name = _decode([vars_group.attrs.get("name", key)])[0] if vars_group is not None else key
        shapes = _dataset_shapes(group)
        if shapes:
            found[name] = shapes
    return found


def _load_keras3(model, path, fmt, f, skip_mismatch) -> LoadReport:
    file_layers = _keras3_file_layers(f)
    report = LoadReport(path, fmt)
    layers = _weighted_layers(model)
    for name, layer in layers.items():
        if name not in file_layers:
            report.skipped[name] = "not in the file"
            continue
        model_shapes = sorted(tuple(w.shape) for w in layer.weights)
        if model_shapes == sorted(file_layers[name]):
            report.loaded.append(name)
        elif skip_mismatch:
            report.skipped[name] = (f"shape mismatch: file {sorted(file_layers[name])}, "
                                    f"model {model_shapes}")
        else:
            raise ValueError(f"{path}: layer {name!r}: shape mismatch: file "
                             f"{sorted(file_layers[name])}, model {model_shapes} (pass "
                             f"skip_mismatch=True to skip such layers). Nothing was loaded.")
    report.unused = [n for n in file_layers if n not in layers]
    _check_enough(path, model, report, len(layers))
    return report


def load_weights(model: keras.Model, path: str | os.PathLike,
                 skip_mismatch: bool = False) -> LoadReport:
    """Loads weights into ``model`` from any supported file, checking that they belong to it.

    Formats, told apart by the file name:

    - ``*.weights.h5`` (Keras 3 ``save_weights``) and ``*.keras`` (Keras 3 ``save``): loaded by
      Keras, by the model's structure, after the checks below.
    - other ``*.h5`` / ``*.hdf5``: the Keras 1/2 ``save_weights`` layout of the original port
      (``weights_SSD300.hdf5``), or a whole-model file's ``model_weights`` group: loaded by
      layer name, like ``model.load_weights(path, by_name=True)``.

    Args:
        model: a built model (for example from :func:`ssd_keras.SSD300`).
        path: the weights file.
        skip_mismatch: skip layers whose weight shapes differ from the file's (for example
            confidence heads of another class count) instead of raising.

    Returns:
        A :class:`LoadReport` of loaded, skipped and unused layers.

    Raises:
        FileNotFoundError: the file does not exist.
        WeightsFileError: the file is truncated, corrupt or not a weights file.
        ValueError: fewer than half of the model's layers with weights would load (none
            matching by name is the usual case: a file of another model), or a shape mismatch
            without ``skip_mismatch``. The model is left untouched.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    lower = path.lower()
    if lower.endswith(KERAS_SUFFIX):
        if not zipfile.is_zipfile(path):
            raise WeightsFileError(f"{path}: not a valid .keras archive (truncated or corrupt?)")
        try:
            with zipfile.ZipFile(path) as archive:
                data = archive.read("model.weights.h5")
        except (KeyError, zipfile.BadZipFile, OSError) as err:
            raise WeightsFileError(f"{path}: cannot read model.weights.h5 from the .keras "
                                   f"archive: {err}") from err
        with _open_h5(path, io.BytesIO(data)) as f:
            report = _load_keras3(model, path, "keras", f, skip_mismatch)
    elif lower.endswith(LEGACY_SUFFIXES):  # .weights.h5 included: tell them apart inside
        with _open_h5(path) as f:
            root = _legacy_root(f)
            if root is not None:
                report = _load_legacy(model, path, root, skip_mismatch)
            elif lower.endswith(KERAS3_WEIGHTS_SUFFIX):
                report = _load_keras3(model, path, "weights.h5", f, skip_mismatch)
            else:
                raise WeightsFileError(
                    f"{path}: no 'layer_names' attribute at its root or in 'model_weights': not "
                    f"a Keras 1/2 weights file (a Keras 3 weights file must end in .weights.h5)")
    else:
        raise ValueError(f"{path}: unknown weights format; expected .h5/.hdf5 (legacy), "
                         f".weights.h5 or .keras")
    if report.format != "legacy-h5":
        try:
            model.load_weights(path, skip_mismatch=skip_mismatch)
        except (ValueError, OSError, KeyError) as err:
            raise WeightsFileError(f"{path}: Keras could not load it into model "
                                   f"{model.name!r}: {err}") from err
    logger.info("%s", report)
    return report
