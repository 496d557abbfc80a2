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
THIN_SEED = 1234


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

    Seeded, so that its random weights are the same whichever tests ran before (Keras' seeded
    initializers give the same values on every CPU). Read-only: a test that changes weights builds
    its own model.
    """
    import keras

    from ssd_keras.ssd import SSD300

    keras.utils.set_random_seed(THIN_SEED)
    return SSD300((300, 300, 3), num_classes=21, width_multiplier=THIN_WIDTH)


@pytest.fixture(scope="session")
def demo_model():
    """The embedded shapes model and its class names (``load_demo_model()``), shared by the session."""
    from ssd_keras.models import load_demo_model

    return load_demo_model()


class _DemoExports(dict):
    """``exports[format, precision]``: the embedded model exported once per session, on first use
    (int8 calibrated on 8 synthetic scenes of seed 92)."""

    def __init__(self, model, class_names, folder: Path):
        super().__init__()
        self.model, self.class_names, self.folder = model, class_names, folder

    def __missing__(self, key):
        from ssd_keras.data.synthetic import make_scene
        from ssd_keras.export import export_model
        from ssd_keras.exported import FORMATS
        from ssd_keras.image import model_batches

        format, precision = key
        calibration = None
        if precision == "int8":
            calibration = next(model_batches([make_scene(np.random.default_rng([92, i]))[0] for i in range(8)],
                                             (300, 300), 8))
        self[key] = export_model(self.model, self.folder / f"demo_{precision}_{format}{FORMATS[format]}", format,
                                 precision, calibration=calibration, class_names=self.class_names)
        return self[key]


@pytest.fixture(scope="session")
def demo_exports(demo_model, tmp_path_factory):
    """The embedded model's exports, ``demo_exports[format, precision]`` (see ``_DemoExports``)."""
    return _DemoExports(*demo_model, tmp_path_factory.mktemp("demo_exports"))


@pytest.fixture(scope="session")
def sample_image() -> np.ndarray:
    """A real photograph shipped with matplotlib (Grace Hopper), RGB uint8."""
    import matplotlib.cbook

    from ssd_keras.image import load_image

    return load_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def assert_same_detections(got: np.ndarray, expected: np.ndarray, atol: float = 1e-5) -> None:
    """Detection rows ``[label, confidence, box...]`` equal up to ``atol``, whatever the order of
    rows whose confidences tie within ``atol``.

    Two computations of the same detections (another kernel, batch or CPU) round scores
    differently in the last bits, so near-equal scores may swap places, and a row tied with the
    last kept one may be kept by one and not the other. So: the confidence columns are equal in
    order; each row is matched to a row of the other side of the same label, confidence and box;
    only rows tied with the lowest kept confidence may go unmatched.
    """
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    np.testing.assert_allclose(got[:, 1], expected[:, 1], atol=atol)
    unmatched = list(range(len(got)))
    floor = expected[:, 1].min() if len(expected) else 0.0
    for row in expected:
        close = [i for i in unmatched if np.allclose(got[i], row, atol=atol, rtol=0)]
        if close:
            unmatched.remove(close[0])
        else:
            assert row[1] <= floor + atol, f"no row matches {row.tolist()}"
    assert all(got[i, 1] <= floor + atol for i in unmatched), [got[i].tolist() for i in unmatched]
