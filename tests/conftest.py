"""Shared fixtures. TensorFlow is imported once, quietly, before any test module imports it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssd_keras.cli import import_tensorflow_quietly

import_tensorflow_quietly()

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference"
THIN_WIDTH = 0.125


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference`` (data of the original port); tests using it skip when absent."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE_DIR}")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def thin_ssd():
    """A thin SSD300 (width 0.125, 21 classes, ~0.5 M parameters), shared by the session.

    Read-only: a test that changes weights builds its own model.
    """
    from ssd_keras.ssd import SSD300

    return SSD300((300, 300, 3), num_classes=21, width_multiplier=THIN_WIDTH)


@pytest.fixture(scope="session")
def sample_image() -> np.ndarray:
    """A real photograph shipped with matplotlib (Grace Hopper), RGB uint8."""
    import matplotlib.cbook

    from ssd_keras.image import load_image

    return load_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
