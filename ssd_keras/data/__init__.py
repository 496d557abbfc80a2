"""Training data: annotation CSVs, dataset CSV writers, augmentations and batch generators."""

from .annotations import (AnnotationWarning, read_annotations, read_class_list, to_normalized_targets,
                          write_annotations, write_class_list)
from .augment import Augmentation, augment
from .classification import ClassificationAugmentation, ClassificationGenerator, read_classification_csv
from .csv_tools import folders_to_csv, images_to_csv, voc_to_csv
from .generator import CSVGenerator, make_dataset
from .marks import MARK_CLASSES, make_mark_image, make_marks_dataset
from .synthetic import SHAPE_CLASSES, make_scene, make_shapes_dataset

__all__ = [
    "AnnotationWarning",
    "Augmentation",
    "CSVGenerator",
    "ClassificationAugmentation",
    "ClassificationGenerator",
    "MARK_CLASSES",
    "SHAPE_CLASSES",
    "augment",
    "folders_to_csv",
    "images_to_csv",
    "make_dataset",
    "make_mark_image",
    "make_marks_dataset",
    "make_scene",
    "make_shapes_dataset",
    "read_annotations",
    "read_class_list",
    "read_classification_csv",
    "to_normalized_targets",
    "voc_to_csv",
    "write_annotations",
    "write_class_list",
]
