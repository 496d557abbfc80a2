"""Training data: annotation CSVs, dataset CSV writers, augmentations and batch generators."""

from .annotations import (AnnotationWarning, read_annotations, read_class_list, to_normalized_targets,
                          write_annotations, write_class_list)
from .augment import Augmentation, augment
from .csv_tools import folders_to_csv, images_to_csv, voc_to_csv
from .generator import CSVGenerator, make_dataset
from .synthetic import SHAPE_CLASSES, make_scene, make_shapes_dataset

__all__ = [
    "AnnotationWarning",
    "Augmentation",
    "CSVGenerator",
    "SHAPE_CLASSES",
    "augment",
    "folders_to_csv",
    "images_to_csv",
    "make_dataset",
    "make_scene",
    "make_shapes_dataset",
    "read_annotations",
    "read_class_list",
    "to_normalized_targets",
    "voc_to_csv",
    "write_annotations",
    "write_class_list",
]
