"""Training data: annotation CSVs, dataset CSV writers, augmentations and batch generators."""

from .annotations import (AnnotationWarning, read_annotations, read_class_list,
                          to_normalized_targets, write_annotations, write_class_list)
from .augment import Augmentation, augment
# (csv_tools exports are added when that module lands)
from .generator import CSVGenerator, make_dataset

__all__ = [
    "AnnotationWarning",
    "Augmentation",
    "CSVGenerator",
    "augment",
    "make_dataset",
    "read_annotations",
    "read_class_list",
    "to_normalized_targets",
    "write_annotations",
    "write_class_list",
]
