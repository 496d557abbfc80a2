"""The classification CSV of MarkNet: moved to :mod:`ssd_keras.marknet.data`, re-exported here."""

from ..marknet.data import (ClassificationAugmentation, ClassificationGenerator, augment_classification,
                            read_classification_csv)

__all__ = [
    "ClassificationAugmentation",
    "ClassificationGenerator",
    "augment_classification",
    "read_classification_csv",
]
