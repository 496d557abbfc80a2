"""Training data: annotation CSVs, dataset importers (VOC, COCO, YOLO) and exporters, the dataset check,
augmentations, batch generators, synthetic scenes.

Loaded lazily: ``import ssd_keras.data`` imports no TensorFlow or Keras; a name loads its module
on first use (the generators load Keras). MarkNet's classification data and synthetic marks live
in :mod:`ssd_keras.marknet` and are re-exported here under their old names.
"""

# no `from __future__ import annotations` here: it would bind the name `annotations` in this
# package and hide the submodule ssd_keras.data.annotations
from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# public name -> module that defines it (relative to this package)
_EXPORTS = {
    "AnnotationError": ".classes",
    "AnnotationWarning": ".classes",
    "read_class_list": ".classes",
    "write_class_list": ".classes",
    "read_annotations": ".annotations",
    "to_normalized_targets": ".annotations",
    "write_annotations": ".annotations",
    "Augmentation": ".augment",
    "augment": ".augment",
    "folders_to_csv": ".csv_tools",
    "images_to_csv": ".csv_tools",
    "voc_to_csv": ".csv_tools",
    "coco_to_csv": ".coco",
    "csv_to_coco": ".coco",
    "csv_to_yolo": ".yolo",
    "read_yolo_names": ".yolo",
    "yolo_to_csv": ".yolo",
    "DatasetCheck": ".check",
    "check_dataset": ".check",
    "plot_check": ".check",
    "CSVGenerator": ".generator",
    "make_dataset": ".generator",
    "SHAPE_CLASSES": ".synthetic",
    "make_scene": ".synthetic",
    "make_shapes_dataset": ".synthetic",
    "ClassificationAugmentation": "..marknet.data",
    "ClassificationGenerator": "..marknet.data",
    "read_classification_csv": "..marknet.data",
    "MARK_CLASSES": "..marknet.marks",
    "make_mark_image": "..marknet.marks",
    "make_marks_dataset": "..marknet.marks",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    # ruff: noqa: F401
    from ..marknet.data import ClassificationAugmentation, ClassificationGenerator, read_classification_csv
    from ..marknet.marks import MARK_CLASSES, make_mark_image, make_marks_dataset
    from .annotations import read_annotations, to_normalized_targets, write_annotations
    from .augment import Augmentation, augment
    from .check import DatasetCheck, check_dataset, plot_check
    from .classes import AnnotationError, AnnotationWarning, read_class_list, write_class_list
    from .coco import coco_to_csv, csv_to_coco
    from .csv_tools import folders_to_csv, images_to_csv, voc_to_csv
    from .generator import CSVGenerator, make_dataset
    from .synthetic import SHAPE_CLASSES, make_scene, make_shapes_dataset
    from .yolo import csv_to_yolo, read_yolo_names, yolo_to_csv


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, __all__)
