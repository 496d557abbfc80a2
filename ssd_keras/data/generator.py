"""Training batches from an annotation CSV: a Keras ``PyDataset`` and the same as ``tf.data``.

The ``PyDataset`` feeds ``model.fit`` on every Keras backend (TensorFlow, JAX, PyTorch); only
:meth:`CSVGenerator.as_dataset` and :func:`make_dataset` import TensorFlow.

Each example is decoded strictly (:func:`ssd_keras.image.load_image`), augmented
(:mod:`ssd_keras.data.augment`) with a random generator seeded by ``(seed, epoch, index)``
(so a seeded run gives the same batches whatever the number of workers), preprocessed for the
Caffe-ported weights and encoded with :meth:`ssd_keras.BBoxUtility.assign_boxes`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import keras
import numpy as np

from ..boxes import to_normalized
from ..image import load_image, preprocess_input
from ..ssd_utils import BBoxUtility
from .annotations import read_annotations
from .augment import Augmentation, augment

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["CSVGenerator", "SeededBatches", "make_dataset"]


class SeededBatches(keras.utils.PyDataset):
    """What the detection and classification generators share: batches over ``self.records``
    in an order drawn from ``(seed, epoch)``, so that a seeded run repeats exactly whatever the
    number of workers. Subclasses call :meth:`_setup` and implement :meth:`load_batch`."""

    def _setup(self, records: list, batch_size: int, train: bool, shuffle: bool,
               seed: int | None) -> None:
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.records = records
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.shuffle = bool(shuffle) and self.train
        self.seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else int(seed)
        self.epoch = 0
        self.batch_multiple = 1

    def even_batches(self, multiple: int) -> None:
        """Makes every batch's size a multiple of ``multiple``, for a distribution that splits each
        batch evenly between ``multiple`` devices (JAX's ``keras.distribution.DataParallel``): the
        last batch of an epoch is cut down to a multiple, which leaves out up to ``multiple - 1``
        examples of that epoch (other ones each epoch when shuffled).

        Raises:
            ValueError: ``batch_size`` is not a multiple of ``multiple``, or there are fewer
                examples than ``multiple``.
        """
        multiple = int(multiple)
        if multiple < 1 or self.batch_size % multiple:
            raise ValueError(f"batch_size {self.batch_size} does not split evenly between {multiple} devices: "
                             f"use a multiple of {multiple}")
        if len(self.records) < multiple:
            raise ValueError(f"{len(self.records)} examples cannot fill a batch split between {multiple} devices")
        self.batch_multiple = multiple

    def __len__(self) -> int:
        full, rest = divmod(len(self.records), self.batch_size)
        return full + (rest >= self.batch_multiple)

    def order(self, epoch: int) -> np.ndarray:
        """The example indices of an epoch, in the order batches take them."""
        if not self.shuffle:
            return np.arange(len(self.records))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.records))

    def batch_indices(self, batch: int, epoch: int) -> np.ndarray:
        """The example indices of batch ``batch`` of epoch ``epoch``."""
        indices = self.order(epoch)[batch * self.batch_size:(batch + 1) * self.batch_size]
        return indices[:len(indices) - len(indices) % self.batch_multiple]

    def load_batch(self, batch: int, epoch: int):
        raise NotImplementedError

    def __getitem__(self, batch: int):
        if not 0 <= batch < len(self):
            raise IndexError(f"batch {batch} out of range for {len(self)} batches")
        return self.load_batch(batch, self.epoch)

    def on_epoch_end(self) -> None:
        self.epoch += 1


class CSVGenerator(SeededBatches):
    """Batches ``(x, y)`` for ``model.fit`` from an annotation CSV.

    Args:
        csv_path: the annotation CSV (format in DESIGN.md); validated once, up front.
        bbox_util: a :class:`ssd_keras.BBoxUtility` with the model's priors
            (``BBoxUtility(num_classes, prior_boxes(model))``); its ``num_classes`` must be the
            number of classes + 1.
        batch_size: examples per batch (the last batch of an epoch may be smaller).
        image_size: ``(height, width)`` of the network input.
        classes: class names without background (list or class-list file); default: the sorted
            names of the CSV.
        train: augment and shuffle; ``False`` gives plain resizing and a fixed order.
        shuffle: reshuffle every epoch (training only).
        augment: an :class:`ssd_keras.data.Augmentation` (default: the original's settings).
        seed: makes augmentation and order reproducible; default: a fresh random seed.
        **pydataset_kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size`` of
            ``keras.utils.PyDataset``.

    Each batch: ``x`` ``(B, height, width, 3)`` float32 (``preprocess_input``-ed), ``y``
    ``(B, num_priors, 4 + num_classes + 8)`` float32 (``assign_boxes`` targets).
    """

    def __init__(self, csv_path: str | os.PathLike, bbox_util: BBoxUtility, batch_size: int = 16,
                 image_size: tuple[int, int] = (300, 300), classes=None, train: bool = True,
                 shuffle: bool = True, augment: Augmentation | None = None,
                 seed: int | None = None, **pydataset_kwargs):
        super().__init__(**pydataset_kwargs)
        records, self.class_names = read_annotations(csv_path, classes)
        self._setup(records, batch_size, train, shuffle, seed)
        if not self.records:
            raise ValueError(f"{csv_path}: the annotation CSV lists no images")
        if bbox_util.priors is None:
            raise ValueError("bbox_util has no priors: use BBoxUtility(num_classes, "
                             "prior_boxes(model))")
        if bbox_util.num_classes != len(self.class_names) + 1:
            raise ValueError(
                f"{csv_path}: {len(self.class_names)} classes ({', '.join(self.class_names[:5])}"
                f"{', ...' if len(self.class_names) > 5 else ''}) need "
                f"BBoxUtility(num_classes={len(self.class_names) + 1}), got "
                f"num_classes={bbox_util.num_classes}")
        self.csv_path = os.fspath(csv_path)
        self.bbox_util = bbox_util
        self.image_size = tuple(image_size)
        self.augmentation = (augment or Augmentation()) if self.train else None
        self._dataset_epoch = 0
        self._one_hot = np.eye(len(self.class_names) + 1, dtype=np.float64)[:, 1:]

    def load_example(self, index: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """One example: ``(image, targets)``, image ``(height, width, 3)`` float32 already
        ``preprocess_input``-ed, targets ``(num_priors, 4 + num_classes + 8)`` float32."""
        record = self.records[index]
        image = load_image(record["image_path"])
        height, width = image.shape[:2]
        boxes = to_normalized(record["boxes"].reshape(-1, 4), width, height)
        rng = np.random.default_rng([self.seed, epoch, index])
        image, boxes, kept = augment(image, boxes, rng, self.image_size, self.augmentation)
        targets = np.hstack([boxes, self._one_hot[record["labels"][kept]]])
        return preprocess_input(image), self.bbox_util.assign_boxes(targets)

    def load_batch(self, batch: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``batch`` of epoch ``epoch``: ``(x, y)`` as described in the class."""
        images, targets = zip(*(self.load_example(int(i), epoch)
                                for i in self.batch_indices(batch, epoch)))
        return np.stack(images), np.stack(targets)

    def as_dataset(self, num_parallel_calls: int | None = None,
                   prefetch: int | None = None) -> tf.data.Dataset:
        """The same batches as a ``tf.data.Dataset`` (batches loaded in parallel and
        prefetched), for ``tf.distribute`` and input pipelines (TensorFlow only; ``None``
        stands for ``tf.data.AUTOTUNE``).

        Every iteration over the dataset is a new epoch (a new order and new augmentations
        when training), as with the ``PyDataset``. Whole batches cross into Python, not single
        examples: the decoding and OpenCV work release the GIL, the per-call overhead does not.
        """
        import tensorflow as tf

        autotune = tf.data.AUTOTUNE
        spec = (tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.int64))
        batches = tf.data.Dataset.from_generator(self._epoch_batches, output_signature=spec)
        batches = batches.apply(tf.data.experimental.assert_cardinality(len(self)))
        height, width = self.image_size
        num_priors, columns = len(self.bbox_util.priors), self.bbox_util.num_classes + 12

        def load(batch, epoch):
            x, y = tf.numpy_function(lambda b, e: self.load_batch(int(b), int(e)),
                                     [batch, epoch], (tf.float32, tf.float32), stateful=False)
            x.set_shape((None, height, width, 3))
            y.set_shape((None, num_priors, columns))
            return x, y

        dataset = batches.map(load, num_parallel_calls=autotune if num_parallel_calls is None else num_parallel_calls,
                              deterministic=True)
        return dataset.prefetch(autotune if prefetch is None else prefetch)

    def _epoch_batches(self):
        epoch, self._dataset_epoch = self._dataset_epoch, self._dataset_epoch + 1
        for batch in range(len(self)):
            yield batch, epoch


def make_dataset(csv_path: str | os.PathLike, bbox_util: BBoxUtility,
                 **generator_kwargs) -> tf.data.Dataset:
    """``CSVGenerator(csv_path, bbox_util, **generator_kwargs).as_dataset()``."""
    return CSVGenerator(csv_path, bbox_util, **generator_kwargs).as_dataset()
