"""ssd_keras.video: VideoTest on a thin SSD300 and a short generated video; the script
testing_utils/videotest.py (its command line, and its import as the README shows)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import cv2
import numpy as np
import pytest

from ssd_keras.ssd import VOC_CLASSES
from ssd_keras.video import VideoSourceError, VideoTest
from ssd_keras.visualization import class_colors
from tests.conftest import REPO_ROOT

TESTING_UTILS = REPO_ROOT / "testing_utils"
SCRIPTS = ("videotest", "videotest_example")  # the modules of testing_utils/
FRAMES, WIDTH, HEIGHT, FPS = 12, 320, 240, 10.0
BACKGROUND_GRAY = 40
DOG, CAT = VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("cat") + 1
DOG_BOX = (0.25, 0.4, 0.75, 0.9)  # drawn (confidence 0.9)
CAT_BOX = (0.6, 0.1, 0.9, 0.3)  # below the threshold (confidence 0.3): not drawn


@pytest.fixture
def testing_utils(monkeypatch):
    """``testing_utils/`` on sys.path, as the README's usage has it; its modules are imported
    afresh from there and forgotten afterwards."""
    monkeypatch.syspath_prepend(str(TESTING_UTILS))
    for name in SCRIPTS:
        sys.modules.pop(name, None)
    yield importlib.import_module
    for name in SCRIPTS:
        sys.modules.pop(name, None)


@pytest.fixture
def script(testing_utils):
    """testing_utils/videotest.py, the command line, imported as ``videotest``."""
    return testing_utils("videotest")


def read_frames(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """12 frames 320x240 (mp4v): a gray background and two rectangles that move 12 px a frame."""
    path = tmp_path_factory.mktemp("video") / "moving.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(FRAMES):
        frame = np.full((HEIGHT, WIDTH, 3), BACKGROUND_GRAY, np.uint8)
        cv2.rectangle(frame, (10 + 12 * i, 60), (70 + 12 * i, 150), (0, 200, 255), -1)
        cv2.rectangle(frame, (250 - 10 * i, 140), (300 - 10 * i, 220), (255, 80, 0), -1)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def source_frames(video) -> list[np.ndarray]:
    frames = read_frames(video)
    assert len(frames) == FRAMES
    return frames


@pytest.fixture(scope="module")
def video_test(thin_ssd):
    return VideoTest(VOC_CLASSES, thin_ssd, (300, 300, 3))


@pytest.fixture
def window(monkeypatch):
    """cv2's window calls replaced: ``shown`` gets every frame shown, ``keys`` feeds waitKey."""
    state = {"shown": [], "keys": []}
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")  # counts as a display (none is opened)
    monkeypatch.setattr(cv2, "imshow", lambda name, image: state["shown"].append(image.copy()))
    monkeypatch.setattr(cv2, "waitKey", lambda delay=0: state["keys"].pop(0) if state["keys"] else -1)
    monkeypatch.setattr(cv2, "destroyWindow", lambda name: None)
    return state


class FixedDetections:
    """A decoder that reports the same rows in every frame (by default a confident dog and an
    unconfident cat)."""

    def __init__(self, rows=((DOG, 0.9, *DOG_BOX), (CAT, 0.3, *CAT_BOX))):
        self.rows = np.array(rows, dtype=np.float64).reshape(-1, 6)

    def detection_out(self, predictions, confidence_threshold=0.01, **kwargs):
        return [self.rows for _ in range(len(predictions))]


def closest_source(frame: np.ndarray, sources: list[np.ndarray]) -> int:
    """Index of the source frame nearest to ``frame`` (the FPS corner left out)."""
    return int(np.argmin([np.abs(frame[40:].astype(int) - s[40:]).mean() for s in sources]))


# ---------------------------------------------------------------------- class lists
def test_background_entry_is_dropped(thin_ssd):
    vt = VideoTest(["background", *VOC_CLASSES], thin_ssd, (300, 300))
    assert vt.class_names == list(VOC_CLASSES)
    assert vt.num_classes == 21


