"""A whole SSD training run from annotation CSVs: what ``python -m ssd_keras train`` does.

The pieces are the library's (``SSD300``, ``MultiboxLoss``, ``CSVGenerator``, ``load_weights``)
plus the run's bookkeeping in its output folder (:mod:`ssd_keras.runs`)::

    run.lock                    held by the process that runs it
    config.json                 the run's settings: everything needed to rebuild the model and data
    history.csv                 one row per finished epoch
    loss.png                    the loss curves
    checkpoints/epoch_NNN.weights.h5   weights, optimizer state, epoch (the --keep-checkpoints newest)
    final.weights.h5            the same after the last epoch

Started again with the same command, a run killed part-way resumes from its last saved epoch, and a
finished run given more epochs continues (:mod:`ssd_keras.checkpoints`); other settings
(:data:`SETTINGS`) are refused unless ``overwrite``.

Runs train on every Keras backend (:mod:`ssd_keras.backends`); a checkpoint written on one backend
resumes on another. Distributed runs on TensorFlow use a ``tf.distribute`` strategy: ``mirrored``
(all local GPUs, or the CPU) or ``multiworker`` (machines listed in ``TF_CONFIG``; only the chief
writes the run folder, the other workers write to ``<out>/worker<index>``, each folder resuming on
its own). On JAX, ``mirrored`` is ``keras.distribution.DataParallel`` over every local device (each
batch split between them); ``multiworker`` and PyTorch's distribution are not supported.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from .data.annotations import read_annotations
from .data.generator import CSVGenerator
from ._keras_compat import MultiWorkerModel, set_random_seed
from .backends import BackendError
from .checkpoints import begin_run, fit_run
from .checks import fraction, positive_int, positive_number
from .priors import as_prior_config
from .runs import open_run
from .ssd import SSD300, prior_boxes
from .ssd_training import MultiboxLoss
from .ssd_utils import BBoxUtility
from .weights import load_weights

__all__ = ["TrainConfig", "train", "TrainingStopped", "ORIGINAL_FREEZE", "SETTINGS"]

logger = logging.getLogger(__name__)

ORIGINAL_FREEZE = ("input_1", "conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2", "pool2",
                   "conv3_1", "conv3_2", "conv3_3", "pool3")
"""The layers the original training notebook froze when fine-tuning from the VOC weights."""


SETTINGS = ("csv", "val_csv", "weights", "classes", "batch_size", "lr", "lr_decay", "width_multiplier",
            "input_shape", "priors", "freeze", "seed")
"""What defines a run (``config.json`` keys): a command that changes one of them is refused. The
others (``epochs``, ``workers``, ``keep_checkpoints``, ``strategy``, and the Keras backend) may change
between commands."""


class TrainingStopped(RuntimeError):
    """Training stopped early (a NaN or infinite loss)."""


@dataclass
class TrainConfig:
    """A training run; ``config.json`` in the run folder is this, as JSON."""

    csv: str
    out: str
    val_csv: str | None = None
    weights: str | None = None
    classes: list[str] | None = None
    epochs: int = 10
    batch_size: int = 16
    lr: float = 3e-4
    lr_decay: float = 1.0
    width_multiplier: float = 1.0
    input_shape: tuple[int, int, int] = (300, 300, 3)
    priors: dict | str | None = None  # a prior configuration (JSON object or file); None: SSD300's 7308 priors
    freeze: list[str] = field(default_factory=list)
    strategy: str | None = None
    seed: int | None = None
    workers: int = 1
    keep_checkpoints: int = 3

    def __post_init__(self):
        for name in ("epochs", "batch_size", "workers", "keep_checkpoints"):
            setattr(self, name, positive_int(getattr(self, name), name))
        self.lr = positive_number(self.lr, "lr")
        self.lr_decay = fraction(self.lr_decay, "lr_decay", zero_allowed=False)
        self.width_multiplier = positive_number(self.width_multiplier, "width_multiplier")
        if self.strategy not in (None, "mirrored", "multiworker"):
            raise ValueError(f"strategy must be 'mirrored' or 'multiworker', got {self.strategy}")
        if self.priors is not None:  # config.json keeps the configuration itself, not a path to it
            self.priors = as_prior_config(self.priors).to_dict()


class _StopOnNaN(keras.callbacks.Callback):
    """Stops at the first batch whose loss is NaN or infinite and remembers where."""

    def __init__(self):
        super().__init__()
        self.where: tuple[int, int, float] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = (self._epoch, batch, float(loss))
            self.model.stop_training = True


def _strategy(name: str | None) -> Any:
    """The run's distribution: a ``tf.distribute.Strategy`` on TensorFlow, a
    ``keras.distribution.DataParallel`` (or None) on JAX, None on PyTorch."""
    backend = keras.backend.backend()
    if backend == "jax":
        if name == "multiworker":
            raise BackendError("--strategy multiworker needs the TensorFlow backend (on JAX, --strategy mirrored "
                               "splits each batch between the local devices)")
        if name == "mirrored":
            return keras.distribution.DataParallel(devices=keras.distribution.list_devices())
        return None
    if backend != "tensorflow":
        if name is not None:
            raise BackendError(f"--strategy {name} needs the TensorFlow or the JAX backend, not {backend}")
        return None
    import tensorflow as tf

    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()  # every local GPU
        # no GPU: every logical CPU device (see SSD_KERAS_CPU_DEVICES in the README)
        return tf.distribute.MirroredStrategy(
            [device.name for device in tf.config.list_logical_devices("CPU")])
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _replicas(strategy: Any) -> int:
    if strategy is None:
        return 1
    if isinstance(strategy, keras.distribution.DataParallel):
        return int(np.prod(strategy.device_mesh.devices.shape))
    return int(strategy.num_replicas_in_sync)


def _scope(strategy: Any) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def _run_folder(config: TrainConfig, strategy: Any) -> Path:
    """The chief writes the run folder; other workers of a multi-worker run their own."""
    folder = Path(config.out)
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None and resolver.task_type not in (None, "chief") and not (
            resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict()):
        folder = folder / f"{resolver.task_type}{resolver.task_id}"
    return folder


def _sharded(data: CSVGenerator | None) -> Any:
    """tf.data with element-wise sharding: every worker reads all files and keeps its share."""
    if data is None:
        return None
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.as_dataset().with_options(options)


def train(config: TrainConfig, verbose: int = 1, overwrite: bool = False,
          say: Callable[[str], Any] = print) -> keras.callbacks.History:
    """Runs, resumes or continues a training run (module docstring).

    Args:
        config: the run (see :class:`TrainConfig`).
        verbose: Keras ``fit`` verbosity.
        overwrite: replace a run of other settings in ``config.out`` (its contents are removed).
        say: where the run's messages go (resuming, continuing, taking over a lock, ...).

    Returns:
        The ``History`` of this call's ``fit`` (empty when the run had already finished;
        ``history.csv`` has every epoch of the run).

    Raises:
        TrainingStopped: the loss became NaN or infinite (the message says where).
        ssd_keras.runs.RunFolderBusy: another process runs in the folder.
        ssd_keras.runs.SettingsDiffer: the folder holds a run of other settings (each named).
        ssd_keras.runs.RunInterrupted: Ctrl-C; the message says the last saved epoch.
        OSError: the folder cannot be written, or a write failed (the message names the file).
        ValueError, FileNotFoundError: bad CSVs, classes or weights (named in the message).
    """
    strategy = _strategy(config.strategy)
    replicas = _replicas(strategy)
    data_parallel = isinstance(strategy, keras.distribution.DataParallel)  # JAX: each batch split evenly
    if data_parallel and config.batch_size % replicas:
        raise ValueError(f"--batch-size {config.batch_size} does not split evenly between the {replicas} "
                         f"devices of --strategy mirrored on JAX: use a multiple of {replicas}")
    height, width = config.input_shape[:2]
    _, class_names = read_annotations(config.csv, config.classes)
    num_classes = len(class_names) + 1
    record = {**asdict(config), "classes": class_names, "num_classes": num_classes,
              "input_shape": list(config.input_shape), "freeze": list(config.freeze),
              "replicas": replicas, "backend": keras.backend.backend()}
    for key in ("csv", "val_csv", "weights"):
        record[key] = os.path.abspath(record[key]) if record[key] else None

    with open_run(_run_folder(config, strategy), record, SETTINGS, overwrite, say) as run:
        if config.seed is not None:
            set_random_seed(config.seed)
        with _scope(strategy):
            model = SSD300(tuple(config.input_shape), num_classes=num_classes,
                           width_multiplier=config.width_multiplier, priors=config.priors)
            if config.strategy == "multiworker":
                model = MultiWorkerModel(model.input, model.output, name=model.name)
            if config.weights:  # the starting point; a saved state replaces it below
                report = load_weights(model, config.weights)
                logger.info("%s", report)
            unknown = sorted(set(config.freeze) - {layer.name for layer in model.layers})
            if unknown:
                raise ValueError(f"freeze: no layers named {', '.join(unknown)} in SSD300")
            for name in config.freeze:
                model.get_layer(name).trainable = False
            model.compile(optimizer=keras.optimizers.Adam(config.lr),
                          loss=MultiboxLoss(num_classes))
            state = begin_run(model, run, config.epochs, say)
        if state is None:
            return keras.callbacks.History()
        run.write_config(record)

        bbox_util = BBoxUtility(num_classes, prior_boxes(model))
        loader = dict(batch_size=config.batch_size, image_size=(height, width),
                      classes=class_names, seed=config.seed, workers=config.workers)
        train_data = CSVGenerator(config.csv, bbox_util, **loader)
        # the data of epoch N whatever the epoch this process starts at
        train_data.epoch = train_data._dataset_epoch = state.epoch
        val_data = (CSVGenerator(config.val_csv, bbox_util, train=False, **loader)
                    if config.val_csv else None)
        if config.strategy == "multiworker":
            train_data, val_data = _sharded(train_data), _sharded(val_data)
        elif data_parallel:
            for data in filter(None, (train_data, val_data)):
                data.even_batches(replicas)

        nan_guard = _StopOnNaN()
        schedule = keras.callbacks.LearningRateScheduler(lambda epoch: config.lr * config.lr_decay ** epoch)
        # JAX's DataParallel splits the batches while it is the current distribution
        with _scope(strategy) if data_parallel else contextlib.nullcontext():
            history, saved = fit_run(model, run, state, train_data, epochs=config.epochs,
                                     keep=config.keep_checkpoints, verbose=verbose,
                                     callbacks=[schedule, nan_guard], validation_data=val_data,
                                     ylabel="MultiboxLoss")
        if nan_guard.where is not None:
            epoch, batch, loss = nan_guard.where
            last = (f"epochs 1-{saved.epoch} are saved in {run.checkpoints}" if saved.epoch
                    else "no epoch was saved")
            raise TrainingStopped(
                f"training stopped at epoch {epoch + 1}, batch {batch + 1}: the loss became {loss} "
                f"(try a lower --lr, or check the annotations); {last}")
    return history
