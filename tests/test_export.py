"""export_model / load_exported: every format x precision round trip on the embedded demo model,
detections of the float32 exports equal to detection_out, quantized exports within 0.02 mAP,
LiteRT builtins only, and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssd_keras import layout
from ssd_keras.data.synthetic import make_scene
from ssd_keras.evaluation import evaluate_detections
from ssd_keras.image import model_batches
from ssd_keras.ssd_utils import BBoxUtility
from tests.conftest import assert_same_detections

pytest.importorskip("ai_edge_litert")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from ssd_keras import exported as exported_module  # noqa: E402
from ssd_keras.export import calibration_images, export_model  # noqa: E402
from ssd_keras.exported import MissingRuntimeError, load_exported  # noqa: E402

SCENES = 20
ROUND_TRIPS = [("litert", "float32"), ("litert", "float16"), ("litert", "dynamic"), ("litert", "int8"),
               ("onnx", "float32"), ("onnx", "float16"), ("onnx", "dynamic"), ("onnx", "int8"),
               ("saved_model", "float32")]


@pytest.fixture(scope="module")
def demo(demo_model):
    return demo_model


@pytest.fixture(scope="module")
def scenes():
    """20 held-out scenes (not the demo's training seed, not the calibration's)."""
    held_out = [make_scene(np.random.default_rng([91, i])) for i in range(SCENES)]
    images = next(model_batches([s[0] for s in held_out], (300, 300), SCENES))
    annotations = [{"boxes": boxes, "labels": labels} for _, boxes, labels in held_out]
    return images, annotations


@pytest.fixture(scope="module")
def keras_reference(demo, scenes):
    model, _ = demo
    images, annotations = scenes
    rows = BBoxUtility(layout.num_classes_of(model)).detection_out(model.predict(images, verbose=0))
    return rows, evaluate_detections(rows, annotations, layout.num_classes_of(model))["mAP"]


@pytest.fixture(scope="module")
def exports(demo_exports):
    """Every round trip's file (exported once per session)."""
    return {key: demo_exports[key] for key in ROUND_TRIPS}


@pytest.mark.parametrize("format,precision", ROUND_TRIPS)
def test_round_trip(format, precision, exports, demo, scenes, keras_reference):
    model, class_names = demo
    images, annotations = scenes
    rows, keras_map = keras_reference
    loaded = load_exported(exports[format, precision])
    assert loaded.format == format and loaded.settings["precision"] == precision
    assert loaded.class_names == class_names and loaded.input_shape == (300, 300, 3)
    raw = loaded.predict_rows(images[:2])
    assert raw.shape == (2, 200, 6) and raw.dtype == np.float32
    detections = loaded.predict(images)
    assert len(detections) == SCENES
    if precision == "float32":  # the same detections as detection_out, to 1e-4 (above 0.05: fewer rows to match)
        for got, expected in zip(loaded.predict(images[:8], confidence_threshold=0.05), rows):
            assert_same_detections(got, expected[expected[:, layout.CONFIDENCE] > 0.05], atol=1e-4)
    found = evaluate_detections(detections, annotations, layout.num_classes_of(model))["mAP"]
    assert found == pytest.approx(keras_map, abs=0.02), (format, precision, found, keras_map)


def test_quantized_files_are_smaller(exports):
    size = {key: path.stat().st_size for key, path in exports.items() if key[0] != "saved_model"}
    for format in ("litert", "onnx"):
        assert size[format, "int8"] <= 0.35 * size[format, "float32"]
        assert size[format, "dynamic"] <= 0.35 * size[format, "float32"]
        assert size[format, "float16"] <= 0.6 * size[format, "float32"]


def test_litert_files_use_builtin_ops_only(exports):
    """No Flex (TensorFlow) or custom ops: the file runs in the standalone LiteRT interpreter."""
    from ai_edge_litert import schema_py_generated as schema

    for precision in ("float32", "int8"):
        model = schema.Model.GetRootAs(exports["litert", precision].read_bytes(), 0)
        codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
        builtin = {max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) for code in codes}
        assert schema.BuiltinOperator.CUSTOM not in builtin
        assert not [code.CustomCode() for code in codes if code.CustomCode()]
        assert schema.BuiltinOperator.NON_MAX_SUPPRESSION_V5 in builtin  # NMS is inside