@pytest.mark.parametrize("names", [VOC_CLASSES[:5], ["background", *VOC_CLASSES[:19]], [*VOC_CLASSES, "x"]])
def test_class_list_of_the_wrong_length_is_an_error(thin_ssd, names):
    with pytest.raises(ValueError, match=r"predicts 20 classes .* class names were given"):
        VideoTest(names, thin_ssd)


def test_input_shape_must_be_the_models(thin_ssd):
    with pytest.raises(ValueError, match="input_shape"):
        VideoTest(VOC_CLASSES, thin_ssd, (512, 512, 3))


# ---------------------------------------------------------------------- the pipeline
def test_run_writes_every_frame_in_order(thin_ssd, video, source_frames, tmp_path):
    out = tmp_path / "out" / "annotated.mp4"
    vt = VideoTest(VOC_CLASSES, thin_ssd, bbox_util=FixedDetections(()), batch_size=2)
    summary = vt.run(video, start_frame=3, display=False, output=out)
    assert summary.frames == FRAMES - 3
    assert summary.total_seconds > summary.model_seconds > 0
    written = read_frames(out)
    assert len(written) == FRAMES - 3
    assert all(frame.shape == (HEIGHT, WIDTH, 3) for frame in written)
    assert [closest_source(f, source_frames) for f in written] == list(range(3, FRAMES))
    # the FPS counter: black text on a white box in the top-left corner of a dark video
    corner = written[0][:12, :30]
    assert (corner > 200).all(axis=-1).mean() > 0.5 and corner.min() < 100


def test_max_frames(video_test, video, tmp_path):
    out = tmp_path / "five.mp4"
    assert video_test.run(video, display=False, output=out, max_frames=5).frames == 5
    assert len(read_frames(out)) == 5


def test_detections_are_drawn_in_their_class_colour_above_the_threshold(thin_ssd, video, source_frames,
                                                                          window):
    vt = VideoTest(VOC_CLASSES, thin_ssd, bbox_util=FixedDetections(), batch_size=3)
    summary = vt.run(video, conf_thresh=0.6)  # display=True, through the replaced window calls
    assert summary.frames == FRAMES and not summary.stopped_by_user
    assert summary.detections == FRAMES  # the dog in every frame, never the cat
    assert len(window["shown"]) == FRAMES
    dog_bgr = class_colors(len(VOC_CLASSES))[DOG - 1][::-1]
    for shown, source in zip(window["shown"], source_frames):
        left, right = int(DOG_BOX[0] * WIDTH), int(DOG_BOX[2] * WIDTH)
        middle = int(0.8 * HEIGHT)  # below the label, left and right edges of the dog box
        assert tuple(shown[middle, left]) == dog_bgr and tuple(shown[middle, right]) == dog_bgr
        cat_left, cat_middle = int(CAT_BOX[0] * WIDTH), int(0.2 * HEIGHT)
        np.testing.assert_array_equal(shown[cat_middle - 5:cat_middle + 5, cat_left - 3:cat_left + 3],
                                      source[cat_middle - 5:cat_middle + 5, cat_left - 3:cat_left + 3])


@pytest.mark.parametrize("key", [ord("q"), 27])
def test_q_or_escape_quits(video_test, video, window, key):
    window["keys"] = [-1, -1, key]
    summary = video_test.run(video)
    assert summary.stopped_by_user
    assert len(window["shown"]) == 3


def test_unreadable_start_frame_is_a_source_error(video_test, video):
    with pytest.raises(VideoSourceError, match="cannot read a frame .* at frame 50"):
        video_test.run(video, start_frame=50, display=False)


