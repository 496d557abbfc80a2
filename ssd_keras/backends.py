"""Which Keras backend runs the models: TensorFlow (the default), JAX or PyTorch.

Keras 3 fixes its backend when it is first imported: ``KERAS_BACKEND`` in the environment, else
``"backend"`` in ``$KERAS_HOME/keras.json`` (``~/.keras/keras.json``), else TensorFlow. The model,
its layers, :class:`ssd_keras.MultiboxLoss`, decoding with NMS in the graph
(:func:`ssd_keras.with_detection_output`), weights files and ``model.fit`` on
:class:`ssd_keras.data.CSVGenerator` run on all three. What needs TensorFlow itself, whatever the
backend: Grad-CAM and guided backpropagation (``tf.GradientTape``), ``export`` (the converters
trace TensorFlow graphs), ``CSVGenerator.as_dataset`` (``tf.data``) and the ``tf.distribute``
strategies (on JAX, ``--strategy mirrored`` is ``keras.distribution.DataParallel``).

This module imports no backend: :func:`chosen_backend` reads the setting as Keras will.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from .checks import MissingDependencyError

__all__ = ["BACKENDS", "BackendError", "chosen_backend", "use_backend", "require_tensorflow",
           "import_backend_quietly", "EXTRAS"]

BACKENDS = ("tensorflow", "jax", "torch")
"""The Keras backends the project runs and tests on."""
EXTRAS = {"tensorflow": "tensorflow", "jax": "ssd_keras[jax]", "torch": "ssd_keras[torch]"}
"""What to install for each backend."""


class BackendError(ValueError):
    """The backend cannot do what was asked (a TensorFlow-only feature on JAX or PyTorch, or a
    backend chosen after Keras was imported with another one)."""


def _keras_json_backend() -> str | None:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        config = json.loads((Path(home) / "keras.json").read_text())
    except (OSError, ValueError):
        return None
    backend = config.get("backend") if isinstance(config, dict) else None
    return backend if isinstance(backend, str) else None


def chosen_backend() -> str:
    """The backend Keras runs on (already imported) or will run on when imported (the rule in
    the module docstring), without importing anything."""
    keras = sys.modules.get("keras")
    backend = getattr(keras, "backend", None)
    if backend is not None and hasattr(backend, "backend"):
        return backend.backend()
    return os.environ.get("KERAS_BACKEND") or _keras_json_backend() or "tensorflow"


def use_backend(name: str) -> None:
    """Chooses the Keras backend before Keras is imported (sets ``KERAS_BACKEND``).

    Raises:
        BackendError: ``name`` is not one of :data:`BACKENDS`, or Keras is already imported
            with another backend (the backend is fixed when Keras first loads).
        MissingDependencyError: the backend's package is not installed (the message says which
            extra to install).
    """
    if name not in BACKENDS:
        raise BackendError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if "keras" in sys.modules and chosen_backend() != name:
        raise BackendError(f"Keras is already running on {chosen_backend()}: the backend is chosen before Keras is "
                           f"first imported (set KERAS_BACKEND={name} in the environment)")
    if importlib.util.find_spec(name) is None:
        raise MissingDependencyError(f"the {name} backend needs {name}: pip install '{EXTRAS[name]}'")
    os.environ["KERAS_BACKEND"] = name


def require_tensorflow(what: str) -> None:
    """Raises :class:`BackendError` naming ``what`` unless Keras runs (or will run) on TensorFlow."""
    backend = chosen_backend()
    if backend != "tensorflow":
        raise BackendError(f"{what} needs the TensorFlow backend; Keras runs on {backend} here. Run it with "
                           "KERAS_BACKEND=tensorflow (weights saved on any backend load there)")


def import_backend_quietly() -> None:
    """Imports the chosen backend before a model is built: TensorFlow without its start-up log
    lines (:func:`ssd_keras.models.import_tensorflow_quietly`), JAX or PyTorch as they are."""
    if chosen_backend() == "tensorflow":
        from .models import import_tensorflow_quietly

        import_tensorflow_quietly()
    else:
        import keras  # noqa: F401
