"""Shared fixtures. TensorFlow is imported once, quietly, before any test module imports it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssd_keras.models import import_tensorflow_quietly

import_tensorflow_quietly()

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "tests" / "data"
PICS_DIR = REPO_ROOT.parent / "shared" / "reference" / "pics"
THIN_WIDTH = 0.125


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``tests/data``: data of the original port (its priors, real annotations; see the README
    there). Part of the repository, so the fidelity tests never skip."""
    return DATA_DIR


@pytest.fixture(scope="session")
def original_photos() -> Path:
    """The original notebook's photographs, which we may not redistribute: read from a
    ``shared/reference/pics`` folder beside the checkout; the tests that need them skip without."""
    if not PICS_DIR.is_dir():
        pytest.skip(f"the original photographs are not at {PICS_DIR}")
    return PICS_DIR


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
