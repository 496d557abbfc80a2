"""Which model to run: one rule for every entry point (CLI commands, demo, notebooks, video).

:func:`resolve_model` turns what a user gave (a weights file, class names, a width) into a built,
loaded SSD300 and says in words what it is:

1. ``weights`` given: the file must exist. When a run configuration lies beside it (a training
   run's ``config.json``, or ``<name>.json`` beside ``<name>.weights.h5`` as the embedded demo
   model ships), the model is rebuilt from it (classes, width, input size); classes or a width
   that contradict it are an error; its optional ``priors`` key (a prior configuration's JSON
   object, see :mod:`ssd_keras.priors`) gives the heads, so a model trained with custom priors
   is rebuilt with them. Otherwise SSD300 for ``classes`` (default: the 20 VOC
   classes) at ``width_multiplier`` (default 1.0).
2. No ``weights``: the VOC weights (:func:`find_default_weights`) when the requested classes
   are VOC's (or none were named); else, when no classes were named, the embedded shapes model
   (:data:`DEMO_WEIGHTS`, shipped inside the package).
3. An untrained network only when asked for (``allow_untrained``), with its classes.

It also holds the quiet TensorFlow start that the CLI, notebooks and scripts use. This module
imports no TensorFlow until a model is built.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from .runs import find_run_config

__all__ = ["DEFAULT_WEIGHTS_NAME", "WEIGHTS_ENV", "WEIGHTS_HELP", "DEMO_WEIGHTS", "DEMO_CONFIG",
           "ResolvedModel", "import_tensorflow_quietly", "find_default_weights", "read_class_names",
           "resolve_model", "load_demo_model"]

DEFAULT_WEIGHTS_NAME = "weights_SSD300.hdf5"
WEIGHTS_ENV = "SSD_KERAS_WEIGHTS"
WEIGHTS_HELP = (f"see weights/README.md for where to get {DEFAULT_WEIGHTS_NAME}; put it at "
                f"./weights/{DEFAULT_WEIGHTS_NAME} or name it in ${WEIGHTS_ENV}")
_ASSETS = resources.files(__package__) / "assets"
DEMO_WEIGHTS = Path(str(_ASSETS / "ssd300_shapes.weights.h5"))
"""The embedded shapes model's weights (package data)."""
DEMO_CONFIG = Path(str(_ASSETS / "ssd300_shapes.json"))
"""Its training run's ``config.json``."""
_CHECKOUT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"  # only in a source checkout
_RUN_KEYS = ("classes", "width_multiplier", "input_shape")


class ResolvedModel(tuple):
    """What :func:`resolve_model` returns: unpacks as ``model, class_names, description``; the same
    as attributes, and ``trained``, False only for the untrained network of ``allow_untrained``."""

    def __new__(cls, model: Any, class_names: list[str], description: str, trained: bool = True):
        resolved = super().__new__(cls, (model, class_names, description))
        resolved.trained = trained
        return resolved

    model = property(lambda self: self[0], doc="the built, loaded keras.Model")
    class_names = property(lambda self: self[1], doc="class names without background")
    description = property(lambda self: self[2], doc="which model this is, in words")


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with its C++ start-up log lines silenced.

    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless the user chose a level, and sends the native
    stderr to ``/dev/null`` while TensorFlow loads and looks for devices (the oneDNN and CUDA
    notices are printed there before any log level applies; GPUs are still found and used).
    Python exceptions still propagate. Used by the CLI, notebooks, scripts and tests; importing
    the library itself changes no global state.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    try:
        saved = os.dup(2)
    except OSError:  # no usable file descriptor 2 (embedded interpreters)
        import tensorflow  # noqa: F401
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    logging.getLogger("absl").setLevel(logging.ERROR)


def find_default_weights() -> Path | None:
    """The VOC weights to use when none are named: ``$SSD_KERAS_WEIGHTS``, then
    ``./weights/weights_SSD300.hdf5``, then the ``weights/`` folder of a source checkout.

    Raises:
        FileNotFoundError: ``$SSD_KERAS_WEIGHTS`` is set but names no file.
    """
    named = os.environ.get(WEIGHTS_ENV)
    if named:
        if not Path(named).is_file():
            raise FileNotFoundError(f"${WEIGHTS_ENV} names {named}, which is not a file ({WEIGHTS_HELP})")
        return Path(named)
    for folder in (Path.cwd() / "weights", _CHECKOUT_WEIGHTS):
        candidate = folder / DEFAULT_WEIGHTS_NAME
        if candidate.is_file():
            return candidate
    return None


def read_class_names(spec: str) -> list[str]:
    """``"voc"`` for the 20 Pascal VOC classes, or a class-list file (one name per line, see
    :func:`ssd_keras.data.read_class_list`)."""
    from .data.classes import VOC_CLASSES, read_class_list

    return list(VOC_CLASSES) if spec.lower() == "voc" else read_class_list(spec)


def _is_voc(class_names: Sequence[str] | None) -> bool:
    from .data.classes import VOC_CLASSES

    return class_names is None or list(class_names) == list(VOC_CLASSES)


def _build(weights: Path | None, class_names: Sequence[str], width_multiplier: float,
           input_shape: Sequence[int], priors: Any = None) -> tuple[Any, str]:
    from .ssd import SSD300
    from .weights import load_weights

    model = SSD300(tuple(input_shape), num_classes=len(class_names) + 1, width_multiplier=width_multiplier,
                   priors=priors)
    if weights is None:
        return model, ""
    report = load_weights(model, weights)
    note = f"{len(report.loaded)} layers loaded"
    if report.skipped:
        note += f"; {len(report.skipped)} not in the file keep random weights: {', '.join(report.skipped)}"
    return model, note


