"""The embedded demo model and ``python -m ssd_keras demo``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ssd_keras.data.synthetic import SHAPE_CLASSES
from ssd_keras.demo import DEMO_CONFIG, DEMO_WEIGHTS, load_demo_model, shapes_map

UNSEEN_SEED = 7  # training used seed 1, validation seed 2, the demo draws DEMO_SEED (+1)


@pytest.fixture(scope="module")
def demo_model():
    return load_demo_model()


def test_demo_model_files_are_small_and_describe_the_model(demo_model):
    model, class_names = demo_model
    assert DEMO_WEIGHTS.stat().st_size <= 10 * 2**20 and DEMO_CONFIG.is_file()
    assert class_names == list(SHAPE_CLASSES)
    assert model.output_shape == (None, 7308, 4 + len(SHAPE_CLASSES) + 1 + 8)


def test_demo_model_reaches_map_090_on_unseen_scenes(demo_model):
    model, _ = demo_model
    result = shapes_map(model, count=100, seed=UNSEEN_SEED)
    assert result["mAP"] >= 0.90, result["mAP"]


def test_missing_demo_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.weights.h5"):
        load_demo_model(tmp_path / "nothere.weights.h5")


def test_demo_command_end_to_end(tmp_path):
    from ssd_keras.cli import find_default_weights

    if find_default_weights() is not None:
        pytest.skip("VOC weights are present: the demo uses them instead of the shapes model")
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "ssd_keras", "demo", "--out", str(out),
                          "--eval-scenes", "16"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    names = sorted(p.name for p in out.iterdir())
    for i in range(4):
        assert f"scene_{i}.png" in names and f"scene_{i}_gradcam.png" in names
    assert "grace_hopper.png" in names
    assert "embedded shapes model" in run.stdout and "mAP@0.5 on 16 held-out scenes" in run.stdout
    mean_ap = float(run.stdout.rsplit(":", 1)[1])
    assert 0.0 <= mean_ap <= 1.0 and np.isfinite(mean_ap)
