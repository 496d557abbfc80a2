"""CSVGenerator and its tf.data twin: shapes, targets, order, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from ssd_keras.data import CSVGenerator, make_dataset
from ssd_keras.image import load_image, preprocess_input, resize_image
from ssd_keras.ssd import prior_boxes
from ssd_keras.ssd_utils import BBoxUtility
from tests.rectangles import CLASSES, write_rectangles



@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """7 images of 120x160 with coloured rectangles (image 3 without objects)."""
    return write_rectangles(tmp_path_factory.mktemp("data"), 7, empty=(3,))


@pytest.fixture(scope="module")
def bbox_util(thin_ssd):
    return BBoxUtility(len(CLASSES) + 1, prior_boxes(thin_ssd))


def test_batches_have_the_model_shapes(dataset, bbox_util):
    gen = CSVGenerator(dataset, bbox_util, batch_size=3, seed=1)
    assert len(gen) == 3 and gen.class_names == CLASSES
    x, y = gen[0]
    assert x.shape == (3, 300, 300, 3) and x.dtype == np.float32
    assert y.shape == (3, 7308, 4 + 3 + 8) and y.dtype == np.float32
    assert gen[2][0].shape[0] == 1  # 7 = 3 + 3 + 1
    with pytest.raises(IndexError):
        gen[3]


@pytest.mark.parametrize("batch_size, multiple, sizes", [(4, 2, [4, 2]), (3, 3, [3, 3]), (2, 2, [2, 2, 2]),
                                                        (6, 2, [6]), (1, 1, [1] * 7)])
def test_even_batches_split_evenly_between_devices(dataset, bbox_util, batch_size, multiple, sizes):
    gen = CSVGenerator(dataset, bbox_util, batch_size=batch_size, seed=2)
    order = list(gen.order(0))
    gen.even_batches(multiple)
    assert [len(gen.batch_indices(b, 0)) for b in range(len(gen))] == sizes
    # the kept examples are the epoch's order cut short: at most multiple - 1 left out, others each epoch
    taken = [int(i) for b in range(len(gen)) for i in gen.batch_indices(b, 0)]
    assert taken == order[:len(taken)] and 7 - len(taken) < multiple
    assert gen[len(gen) - 1][0].shape[0] == sizes[-1]


def test_even_batches_refuse_what_cannot_split(dataset, bbox_util):
    gen = CSVGenerator(dataset, bbox_util, batch_size=3, seed=2)
    with pytest.raises(ValueError, match="batch_size 3 does not split evenly between 2 devices"):
        gen.even_batches(2)
    gen = CSVGenerator(dataset, bbox_util, batch_size=8, seed=2)
    with pytest.raises(ValueError, match="7 examples cannot fill a batch split between 8 devices"):
        gen.even_batches(8)


def test_validation_batches_are_plain_resized_images_and_exact_targets(dataset, bbox_util):
    gen = CSVGenerator(dataset, bbox_util, batch_size=7, train=False)
    x, y = gen[0]
    for i, record in enumerate(gen.records):  # fixed order: the CSV's
        image = load_image(record["image_path"])
        np.testing.assert_array_equal(x[i], preprocess_input(resize_image(image, (300, 300))))
        boxes = record["boxes"] / [160, 120, 160, 120]
        one_hot = np.eye(3)[record["labels"]][:, 1:]
        np.testing.assert_allclose(y[i], bbox_util.assign_boxes(np.hstack([boxes, one_hot])))
    assert y[3, :, -8].sum() == 0 and (y[[0, 1, 2, 4, 5, 6], :, -8].sum(axis=1) > 0).all()


def test_training_batches_hold_valid_targets(dataset, bbox_util):
    gen = CSVGenerator(dataset, bbox_util, batch_size=7, seed=3)
    for _ in range(3):
        x, y = gen[0]
        assert np.isfinite(x).all() and np.isfinite(y).all()
        positive = y[..., -8] == 1
        assert positive.any()
        # every positive prior decodes to a box inside the image, of the class it says
        decoded = BBoxUtility.decode_boxes(y[..., :4], np.broadcast_to(
            bbox_util.priors[:, :4], y.shape[:2] + (4,)), np.broadcast_to(
            bbox_util.priors[:, 4:], y.shape[:2] + (4,)))[positive]
        assert (decoded[:, 2] > decoded[:, 0]).all() and (decoded[:, 3] > decoded[:, 1]).all()
        np.testing.assert_allclose(y[..., 4:7][positive].sum(axis=1), 1.0)
        assert (y[..., 4][positive] == 0).all()
        gen.on_epoch_end()


def test_seeded_runs_repeat_and_epochs_differ(dataset, bbox_util):
    a = CSVGenerator(dataset, bbox_util, batch_size=4, seed=7)
    b = CSVGenerator(dataset, bbox_util, batch_size=4, seed=7)
    first = a[1]
    np.testing.assert_array_equal(first[0], b[1][0])
    np.testing.assert_array_equal(first[1], b[1][1])
    assert sorted(a.order(0)) == list(range(7)) and sorted(a.order(1)) == list(range(7))
    a.on_epoch_end()
    assert not np.array_equal(a.order(0), a.order(1)) or not np.array_equal(a[1][0], first[0])
    other = CSVGenerator(dataset, bbox_util, batch_size=4, seed=8)
    assert not np.array_equal(other[1][0], first[0])


def test_tf_data_gives_the_same_batches(dataset, bbox_util):
    for train in (False, True):
        gen = CSVGenerator(dataset, bbox_util, batch_size=3, train=train, seed=5)
        batches = list(gen.as_dataset())
        assert len(batches) == len(gen)
        for k, (x, y) in enumerate(batches):
            np.testing.assert_allclose(x.numpy(), gen[k][0], atol=1e-5)
            np.testing.assert_allclose(y.numpy(), gen[k][1], atol=1e-6)
    again = make_dataset(dataset, bbox_util, batch_size=7, train=False)
    assert next(iter(again))[0].shape == (7, 300, 300, 3)


def test_mismatched_classes_and_missing_priors_raise(dataset, bbox_util):
    with pytest.raises(ValueError, match="num_classes=3"):
        CSVGenerator(dataset, BBoxUtility(5, bbox_util.priors))
    with pytest.raises(ValueError, match="priors"):
        CSVGenerator(dataset, BBoxUtility(3))
    with pytest.raises(ValueError, match="batch_size"):
        CSVGenerator(dataset, bbox_util, batch_size=0)


@pytest.mark.parametrize("use_multiprocessing", [False, True])
def test_model_fit_with_parallel_workers(dataset, bbox_util, use_multiprocessing):
    import keras

    from ssd_keras.ssd import SSD300
    from ssd_keras.ssd_training import MultiboxLoss

    model = SSD300(num_classes=3, width_multiplier=0.125)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=MultiboxLoss(3))
    gen = CSVGenerator(dataset, bbox_util, batch_size=4, seed=0, workers=2,
                       use_multiprocessing=use_multiprocessing)
    history = model.fit(gen, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
