"""Weights: the original port's Keras 1.2 HDF5 layout, Keras 3 files, and the checks of load_weights."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from ssd_keras.image import preprocess_input, resize_image
from ssd_keras.ssd import SSD300
from ssd_keras.weights import LoadReport, WeightsFileError, load_weights, read_legacy_weights
from tests.legacy_h5 import random_legacy_weights, write_legacy_h5

WIDTH = 0.125
CONF_HEADS = ["conv4_3_norm_mbox_conf", "fc7_mbox_conf", "conv6_2_mbox_conf", "conv7_2_mbox_conf",
              "conv8_2_mbox_conf", "pool6_mbox_conf_flat"]


def thin(num_classes=21):
    return SSD300(num_classes=num_classes, width_multiplier=WIDTH)


def values(model, name):
    layer = model.get_layer(name)
    return [keras.ops.convert_to_numpy(w) for w in layer.trainable_weights
            + layer.non_trainable_weights]


@pytest.fixture(scope="module")
def legacy_file(tmp_path_factory):
    """A 21-class thin SSD300 written in the legacy layout with random values."""
    model = thin()
    weights = random_legacy_weights(model, seed=3)
    path = tmp_path_factory.mktemp("w") / "weights_SSD300.hdf5"
    write_legacy_h5(path, model, weights)
    return path, weights


def assert_loaded(model, weights, names=None):
    for name in names or weights:
        for got, want in zip(values(model, name), weights[name], strict=True):
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_written_file_has_the_legacy_layout(legacy_file):
    path, _ = legacy_file
    with h5py.File(path) as f:
        assert "layer_names" in f.attrs
        assert list(f["conv1_1"].attrs["weight_names"]) == [b"conv1_1_W:0", b"conv1_1_b:0"]
        assert list(f["conv4_3_norm"].attrs["weight_names"]) == [b"conv4_3_norm_gamma:0"]
        assert f["conv1_1"]["conv1_1_W:0"].shape == (3, 3, 3, 8)


def test_keras_load_weights_by_name_reads_the_original_layout(legacy_file):
    path, weights = legacy_file
    model = thin()
    model.load_weights(str(path), by_name=True)
    assert_loaded(model, weights)


def test_load_weights_puts_every_value_in_its_kernel(legacy_file):
    path, weights = legacy_file
    model = thin()
    report = load_weights(model, path)
    assert isinstance(report, LoadReport) and report.format == "legacy-h5"
    assert sorted(report.loaded) == sorted(weights) and not report.skipped and not report.unused
    assert_loaded(model, weights)
    assert read_legacy_weights(path).keys() >= weights.keys()


def test_whole_model_file_layout_is_accepted(tmp_path):
    model = thin()
    weights = random_legacy_weights(model, seed=4)
    path = tmp_path / "whole.h5"
    write_legacy_h5(path, model, weights, whole_model=True)
    load_weights(model, path)
    assert_loaded(model, weights)


def test_predictions_match_a_direct_computation_of_two_head_paths(legacy_file, sample_image):
    """conv4_3 -> Normalize -> loc conv, and pool6 -> Dense, recomputed with the file's arrays."""
    path, weights = legacy_file
    model = thin()
    load_weights(model, path)
    x = preprocess_input(resize_image(sample_image, (300, 300))[np.newaxis])
    features = keras.Model(model.input, [model.get_layer("conv4_3").output,
                                         model.get_layer("conv8_2").output])
    conv4_3, conv8_2 = [np.asarray(t) for t in features.predict(x, verbose=0)]
    predictions = model.predict(x, verbose=0)[0]

    gamma, = weights["conv4_3_norm"]
    norm = conv4_3 / np.sqrt(np.maximum((conv4_3 ** 2).sum(-1, keepdims=True), 1e-12)) * gamma
    kernel, bias = weights["conv4_3_norm_mbox_loc"]
    loc = tf.nn.conv2d(norm, kernel, strides=1, padding="SAME").numpy()[0] + bias  # (38, 38, 12)
    np.testing.assert_allclose(predictions[:4332, :4], loc.reshape(-1, 4), rtol=1e-3, atol=1e-4)

    pooled = conv8_2.mean(axis=(1, 2))[0]
    kernel, bias = weights["pool6_mbox_conf_flat"]
    logits = (pooled @ kernel + bias).reshape(6, 21)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(predictions[-6:, 4:25], probs, rtol=1e-4, atol=1e-6)
    kernel, bias = weights["pool6_mbox_loc_flat"]
    np.testing.assert_allclose(predictions[-6:, :4], (pooled @ kernel + bias).reshape(6, 4),
                               rtol=1e-4, atol=1e-5)