def _from_file(path: Path, class_names: list[str] | None, width_multiplier: float | None,
               source: str) -> ResolvedModel:
    found = find_run_config(path, _RUN_KEYS)
    if found is None:
        names = list(class_names) if class_names is not None else read_class_names("voc")
        width = 1.0 if width_multiplier is None else width_multiplier
        model, note = _build(path, names, width, (300, 300, 3))
        return ResolvedModel(model, names, f"{source}{path} ({note})")
    config, config_path = found
    run_names = [str(name) for name in config["classes"]]
    conflicts = []
    if class_names is not None and list(class_names) != run_names:
        conflicts.append(f"classes {', '.join(class_names)} (the run's: {', '.join(run_names)})")
    if width_multiplier is not None and float(width_multiplier) != float(config["width_multiplier"]):
        conflicts.append(f"width multiplier {width_multiplier} (the run's: {config['width_multiplier']})")
    if conflicts:
        raise ValueError(f"{path} belongs to the run described by {config_path}, which differs in "
                         + "; ".join(conflicts) + ": leave these options out to use the run's")
    model, note = _build(path, run_names, float(config["width_multiplier"]), config["input_shape"],
                         _run_priors(config, config_path))
    return ResolvedModel(model, run_names, f"{source}{path} ({note}; model from {config_path})")


def _run_priors(config: dict[str, Any], config_path: Path) -> Any:
    """The prior configuration of a run's ``config.json`` (its optional ``priors`` key), checked."""
    from .priors import PriorConfig

    if config.get("priors") is None:
        return None
    try:
        return PriorConfig.from_dict(config["priors"])
    except ValueError as err:
        raise ValueError(f"{config_path}: priors: {err}") from None


def resolve_model(weights: str | os.PathLike[str] | None = None, classes: Sequence[str] | None = None,
                  width_multiplier: float | None = None, allow_untrained: bool = False,
                  untrained_classes: Sequence[str] | None = None) -> ResolvedModel:
    """The model an entry point runs (the rule is in the module docstring).

    Args:
        weights: a weights file (legacy ``.h5/.hdf5``, ``.weights.h5``, ``.keras``), or None.
        classes: class names without background, or None for "the weights' own".
        width_multiplier: SSD300's width for weights without a run configuration (default 1.0).
        allow_untrained: with no weights to be found, build an untrained, seeded network
            instead of raising.
        untrained_classes: classes of that network when ``classes`` is None (default: VOC's).

    Returns:
        ``ResolvedModel(model, class_names, description)``; ``description`` says in words which
        model this is and where its weights came from.

    Raises:
        FileNotFoundError: ``weights`` is not a file, or nothing fits and ``allow_untrained``
            is false.
        ValueError: the weights' run configuration contradicts ``classes`` or
            ``width_multiplier``, or the weights do not fit the model.
    """
    names = None if classes is None else [str(name) for name in classes]
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {weights} ({WEIGHTS_HELP})")
        return _from_file(path, names, width_multiplier, "")
    voc = find_default_weights()
    if voc is not None and _is_voc(names) and width_multiplier in (None, 1.0):
        return _from_file(voc, names, width_multiplier, "VOC weights ")
    if names is None and DEMO_WEIGHTS.is_file():
        found = _from_file(DEMO_WEIGHTS, None, width_multiplier, "")
        return ResolvedModel(found.model, found.class_names, (
            f"the embedded shapes model ({', '.join(found.class_names)}; no VOC weights found: "
            f"{WEIGHTS_HELP})"))
    if not allow_untrained:
        raise FileNotFoundError(f"no weights for the classes {', '.join(names or ['of VOC'])}: pass --weights PATH "
                                f"(a training run's weights bring their classes), or --allow-untrained to "
                                f"run an untrained network ({WEIGHTS_HELP})")
    import keras

    keras.utils.set_random_seed(0)  # the untrained network is at least repeatable
    names = names if names is not None else list(untrained_classes or read_class_names("voc"))
    model, _ = _build(None, names, 1.0 if width_multiplier is None else width_multiplier, (300, 300, 3))
    return ResolvedModel(model, names, "an UNTRAINED SSD300 (random weights: its detections are meaningless)",
                         trained=False)


def load_demo_model(weights: str | os.PathLike | None = None,
                    config: str | os.PathLike | None = None) -> tuple[Any, list[str]]:
    """Rebuilds the embedded demo model (or another run's, given its weights and configuration).

    Args:
        weights: the ``.weights.h5`` file (default: :data:`DEMO_WEIGHTS`, shipped in the package).
        config: the run's ``config.json`` (default: the JSON beside the weights).

    Returns:
        ``(model, class_names)``: an ``SSD300`` ready for ``predict`` (input 300x300,
        ``preprocess_input``-ed) and its class names without background.

    Raises:
        FileNotFoundError: a file is missing.
    """
    from .runs import read_run_config

    weights = Path(weights or DEMO_WEIGHTS)
    for path in (weights, config):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"demo model file not found: {path}")
    if config is None:
        found = find_run_config(weights, _RUN_KEYS)
        if found is None:
            raise FileNotFoundError(f"no run configuration beside {weights}")
        settings, config = found
    else:
        settings = read_run_config(config, _RUN_KEYS)
    names = [str(name) for name in settings["classes"]]
    model, _ = _build(weights, names, float(settings["width_multiplier"]), settings["input_shape"],
                      _run_priors(settings, Path(config)))
    return model, names