def test_int8_keeps_the_detection_tail_in_float(exports, scenes):
    """Labels stay integers and boxes stay within [0, 1]: decoding and NMS run in float32."""
    rows = load_exported(exports["litert", "int8"]).predict_rows(scenes[0][:4])
    real = rows[rows[..., layout.CONFIDENCE] > 0]
    assert len(real)
    np.testing.assert_array_equal(real[:, layout.LABEL], np.round(real[:, layout.LABEL]))
    assert ((real[:, layout.BOX] >= 0) & (real[:, layout.BOX] <= 1)).all()
    confidence = real[:, layout.CONFIDENCE]
    assert (confidence <= 1).all()
    for steps in (63.75, 255, 256):  # not on an int8 grid (a quantized top_k gave steps of 1/63.75)
        assert np.mean(np.abs(confidence * steps - np.round(confidence * steps)) < 1e-3) < 0.5


def test_detect_takes_rgb_images_of_any_size(exports, demo):
    from ssd_keras import detect

    model, _ = demo
    image = make_scene(np.random.default_rng([93, 0]))[0]
    wide = np.concatenate([image, image], axis=1)  # 300 x 600
    got = load_exported(exports["onnx", "float32"]).detect([wide], confidence_threshold=0.3)
    expected = detect(model, [wide], confidence_threshold=0.3)
    assert_same_detections(got[0], expected[0], atol=1e-4)


