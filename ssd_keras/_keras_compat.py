"""Every use of Keras private API in the project, each with the Keras version it was checked on.

Keras 3 has no public way to (a) find the layer that produced a symbolic tensor, (b) run a
functional model node by node with a hook on every layer's output, (c) build a model on a
batch of our choosing before ``fit`` under ``MultiWorkerMirroredStrategy``, or (d) seed
everything on JAX or PyTorch without importing TensorFlow. The project needs all four; they
are here and nowhere else, so that a Keras upgrade is checked in one place.

Importing this module checks the Keras version against :data:`TESTED_KERAS` (the range
``setup.cfg`` states) and raises :class:`ImportError` outside it, naming the versions; set
``SSD_KERAS_UNTESTED_KERAS=1`` to try an untested version anyway.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

import keras
import numpy as np

__all__ = ["TESTED_KERAS", "check_keras_version", "producing_layer", "run_through_graph", "MultiWorkerModel",
           "set_random_seed"]

TESTED_KERAS = ((3, 10), (3, 16))
"""Keras versions the private API below was checked on: from 3.10 up to, not including, 3.16
(checked on 3.15.1)."""
UNTESTED_ENV = "SSD_KERAS_UNTESTED_KERAS"


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_keras_version(version: str | None = None) -> None:
    """Raises ``ImportError`` when ``version`` (default: the installed Keras) is outside
    :data:`TESTED_KERAS`, unless ``$SSD_KERAS_UNTESTED_KERAS`` is set."""
    version = version or keras.__version__
    low, high = TESTED_KERAS
    if low <= _version_tuple(version)[:2] < high or os.environ.get(UNTESTED_ENV):
        return
    raise ImportError(
        f"ssd_keras uses Keras internals checked on Keras >={low[0]}.{low[1]},<{high[0]}.{high[1]}, but "
        f"Keras {version} is installed: pip install 'keras>={low[0]}.{low[1]},<{high[0]}.{high[1]}' "
        f"(or set {UNTESTED_ENV}=1 to try this version anyway)")


check_keras_version()


class _NoTensorFlow:
    available = False


def set_random_seed(seed: int) -> None:
    """``keras.utils.set_random_seed(seed)`` (Python, NumPy, the backend, Keras' global seed
    generator), except that on JAX or PyTorch it does not import TensorFlow to seed ``tf.random``
    (Keras does when TensorFlow is installed; nothing here draws from it on those backends, and the
    import costs seconds and start-up log lines). Once TensorFlow is imported, it is seeded too.

    Private: ``keras.src.utils.rng_utils.tf``, the lazy TensorFlow module whose ``available``
    Keras checks (checked on Keras 3.10-3.15).
    """
    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)
        return
    from keras.src.utils import rng_utils

    lazy, rng_utils.tf = rng_utils.tf, _NoTensorFlow()
    try:
        keras.utils.set_random_seed(seed)
    finally:
        rng_utils.tf = lazy


def producing_layer(tensor: Any) -> Any:
    """The layer (operation) that produced a symbolic Keras tensor.

    Private: ``KerasTensor._keras_history`` (checked on Keras 3.10-3.15).
    """
    return tensor._keras_history.operation


def run_through_graph(model: keras.Model, inputs: list[Any], operation_fn: Callable[[Any], Callable[..., Any]]) -> Any:
    """Runs a functional model on ``inputs`` node by node, calling ``operation_fn(layer)`` in place
    of each layer (the way ``Functional.call`` does internally).

    Private: ``Functional._run_through_graph(inputs, operation_fn=...)`` (checked on Keras
    3.10-3.15).

    Raises:
        ValueError: ``model`` is not a functional model.
    """
    if not hasattr(model, "_run_through_graph"):
        raise ValueError(f"model {model.name!r} is a {type(model).__name__}: expected a functional model")
    return model._run_through_graph(inputs, operation_fn=operation_fn)


class MultiWorkerModel(keras.Model):
    """The same functional model, with two work-arounds for Keras 3 under
    ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585): it is built on a plain batch
    (Keras builds from the first *reduced* distributed batch, which fails there), and its step
    logs are vectors of one value (Keras reduces them along axis 0, which scalars lack).

    Private: overrides ``Trainer._maybe_symbolic_build`` and calls ``Trainer._symbolic_build``
    (checked on Keras 3.10-3.15); drop it when keras-team/keras#20585 is fixed."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        x = np.zeros((1,) + tuple(self.input_shape[1:]), "float32")
        y = np.zeros((1,) + tuple(self.output_shape[1:]), "float32")
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=(x, y))

    def train_step(self, data):
        return {k: keras.ops.reshape(v, [1]) for k, v in super().train_step(data).items()}

    def test_step(self, data):
        return {k: keras.ops.reshape(v, [1]) for k, v in super().test_step(data).items()}
