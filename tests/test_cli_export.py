"""The ``export`` command, in-process: one real export (the embedded shapes model to LiteRT
float32, ~5 s) checked line by line and against the Keras model, and the bad inputs, which fail
before any conversion (most before the model loads) and leave nothing at ``--out``."""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest

import ssd_keras.cli.export as export_command
import ssd_keras.models
from ssd_keras import cli
from tests.conftest import assert_same_detections

DEMO_CLASSES = ["circle", "square", "triangle", "star"]


def no_voc_weights(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """No VOC weights are found: the embedded shapes model is the default (as in test_cli)."""
    monkeypatch.chdir(folder)
    monkeypatch.delenv(ssd_keras.models.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(ssd_keras.models, "_CHECKOUT_WEIGHTS", folder / "no_checkout_weights")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``export --out shapes.tflite`` with nothing else: ``(status, stdout, path, resolved model)``."""
    folder = tmp_path_factory.mktemp("export")
    loaded = []

    def spy(args):
        loaded.append(load_model(args))
        return loaded[-1]

    load_model = export_command.load_model
    out = folder / "shapes.tflite"
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(io.StringIO()) as stdout:
        no_voc_weights(monkeypatch, folder)
        monkeypatch.setattr(export_command, "load_model", spy)
        status = cli.main(["export", "--out", str(out)])
    return status, stdout.getvalue(), out, loaded[0]


def test_export_without_weights_exports_the_model_detect_would_run_and_says_so(exported):
    status, stdout, out, resolved = exported
    assert status == 0 and out.is_file()
    lines = stdout.splitlines()
    assert lines[0].startswith("model: the embedded shapes model")
    assert resolved.class_names == DEMO_CLASSES
    size_mb = out.stat().st_size / 1e6
    assert f"exported litert float32 -> {out} (file, {size_mb:.1f} MB) in " in stdout
    assert lines[1].endswith(" s")
    assert "classes recorded: circle, square, triangle, star" in lines
    assert [p.name for p in out.parent.iterdir()] == ["shapes.tflite"]  # no temporary file left


def test_the_exported_file_detects_what_the_model_detects(exported):
    from ssd_keras import detect, load_exported
    from ssd_keras.data.synthetic import make_scene

    _, _, out, (model, class_names, _) = exported
    runner = load_exported(out)
    assert runner.format == "litert" and runner.class_names == class_names == DEMO_CLASSES
    assert runner.settings["precision"] == "float32" and runner.settings["keep_top_k"] == 200
    rng = np.random.default_rng(3)
    images = [make_scene(rng)[0] for _ in range(2)]
    got, expected = runner.detect(images), detect(model, images)
    assert all(len(rows) for rows in expected)
    for rows, reference in zip(got, expected):
        assert_same_detections(rows, reference, atol=1e-4)


def test_export_help_reads_well(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m ssd_keras export")
    for option in ("--out PATH", "--weights", "--format {litert,onnx,saved_model}",
                   "--precision {float32,float16,dynamic,int8}", "--calibration DIR|CSV|synthetic",
                   "--calibration-size N", "--keep-top-k N", "--conf-thresh X", "--nms-thresh X"):
        assert option in out
    assert "examples:" in out and "export --out shapes.tflite" in out.split("examples:")[1]


def test_command_constants_match_the_library():
    from ssd_keras import export, exported

    assert export_command.CALIBRATION_SIZE == export.DEFAULT_CALIBRATION_SIZE
    assert export_command.FORMATS is exported.FORMATS and export_command.PRECISIONS is exported.PRECISIONS


def test_synthetic_calibration_is_preprocessed_shapes_scenes():
    images = export_command.synthetic_calibration((200, 240, 3), 2)
    assert images.shape == (2, 200, 240, 3) and images.dtype == np.float32
    assert np.array_equal(images, export_command.synthetic_calibration((200, 240, 3), 2))  # seeded
    assert -124 < images.min() < -50 and 50 < images.max() < 152  # pixels less the Caffe means


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("argv, message", [
    (["--format", "tflite"], "argument --format: invalid choice: 'tflite'"),
    (["--precision", "int4"], "argument --precision: invalid choice: 'int4'"),
    (["--calibration-size", "0"], "argument --calibration-size: expected a positive integer"),
    (["--keep-top-k", "-1"], "argument --keep-top-k: expected a positive integer"),
    (["--conf-thresh", "1.5"], "argument --conf-thresh: expected"),
    (["--nms-thresh", "x"], "argument --nms-thresh: expected"),
])
def test_bad_options_are_usage_errors(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", "--out", str(tmp_path / "m.tflite"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.tflite").exists()


def test_int8_without_calibration_fails_before_tensorflow_is_imported(tmp_path):
    from tests.test_cli import run_tracking_imports

    run, loaded = run_tracking_imports("export", "--precision", "int8", "--out", tmp_path / "m.tflite")
    assert run.returncode == 2 and "error: --precision int8 needs --calibration" in run.stderr
    assert loaded == [] and not (tmp_path / "m.tflite").exists()


def test_out_is_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export"])
    assert exit_info.value.code == 2 and "--out" in capsys.readouterr().err


@pytest.fixture()
def no_model(monkeypatch):
    """The model must not load: the error comes first."""
    def load_model(args):
        raise AssertionError("the model was loaded before the error was found")

    monkeypatch.setattr(export_command, "load_model", load_model)


def export_fails(argv, capsys) -> str:
    """Runs ``export ARGV``; asserts exit status 1 and one ``error:`` line; returns that line."""
    assert cli.main(["export", *argv]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("argv, name, message", [
    (["--precision", "int8", "--calibration", "{tmp}/nowhere"], "m.tflite",
     "calibration source not found: {tmp}/nowhere"),
    (["--precision", "int8", "--calibration", "{tmp}"], "m.tflite", "calibration source {tmp} has no images"),
    (["--format", "saved_model", "--precision", "float16"], "sm", "saved_model is float32 only"),
    (["--format", "onnx"], "m.tflite", "ends in .tflite, a litert file, but the format asked for is onnx"),
    ([], "m", "name the file .tflite (litert) or .onnx (onnx)"),
])
def test_bad_settings_fail_before_the_model_loads(argv, name, message, no_model, tmp_path, capsys):
    out = tmp_path / name
    line = export_fails([arg.format(tmp=tmp_path) for arg in argv] + ["--out", str(out)], capsys)
    assert message.format(tmp=tmp_path) in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("out", ["/proc/m.tflite", "{tmp}/a_file/m.tflite"])
def test_a_destination_that_cannot_be_written_fails_before_the_model_loads(out, no_model, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    out = out.format(tmp=tmp_path)
    line = export_fails(["--out", out], capsys)
    assert f"cannot write {out}" in line
    assert not Path(out).exists() and [p.name for p in tmp_path.iterdir()] == ["a_file"]


def test_int8_without_calibration_is_a_usage_error(no_model, tmp_path, capsys):
    assert cli.main(["export", "--precision", "int8", "--out", str(tmp_path / "m.tflite")]) == 2
    assert "--precision int8 needs --calibration" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def without(module: str, monkeypatch) -> None:
    """``module`` looks uninstalled to ``ssd_keras.exported.require_runtime``."""
    import ssd_keras.exported

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(ssd_keras.exported.importlib.util, "find_spec",
                        lambda name, *args: None if name == module else find_spec(name, *args))


@pytest.mark.parametrize("format, precision, module, package", [
    ("litert", "float32", "ai_edge_litert", "ai-edge-litert"),
    ("onnx", "float16", "tf2onnx", "tf2onnx"),
    ("onnx", "dynamic", "onnxruntime", "onnxruntime"),
])
def test_a_missing_converter_names_its_pip_package(format, precision, module, package, no_model, monkeypatch,
                                                   tmp_path, capsys):
    without(module, monkeypatch)
    out = tmp_path / f"m{export_command.FORMATS[format]}"
    line = export_fails(["--format", format, "--precision", precision, "--out", str(out)], capsys)
    assert f"pip install {package}" in line
    assert list(tmp_path.iterdir()) == []


def test_an_empty_calibration_folder_fails_before_conversion(monkeypatch, tmp_path, capsys):
    no_voc_weights(monkeypatch, tmp_path)
    (tmp_path / "empty").mkdir()
    line = export_fails(["--precision", "int8", "--calibration", str(tmp_path / "empty"),
                         "--out", str(tmp_path / "m.tflite")], capsys)
    assert "has no images" in line and str(tmp_path / "empty") in line
    assert not (tmp_path / "m.tflite").exists()


def test_a_missing_weights_file_fails_clearly(tmp_path, capsys):
    line = export_fails(["--weights", str(tmp_path / "no.weights.h5"), "--out", str(tmp_path / "m.tflite")], capsys)
    assert f"weights file not found: {tmp_path / 'no.weights.h5'}" in line
    assert list(tmp_path.iterdir()) == []