def test_narrower_thresholds_equal_a_rerun(exports, scenes):
    loaded = load_exported(exports["litert", "float32"])
    everything = loaded.predict(scenes[0][:3])
    confident = loaded.predict(scenes[0][:3], confidence_threshold=0.5, keep_top_k=3)
    for all_rows, few in zip(everything, confident):
        np.testing.assert_array_equal(few, all_rows[all_rows[:, 1] > 0.5][:3])


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("kwargs,message", [
    ({"format": "tflite"}, "unknown format 'tflite'"),
    ({"precision": "int4"}, "unknown precision 'int4'"),
    ({"precision": "int8"}, "needs calibration images"),
    ({"precision": "int8", "calibration": np.zeros((0, 300, 300, 3), np.float32)}, "calibration array is empty"),
    ({"precision": "int8", "calibration": np.zeros((2, 32, 32, 3), np.float32)}, "must be (n, 300, 300, 3)"),
    ({"class_names": ["a", "b"]}, "2 class names for a model of 4 classes"),
    ({"nms_thresh": 1.5}, "nms_thresh"),
])
def test_bad_arguments_are_named_and_leave_nothing(kwargs, message, demo, tmp_path):
    model, _ = demo
    out = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        export_model(model, out, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_saved_model_is_float32_only(demo, tmp_path):
    with pytest.raises(ValueError, match="saved_model is float32 only"):
        export_model(demo[0], tmp_path / "sm", "saved_model", "int8")
    assert list(tmp_path.iterdir()) == []


def test_bad_calibration_sources(demo, tmp_path):
    model, _ = demo
    with pytest.raises(FileNotFoundError, match="calibration source not found"):
        export_model(model, tmp_path / "m.tflite", precision="int8", calibration=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no images"):
        export_model(model, tmp_path / "m.tflite", precision="int8", calibration=tmp_path / "empty")
    assert not (tmp_path / "m.tflite").exists()


def test_calibration_from_a_folder_and_a_csv(tmp_path):
    from ssd_keras.image import preprocess_input, resize_image
    from ssd_keras.visualization import save_image as write

    images = [make_scene(np.random.default_rng([94, i]))[0] for i in range(3)]
    for i, image in enumerate(images):
        write(tmp_path / "pics" / f"{i}.png", image)
    (tmp_path / "calib.csv").write_text("image_path,xmin,ymin,xmax,ymax,class_name\n"
                                        + "".join(f"pics/{i}.png,,,,,\n" for i in (2, 0, 2)))
    expected = preprocess_input(np.stack([resize_image(image, (300, 300)) for image in images]))
    np.testing.assert_allclose(calibration_images(tmp_path / "pics"), expected)
    np.testing.assert_allclose(calibration_images(tmp_path / "pics", size=2), expected[:2])
    np.testing.assert_allclose(calibration_images(tmp_path / "calib.csv"), expected[[2, 0]])
    with pytest.raises(ValueError, match="neither a folder of images nor an annotation .csv"):
        calibration_images(tmp_path / "pics" / "0.png")


def test_a_model_that_is_not_ssd300(tmp_path):
    import keras

    inputs = keras.Input((300, 300, 3))
    model = keras.Model(inputs, keras.layers.Dense(6)(keras.layers.GlobalAveragePooling2D()(inputs)))
    with pytest.raises(ValueError, match="is not an SSD300"):
        export_model(model, tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_a_path_that_cannot_be_written(demo, tmp_path):
    model, _ = demo
    (tmp_path / "file").write_text("x")
    with pytest.raises((PermissionError, ValueError, OSError), match="file"):
        export_model(model, tmp_path / "file" / "m.tflite")
    (tmp_path / "dir.tflite").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        export_model(model, tmp_path / "dir.tflite")


@pytest.mark.parametrize("path,format,message", [
    ("m.onnx", "litert", r"ends in \.onnx, a onnx file, but the format asked for is litert"),
    ("m.tflite", "saved_model", "ends in .tflite, a litert file"),
    ("m.bin", "onnx", "name the onnx file m.bin.onnx"),
    ("model", None, "name the file .tflite"),
])
def test_the_suffix_names_the_format(path, format, message, demo, tmp_path):
    with pytest.raises(ValueError, match=message):
        export_model(demo[0], tmp_path / path, format)
    assert list(tmp_path.iterdir()) == []


def test_the_format_comes_from_the_suffix():
    from ssd_keras.exported import export_format

    assert export_format("a/b.tflite") == "litert" and export_format("b.ONNX") == "onnx"
    assert export_format("folder", "saved_model") == "saved_model"


def test_a_failed_conversion_leaves_nothing(demo, tmp_path, monkeypatch):
    from ssd_keras import export

    def broken(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(export, "_litert_bytes", broken)
    with pytest.raises(RuntimeError, match="converter crashed"):
        export_model(demo[0], tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_runtime_names_its_package(demo, tmp_path, monkeypatch):
    real = exported_module.importlib.util.find_spec
    monkeypatch.setattr(exported_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "ai_edge_litert" else real(name, *a))
    with pytest.raises(MissingRuntimeError, match="pip install ai-edge-litert"):
        export_model(demo[0], tmp_path / "m.tflite")
    (tmp_path / "x.tflite").write_bytes(b"0")
    with pytest.raises(MissingRuntimeError, match="pip install ai-edge-litert"):
        load_exported(tmp_path / "x.tflite")


def test_load_exported_rejects_what_is_not_an_export(tmp_path, exports):
    with pytest.raises(FileNotFoundError):
        load_exported(tmp_path / "missing.tflite")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not an exported model"):
        load_exported(tmp_path / "notes.txt")
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ValueError, match="LiteRT"):
        load_exported(tmp_path / "junk.tflite")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="ONNX"):
        load_exported(tmp_path / "junk.onnx")
    with pytest.raises(ValueError, match="takes preprocessed images"):
        load_exported(exports["onnx", "float32"]).predict(np.zeros((1, 32, 32, 3), np.float32))


def test_the_file_records_its_settings(exports):
    settings = load_exported(exports["onnx", "int8"]).settings
    assert settings["keep_top_k"] == 200 and settings["nms_thresh"] == pytest.approx(0.45)
    assert settings["confidence_threshold"] == pytest.approx(0.01) and settings["format"] == "onnx"
    on_disk = json.loads((exports["saved_model", "float32"] / "assets" / "ssd_keras.json").read_text())
    assert on_disk["class_names"] == load_exported(exports["saved_model", "float32"]).class_names