def test_other_class_count_loads_all_but_the_conf_heads(legacy_file):
    path, weights = legacy_file
    model = thin(num_classes=4)
    report = load_weights(model, path)
    assert sorted(report.skipped) == sorted(f"{name}_4" for name in CONF_HEADS)
    assert all(reason == "not in the file" for reason in report.skipped.values())
    assert sorted(report.unused) == sorted(CONF_HEADS)
    assert_loaded(model, weights, [n for n in weights if n not in CONF_HEADS])
    assert "skipped 6" in str(report)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.hdf5"):
        load_weights(thin(), tmp_path / "nothere.hdf5")


def test_truncated_file_names_it(legacy_file, tmp_path):
    data = legacy_file[0].read_bytes()
    path = tmp_path / "cut.hdf5"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsFileError, match="cut.hdf5"):
        load_weights(thin(), path)


@pytest.mark.parametrize("name, content", [("junk.h5", b"not hdf5 at all" * 10),
                                           ("empty.hdf5", b""),
                                           ("junk.keras", b"PK not a zip"),
                                           ("junk.weights.h5", b"\x89HDF garbage")])
def test_corrupt_files_name_themselves(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(WeightsFileError, match=name.replace(".", r"\.")):
        load_weights(thin(), path)


def test_file_of_another_model_is_refused_and_nothing_loads(tmp_path):
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense_a"),
                              keras.layers.Dense(2, name="dense_b")])
    path = tmp_path / "other.h5"
    write_legacy_h5(path, other, random_legacy_weights(other))
    model = thin()
    before = values(model, "conv1_1")
    with pytest.raises(ValueError, match=r"only 0 of the 34 layers"):
        load_weights(model, path)
    assert_loaded(model, {"conv1_1": before})


def test_file_matching_fewer_than_half_is_refused(legacy_file, tmp_path):
    path, weights = legacy_file
    few = {name: w for name, w in weights.items() if name.startswith("conv1")}
    partial = tmp_path / "partial.h5"
    other = keras.Sequential([keras.Input((4,))])
    write_legacy_h5(partial, other, few)
    with pytest.raises(ValueError, match=r"only 2 of the 34"):
        load_weights(thin(), partial)


def test_shape_mismatch_names_the_layer_unless_skipped(legacy_file, tmp_path):
    path, weights = legacy_file
    bad = dict(weights)
    bad["conv6_1"] = [np.zeros((1, 1, 128, 99), "float32"), np.zeros(99, "float32")]
    bad_path = tmp_path / "bad.h5"
    write_legacy_h5(bad_path, thin(), bad)
    model = thin()
    before = values(model, "conv1_1")
    with pytest.raises(ValueError, match="conv6_1"):
        load_weights(model, bad_path)
    assert_loaded(model, {"conv1_1": before})  # nothing was assigned
    report = load_weights(model, bad_path, skip_mismatch=True)
    assert list(report.skipped) == ["conv6_1"] and "99" in report.skipped["conv6_1"]
    assert_loaded(model, weights, [n for n in weights if n != "conv6_1"])


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_keras3_files_round_trip_through_the_front_door(legacy_file, tmp_path, suffix):
    path, weights = legacy_file
    source = thin()
    load_weights(source, path)
    saved = tmp_path / f"model{suffix}"
    source.save_weights(saved) if suffix == ".weights.h5" else source.save(saved)
    model = thin()
    report = load_weights(model, saved)
    assert report.format == {".weights.h5": "weights.h5", ".keras": "keras"}[suffix]
    assert len(report.loaded) == 34 and not report.skipped
    assert_loaded(model, weights)


def test_keras3_file_of_another_width_is_refused(tmp_path):
    saved = tmp_path / "wide.weights.h5"
    SSD300(num_classes=21, width_multiplier=0.25).save_weights(saved)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_weights(thin(), saved)
    with pytest.raises(ValueError, match="would load"):
        load_weights(thin(), saved, skip_mismatch=True)


def test_unknown_extension_is_refused(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown weights format"):
        load_weights(thin(), path)
