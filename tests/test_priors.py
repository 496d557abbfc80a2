"""Prior configurations: NumPy priors equal to the network's, custom heads, weights across
layouts, the run configuration's ``priors`` key, coverage, and the prior search."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ssd_keras.prior_search import grid_best_ious, suggest_priors
from ssd_keras.priors import (DEFAULT_PRIORS, SOURCES, HeadSpec, PriorConfig, as_prior_config, best_ious, box_sizes,
                              feature_map_sizes, prior_box_grid)
from tests.conftest import REPO_ROOT, THIN_WIDTH
from tests.tiny_objects import tiny_boxes

# conv3_3 (not in the default), conv4_3 with another prior count, fc7 with the default's count (6)
CUSTOM = PriorConfig((HeadSpec("conv3_3", 12.0, 20.0, (2.0,)), HeadSpec("conv4_3", 24.0, None, (1.5, 3.0)),
                      HeadSpec("fc7", 50.0, 90.0, (2.0, 2.5)), HeadSpec("pool6", 200.0)))


def _ssd(input_shape=(300, 300, 3), num_classes=21, priors=None):
    from ssd_keras.ssd import SSD300

    return SSD300(input_shape, num_classes, THIN_WIDTH, priors=priors)


# --------------------------------------------------------------------------- #
# NumPy priors = the network's priors
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("input_shape", [(300, 300, 3), (128, 96, 3), (301, 257, 3), (37, 53, 3)])
def test_feature_map_sizes_and_priors_match_the_network(input_shape):
    from ssd_keras.ssd import prior_boxes

    model = _ssd(input_shape)
    sizes = feature_map_sizes(input_shape)
    for source in SOURCES[:-1]:
        assert tuple(model.get_layer(source).output.shape[1:3]) == sizes[source], source
    assert tuple(model.get_layer("pool6_reshaped").output.shape[1:3]) == sizes["pool6"]
    np.testing.assert_array_equal(prior_boxes(model), DEFAULT_PRIORS.priors(input_shape))
    assert DEFAULT_PRIORS.num_priors(input_shape) == len(prior_boxes(model))


def test_default_config_priors_are_the_original_port(reference_dir):
    reference = np.load(reference_dir / "prior_boxes_ssd300.npy")
    priors = DEFAULT_PRIORS.priors()
    assert priors.dtype == np.float32 and priors.shape == (7308, 8)
    np.testing.assert_allclose(priors, reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("input_shape", [(300, 300, 3), (160, 128, 3)])
def test_custom_config_priors_match_the_network(input_shape):
    from ssd_keras.ssd import prior_boxes, prior_config

    model = _ssd(input_shape, num_classes=3, priors=CUSTOM)
    np.testing.assert_array_equal(prior_boxes(model), CUSTOM.priors(input_shape))
    assert model.output.shape[1] == CUSTOM.num_priors(input_shape)
    assert prior_config(model) == CUSTOM


# --------------------------------------------------------------------------- #
# the heads of a custom configuration
# --------------------------------------------------------------------------- #
def test_custom_heads_are_named_so_other_layouts_are_skipped():
    model = _ssd(num_classes=3, priors=CUSTOM)
    names = {layer.name for layer in model.layers}
    # conv3_3 and conv4_3 are read L2-normalised; conv3_3 has no default head: no count suffix
    assert {"conv3_3_norm", "conv4_3_norm", "conv3_3_norm_mbox_loc", "conv3_3_norm_mbox_conf_3"} <= names
    # conv4_3: 1 + 2 * 2 = 5 priors per cell, the default head has 3
    assert model.get_layer("conv4_3_norm_mbox_loc_p5").filters == 5 * 4
    assert model.get_layer("conv4_3_norm_mbox_conf_p5_3").filters == 5 * 3
    # fc7: 6 priors per cell as the default head: the default names
    assert model.get_layer("fc7_mbox_loc").filters == 6 * 4 and "fc7_mbox_conf_3" in names
    # pool6: one prior per cell, the default has 6
    assert model.get_layer("pool6_mbox_loc_flat_p1").units == 4
    assert "pool6_mbox_conf_flat_p1_3" in names
    # no head reads conv6_2 .. conv8_2 except through pool6, which needs them
    assert "conv8_2" in names and "conv6_2_mbox_loc" not in names
    assert {layer.name for layer in _ssd(priors=PriorConfig((HeadSpec("fc7", 40.0),))).layers
            if layer.weights} >= {"fc7", "fc7_mbox_loc_p1"}


def test_one_head_only_model_predicts():
    from ssd_keras.ssd import prior_boxes

    config = PriorConfig((HeadSpec("conv4_3", 20.0, None, (2.0,)),))
    model = _ssd((96, 96, 3), 3, config)
    out = model.predict(np.zeros((1, 96, 96, 3), np.float32), verbose=0)
    assert out.shape == (1, 12 * 12 * 3, 4 + 3 + 8)
    np.testing.assert_array_equal(out[0, :, -8:], prior_boxes(model))


def test_voc_layout_weights_load_the_backbone_and_skip_other_heads(tmp_path):
    from ssd_keras.weights import load_weights
    from tests.legacy_h5 import random_legacy_weights, write_legacy_h5

    voc = _ssd()
    weights = random_legacy_weights(voc, seed=5)
    path = tmp_path / "weights_SSD300.hdf5"
    write_legacy_h5(path, voc, weights)
    model = _ssd(num_classes=21, priors=CUSTOM)
    report = load_weights(model, path)  # no shape mismatch raised
    assert sorted(report.skipped) == sorted(["conv3_3_norm", "conv3_3_norm_mbox_loc", "conv3_3_norm_mbox_conf",
                                             "conv4_3_norm_mbox_loc_p5", "conv4_3_norm_mbox_conf_p5",
                                             "pool6_mbox_loc_flat_p1", "pool6_mbox_conf_flat_p1"])
    for name in ["conv1_1", "conv3_3", "conv4_3", "conv4_3_norm", "fc7", "conv8_2", "fc7_mbox_loc"]:
        assert name in report.loaded
        np.testing.assert_array_equal(np.asarray(model.get_layer(name).weights[0]), weights[name][0])


# --------------------------------------------------------------------------- #
# the configuration as JSON, and a run's config.json
# --------------------------------------------------------------------------- #
def test_json_round_trip_and_aliases(tmp_path):
    path = CUSTOM.save(tmp_path / "priors.json")
    assert PriorConfig.load(path) == CUSTOM == as_prior_config(str(path)) == as_prior_config(CUSTOM.to_dict())
    assert json.loads(path.read_text())["heads"][0] == {"source": "conv3_3", "min_size": 12.0, "max_size": 20.0,
                                                        "aspect_ratios": [2.0]}
    assert HeadSpec("conv4_3_norm", 30.0).source == "conv4_3" and HeadSpec("conv4_3", 30.0).layer == "conv4_3_norm"
    assert as_prior_config(None) is DEFAULT_PRIORS
    assert [h.num_priors for h in DEFAULT_PRIORS.heads] == [3, 6, 6, 6, 6, 6]


@pytest.mark.parametrize("data, match", [
    ({"heads": [{"source": "conv5_3", "min_size": 30}]}, "source must be one of"),
    ({"heads": [{"source": "fc7", "min_size": 30}, {"source": "fc7", "min_size": 60}]}, "fc7 has several"),
    ({"heads": [{"source": "fc7", "min_size": 60, "max_size": 30}]}, "must not be smaller"),
    ({"heads": [{"source": "fc7", "min_size": -1}]}, "min_size must be a positive number"),
    ({"heads": [{"source": "fc7", "min_size": 30, "aspect_ratios": [0]}]}, "aspect ratio"),
    ({"heads": [{"source": "fc7", "min_size": 30, "ratio": [2]}]}, "unknown keys: ratio"),
    ({"heads": []}, "at least one head"),
    ([1, 2], "JSON object"),
])
def test_bad_configurations_are_refused(data, match):
    with pytest.raises(ValueError, match=match):
        PriorConfig.from_dict(data)


def test_bad_json_file_names_it(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="p.json"):
        PriorConfig.load(path)
    with pytest.raises(FileNotFoundError):
        PriorConfig.load(tmp_path / "none.json")


def test_resolve_model_rebuilds_the_priors_of_a_run(tmp_path):
    from ssd_keras.models import resolve_model
    from ssd_keras.ssd import prior_boxes

    model = _ssd((128, 128, 3), 3, CUSTOM)
    model.save_weights(tmp_path / "final.weights.h5")
    config = {"classes": ["a", "b"], "width_multiplier": THIN_WIDTH, "input_shape": [128, 128, 3],
              "priors": CUSTOM.to_dict()}
    (tmp_path / "config.json").write_text(json.dumps(config))
    resolved = resolve_model(tmp_path / "final.weights.h5")
    np.testing.assert_array_equal(prior_boxes(resolved.model), CUSTOM.priors((128, 128, 3)))
    x = np.random.default_rng(0).uniform(-100, 100, (1, 128, 128, 3)).astype(np.float32)
    np.testing.assert_array_equal(resolved.model.predict(x, verbose=0), model.predict(x, verbose=0))
    config["priors"] = {"heads": [{"source": "nowhere", "min_size": 3}]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json: priors: head source"):
        resolve_model(tmp_path / "final.weights.h5")


# --------------------------------------------------------------------------- #
# coverage
# --------------------------------------------------------------------------- #
def _loop_best_iou(box, priors) -> float:
    """IoU written out, one prior at a time."""
    best = 0.0
    for x0, y0, x1, y1 in priors[:, :4].tolist():
        w = min(box[2], x1) - max(box[0], x0)
        h = min(box[3], y1) - max(box[1], y0)
        if w > 0 and h > 0:
            inter = w * h
            union = (box[2] - box[0]) * (box[3] - box[1]) + (x1 - x0) * (y1 - y0) - inter
            best = max(best, inter / union)
    return best


def test_best_ious_equal_a_loop():
    rng = np.random.default_rng(0)
    boxes = np.concatenate([tiny_boxes(rng, 12), tiny_boxes(rng, 12, sizes=(40, 250), ratios=(0.3, 3))]) / 300
    priors = DEFAULT_PRIORS.priors().astype(np.float64)
    expected = np.array([_loop_best_iou(box, priors) for box in boxes.tolist()])
    np.testing.assert_allclose(best_ious(boxes, priors, chunk=5), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("source", SOURCES)
def test_grid_best_ious_equal_every_prior_of_the_grid(source):
    rng = np.random.default_rng(SOURCES.index(source))
    shape = (300, 240, 3)
    boxes = np.concatenate([tiny_boxes(rng, 60, 240, sizes=(4, 100), ratios=(0.2, 5)),
                            [[0, 0, 5, 7], [230, 290, 240, 300]]]) / [240, 300, 240, 300]
    boxes = np.clip(boxes, 0, 1)
    rows, cols = feature_map_sizes(shape)[source]
    for width, height in [(10.0, 14.0), (33.0, 18.0), (120.0, 300.0)]:
        grid = prior_box_grid((240, 300), (cols, rows), 1.0)[:, :4]  # shape replaced below
        centres = (grid[:, :2] + grid[:, 2:]) / 2  # unclipped 1 px priors: the cell centres
        half = np.array([width / 240, height / 300]) / 2
        priors = np.clip(np.concatenate([centres - half, centres + half], axis=1), 0, 1)
        expected = np.array([_loop_best_iou(box, priors) for box in boxes.tolist()])
        np.testing.assert_allclose(grid_best_ious(boxes, (rows, cols), shape, width, height), expected, atol=1e-12)


# --------------------------------------------------------------------------- #
# the search
# --------------------------------------------------------------------------- #
def test_suggested_priors_cover_tiny_boxes_the_default_misses():
    boxes = tiny_boxes(np.random.default_rng(7), 2000) / 300  # 10-26 px, ratios 0.5-2, 300x300
    before = np.mean(best_ious(boxes, DEFAULT_PRIORS.priors()) >= 0.5)
    suggestion = suggest_priors(boxes, max_priors=20_000)
    assert before < 0.3
    assert suggestion.coverage >= 0.9
    assert suggestion.num_priors <= 20_000 and suggestion.num_priors == suggestion.config.num_priors()
    assert suggestion.coverage == np.mean(best_ious(boxes, suggestion.config.priors()) >= 0.5)
    assert "conv3_3" in [h.source for h in suggestion.config.heads]  # the stride-4 grid
    sizes, _ = box_sizes(boxes, (300, 300, 3))
    assert all(h.min_size <= sizes.max() for h in suggestion.config.heads)  # from the data, not the default


def test_the_budget_is_kept_and_more_budget_covers_more():
    boxes = tiny_boxes(np.random.default_rng(8), 800) / 300
    small = suggest_priors(boxes, max_priors=3000)
    large = suggest_priors(boxes, max_priors=20_000)
    assert small.num_priors <= 3000 < large.num_priors
    assert small.coverage < large.coverage


def test_the_search_does_not_lose_to_the_default_on_ordinary_boxes(reference_dir):
    truth = json.loads((reference_dir / "gt_pascal.json").read_text())
    boxes = np.array([row[:4] for rows in truth.values() for row in rows])[::4]
    default = np.mean(best_ious(boxes, DEFAULT_PRIORS.priors()) >= 0.5)
    suggestion = suggest_priors(boxes)
    assert suggestion.coverage >= default
    assert suggestion.num_priors <= 7308


def test_search_errors():
    with pytest.raises(ValueError, match="no boxes"):
        suggest_priors(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="covers any"):
        suggest_priors(np.array([[0.0, 0.0, 0.01, 0.01]]), max_priors=1)
    with pytest.raises(ValueError, match="max_priors"):
        suggest_priors(np.array([[0.0, 0.0, 0.5, 0.5]]), max_priors=0)


def test_priors_and_search_import_no_tensorflow():
    code = ("import sys, numpy as np\n"
            "import ssd_keras.priors, ssd_keras.prior_search, ssd_keras.data.check\n"
            "ssd_keras.prior_search.suggest_priors(np.array([[0.1, 0.1, 0.3, 0.4]]))\n"
            "print(','.join(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.strip() == ""