# ---------------------------------------------------------------------- the library
def test_the_library_imports_no_tensorflow():
    code = ("import sys; import ssd_keras.video; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'tensorflow imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------- the script
def test_readme_usage_from_testing_utils(testing_utils, thin_ssd, video, window):
    """``VideoTest(class_names, model, input_shape).run(source)`` with ``testing_utils/`` on
    sys.path, as the README (and the original) has it."""
    import videotest

    from ssd_keras import video as library

    assert videotest.VideoTest is VideoTest and videotest.VideoSourceError is VideoSourceError
    assert videotest.open_video is library.open_video
    summary = videotest.VideoTest(VOC_CLASSES, thin_ssd, (300, 300, 3)).run(str(video), 9)
    assert summary.frames == FRAMES - 9 and len(window["shown"]) == FRAMES - 9


def test_cli_writes_the_annotated_video(script, video, tmp_path, capsys):
    out = tmp_path / "cli.mp4"
    code = script.main(["--video", str(video), "--no-display", "--output", str(out),
                        "--max-frames", "5", "--conf-thresh", "0.5"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "5 frames" in printed and "model only" in printed and "end to end" in printed
    assert "model: " in printed  # which model ran, in words
    written = read_frames(out)
    assert len(written) == 5 and written[0].shape == (HEIGHT, WIDTH, 3)


@pytest.mark.parametrize("args, message", [
    (["--camera", "99"], "cannot open camera 99"),
    (["--video", "{tmp}/missing.mp4"], "video file not found: {tmp}/missing.mp4"),
    (["--video", "{tmp}/notes.txt"], "cannot open video file {tmp}/notes.txt"),
])
def test_cli_unavailable_source_exits_2(script, tmp_path, capsys, args, message):
    (tmp_path / "notes.txt").write_text("not a video\n")
    args = [a.format(tmp=tmp_path) for a in args]
    assert script.main([*args, "--no-display"]) == 2
    err = capsys.readouterr().err
    assert f"error: {message.format(tmp=tmp_path)}" in err and "Traceback" not in err


@pytest.fixture
def shape_classes(tmp_path, monkeypatch):
    """A class-list file that no weights were trained for (no VOC weights from the environment)."""
    monkeypatch.delenv("SSD_KERAS_WEIGHTS", raising=False)
    path = tmp_path / "classes.txt"
    path.write_text("background\ncircle\nsquare\n")  # background first: accepted, dropped
    return path


def test_cli_custom_classes_without_weights_need_allow_untrained(script, video, shape_classes, capsys):
    assert script.main(["--video", str(video), "--no-display", "--classes", str(shape_classes)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no weights for the classes circle, square") and "--allow-untrained" in err
    assert "Traceback" not in err


def test_cli_allow_untrained_runs_an_untrained_network(script, video, shape_classes, capsys):
    assert script.main(["--video", str(video), "--no-display", "--classes", str(shape_classes),
                        "--allow-untrained", "--max-frames", "1"]) == 0
    printed = capsys.readouterr().out
    assert "model: an UNTRAINED SSD300" in printed and "1 frames" in printed


def test_cli_missing_weights_exits_1(script, video, tmp_path, capsys):
    missing = tmp_path / "nope.weights.h5"
    assert script.main(["--video", str(video), "--no-display", "--weights", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: weights file not found: {missing}") and "Traceback" not in err


@pytest.fixture
def no_display(monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")


def test_cli_without_a_display_asks_for_no_display(script, no_display, capsys):
    assert script.main(["--camera", "0"]) == 2
    assert "--no-display" in capsys.readouterr().err


def test_run_without_a_display_is_an_error_not_an_abort(no_display, video_test, video):
    with pytest.raises(RuntimeError, match="display=False"):
        video_test.run(video)


def test_script_reports_a_missing_file_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(TESTING_UTILS / "videotest.py"), "--video",
                             str(tmp_path / "nope.mp4"), "--no-display"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: video file not found: {tmp_path / 'nope.mp4'}"


def test_script_help():
    result = subprocess.run([sys.executable, str(TESTING_UTILS / "videotest.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--allow-untrained" in result.stdout and "--classes" in result.stdout


def test_example_runs_headless(testing_utils, video, capsys):
    example = testing_utils("videotest_example")
    assert example.main(["--video", str(video), "--no-display", "--max-frames", "2"]) == 0
    assert "2 frames" in capsys.readouterr().out
