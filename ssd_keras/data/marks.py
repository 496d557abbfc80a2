"""Synthetic marks for MarkNet: moved to :mod:`ssd_keras.marknet.marks`, re-exported here."""

from ..marknet.marks import (BOXES_CSV, MARK_CLASSES, MARK_SIZE_RANGE, MARKS_CSV, MAX_ROTATION, make_mark_image,
                             make_marks_dataset)

__all__ = [
    "BOXES_CSV",
    "MARKS_CSV",
    "MARK_CLASSES",
    "MARK_SIZE_RANGE",
    "MAX_ROTATION",
    "make_mark_image",
    "make_marks_dataset",
]
