"""SSD on a video file or a camera: boxes, class names, scores and an FPS counter.

A port of the original ``testing_utils/videotest.py`` (``VideoTest(class_names, model,
input_shape).run(video_path=0, start_frame=0, conf_thresh=0.6)``) to OpenCV 4/5 and Keras 3.
Each frame is resized to the model's input, ``preprocess_input``-ed, predicted, decoded with
``BBoxUtility.detection_out`` and drawn with :func:`ssd_keras.visualization.draw_detections`
(one colour per class), with the frames per second in the top-left corner.

The work is pipelined so that the model is never kept waiting: a reader thread decodes and
preprocesses frames, the calling thread predicts them in small batches (whatever has been read,
up to ``batch_size``), and a drawing thread decodes the detections, draws them and writes the
output video while the next batch is predicted. Windows are only touched from the calling
thread.

The model may also be an exported file (:func:`ssd_keras.load_exported`: LiteRT, ONNX,
SavedModel), whose own decoding and NMS give the detections; the rest is the same.

The command line is ``testing_utils/videotest.py`` (``--camera 0``, ``--video clip.mp4``,
``--model ssd300.tflite``). This module imports TensorFlow only when a :class:`VideoTest` is
built for a Keras model.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from . import layout
from .backends import chosen_backend
from .image import preprocess_input
from .ssd_utils import BBoxUtility
from .visualization import class_colors, draw_box, draw_detections

__all__ = ["VideoTest", "VideoSourceError", "VideoSummary", "open_video", "draw_fps", "has_display",
           "describe_source", "WINDOW_NAME", "QUIT_KEYS", "DEFAULT_BATCH_SIZE", "DEFAULT_CONF_THRESH",
           "FOURCC", "DEFAULT_OUTPUT_FPS"]

WINDOW_NAME = "SSD result"
QUIT_KEYS = (ord("q"), ord("Q"), 27)  # q or Esc
DEFAULT_BATCH_SIZE = 4
DEFAULT_CONF_THRESH = 0.6
FOURCC = "mp4v"
DEFAULT_OUTPUT_FPS = 30.0  # cameras often report no frame rate
FPS_WINDOW_SECONDS = 1.0  # the counter shows the frames finished in the last second
FPS_FONT_SCALE_PER_PIXEL = 1.0 / 700.0  # of the shorter frame side (0.35 at 240 px, as the original)
MIN_FPS_FONT_SCALE = 0.35
FPS_BOX_COLOR = (255, 255, 255)  # white; visualization writes black text on it
POLL_SECONDS = 0.05  # how often blocked threads look at the stop flag
BACKGROUND = "background"

_END = object()  # end of the frames


class VideoSourceError(OSError):
    """A camera or video file that cannot be opened or read, or an output that cannot be written."""


@dataclass
class VideoSummary:
    """What a :meth:`VideoTest.run` did.

    Attributes:
        frames: frames predicted, drawn and written/shown.
        model_seconds: time spent in the model's forward passes.
        total_seconds: wall time from opening the source to the last frame finished.
        stopped_by_user: the window was closed with ``q``/Esc, or Ctrl-C was pressed.
        detections: detections drawn (at or above the threshold), all frames together.
    """

    frames: int
    model_seconds: float
    total_seconds: float
    stopped_by_user: bool = False
    detections: int = 0

    @property
    def model_fps(self) -> float:
        """Frames per second of the forward passes alone."""
        return self.frames / self.model_seconds if self.model_seconds > 0 else 0.0

    @property
    def fps(self) -> float:
        """End-to-end frames per second (reading, model, decoding, drawing, writing)."""
        return self.frames / self.total_seconds if self.total_seconds > 0 else 0.0

    def __str__(self) -> str:
        ratio = f" ({self.fps / self.model_fps:.2f}x the model alone)" if self.model_fps else ""
        stop = ", stopped by the user" if self.stopped_by_user else ""
        return (f"{self.frames} frames in {self.total_seconds:.1f} s{stop}, {self.detections} "
                f"detections drawn: model only {self.model_fps:.1f} FPS, end to end "
                f"{self.fps:.1f} FPS{ratio}")


def describe_source(source: Any) -> str:
    """``"camera 0"`` or ``"video file clip.mp4"``: a source in words, for messages."""
    return f"camera {source}" if isinstance(source, int) else f"video file {source}"


def has_display() -> bool:
    """Whether OpenCV can open a window: always off Linux; on Linux, with ``DISPLAY``,
    ``WAYLAND_DISPLAY`` or ``QT_QPA_PLATFORM=offscreen`` set (without, the window aborts)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or os.environ.get("QT_QPA_PLATFORM") == "offscreen")


def open_video(source: int | str | os.PathLike, start_frame: int = 0) -> cv2.VideoCapture:
    """Opens a camera (an integer index) or a video file / stream URL, at ``start_frame``.

    Raises:
        VideoSourceError: the file does not exist, or OpenCV cannot open the source (the message
            names it; OpenCV's own log lines are silenced meanwhile).
        ValueError: ``start_frame`` is negative.
    """
    if int(start_frame) != start_frame or start_frame < 0:
        raise ValueError(f"start_frame must be a non-negative integer, got {start_frame}")
    if not isinstance(source, int):
        source = os.fspath(source)
        if "://" not in source and not os.path.isfile(source):
            raise VideoSourceError(f"video file not found: {source}")
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        capture = cv2.VideoCapture(source)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if not capture.isOpened():
        capture.release()
        hint = " (is it connected, and free?)" if isinstance(source, int) else " (not a video OpenCV can read?)"
        raise VideoSourceError(f"cannot open {describe_source(source)}{hint}")
    if start_frame:
        # a file seeks; a camera (or a stream that cannot seek) skips frames
        if isinstance(source, int) or not capture.set(cv2.CAP_PROP_POS_FRAMES, int(start_frame)):
            for _ in range(int(start_frame)):
                if not capture.grab():
                    break
    return capture


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Puts ``item`` unless ``stop`` is set first; returns whether it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL_SECONDS)
            return True
        except queue.Full:
            pass
    return False


class _Worker(threading.Thread):
    """A daemon thread that keeps the exception its target raised."""

    def __init__(self, target: Callable[[], None], name: str):
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as err:  # re-raised by the calling thread
            self.error = err


class _FpsCounter:
    """The original's counter: frames finished per second, updated once a second."""

    def __init__(self):
        self.text = "FPS: ??"
        self._start = None
        self._count = 0

    def tick(self, now: float) -> str:
        if self._start is None:
            self._start = now
        self._count += 1
        elapsed = now - self._start
        if elapsed >= FPS_WINDOW_SECONDS:
            self.text = f"FPS: {self._count / elapsed:.1f}"
            self._start, self._count = now, 0
        return self.text


def draw_fps(image: np.ndarray, text: str) -> None:
    """Writes ``text`` in black on a white box in the top-left corner of an RGB image, in place
    (a caption of :func:`ssd_keras.visualization.draw_box` at the corner)."""
    scale = max(MIN_FPS_FONT_SCALE, min(image.shape[:2]) * FPS_FONT_SCALE_PER_PIXEL)
    image[...] = draw_box(image, (0.0, 0.0, 0.0, 0.0), text, FPS_BOX_COLOR, thickness=1, font_scale=scale)


class VideoTest:
    """Runs an SSD model on the frames of a video or a camera and shows or writes the result.

    Args:
        class_names: class names without background (label ``i`` is ``class_names[i - 1]``); a
            list whose first name is ``"background"`` (the original's convention) is accepted
            and that entry dropped.
        model: an SSD model (``SSD300``): input ``(batch, H, W, 3)`` preprocessed images, output
            ``(batch, num_priors, 4 + num_classes + 8)`` (:mod:`ssd_keras.layout`); or an
            exported model (:class:`ssd_keras.exported.ExportedModel`), which gives detection rows
            itself (decoding and NMS as fixed at export).
        input_shape: ``(H, W)`` or ``(H, W, 3)`` of the model input; default: the model's.
        bbox_util: a :class:`ssd_keras.BBoxUtility` for decoding (its ``nms_thresh`` and
            ``top_k`` apply); default: one for the model's class count. Not for an exported
            model (ValueError).
        batch_size: most frames per forward pass (fewer when fewer are waiting, e.g. a camera).

    Raises:
        ValueError: the class list does not have one name per class of the model's output, or
            ``input_shape`` differs from the model's input.
    """

    def __init__(self, class_names: Sequence[str], model: Any, input_shape: Sequence[int] | None = None,
                 bbox_util: Any = None, batch_size: int = DEFAULT_BATCH_SIZE):
        from .exported import ExportedModel

        self.exported = isinstance(model, ExportedModel)
        names = [str(name) for name in class_names]
        if names and names[0].lower() == BACKGROUND:
            names = names[1:]
        if self.exported and bbox_util is not None:
            raise ValueError(f"{model.path} decodes and runs NMS itself (fixed at export): bbox_util is for "
                             "Keras models; pass bbox_util=None")
        num_classes = model.num_classes if self.exported else layout.num_classes_of(model)  # background included
        if len(names) != num_classes - 1:
            raise ValueError(
                f"the model predicts {num_classes - 1} classes (+ background) but "
                f"{len(names)} class names were given ({', '.join(names[:4])}"
                f"{', ...' if len(names) > 4 else ''}); give one name per class, without "
                f"'background'")
        model_hw = tuple(model.input_shape[:2] if self.exported else model.input_shape[1:3])
        if input_shape is None:
            input_shape = model_hw
        if len(input_shape) not in (2, 3) or (None not in model_hw and tuple(input_shape[:2]) != model_hw):
            raise ValueError(f"input_shape must be the model's input (H, W) or (H, W, 3), "
                             f"{model_hw}; got {tuple(input_shape)}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        self.class_names = names
        self.num_classes = num_classes
        self.model = model
        self.input_shape = (int(input_shape[0]), int(input_shape[1]))
        self.bbox_util = None if self.exported else bbox_util if bbox_util is not None else BBoxUtility(num_classes)
        self.batch_size = int(batch_size)
        self.colors = class_colors(max(1, len(names)))
        if self.exported:
            self._forward = model.predict  # detection rows per image
            return
        if chosen_backend() != "tensorflow":  # JAX, PyTorch: Keras' compiled predict step
            self._forward = model.predict_on_batch
            return
        import tensorflow as tf

        height, width = self.input_shape
        # one trace for every batch size
        self._forward = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32)])

    def predict(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """The model's predictions for a batch of preprocessed inputs ``(B, H, W, 3)``; for an
        exported model, its detection rows (one array per input)."""
        if self.exported:
            return self._forward(np.asarray(x, dtype=np.float32))
        return np.asarray(self._forward(np.asarray(x, dtype=np.float32)))

    def decode(self, predictions: Any, conf_thresh: float) -> list[np.ndarray]:
        """Detection rows of :meth:`predict`'s output: ``bbox_util.detection_out`` at
        ``conf_thresh``, or an exported model's rows at or above it."""
        if self.exported:
            return [rows[rows[:, layout.CONFIDENCE] >= conf_thresh] for rows in predictions]
        return self.bbox_util.detection_out(predictions, confidence_threshold=conf_thresh)

    def annotate(self, frame: np.ndarray, detections: np.ndarray, conf_thresh: float) -> np.ndarray:
        """A copy of an RGB frame with the detections at or above ``conf_thresh`` drawn."""
        return draw_detections(frame, detections, self.class_names, conf_thresh, colors=self.colors)

    # ------------------------------------------------------------------ the pipeline
    def run(self, video_path: int | str | os.PathLike | cv2.VideoCapture = 0, start_frame: int = 0,
            conf_thresh: float = DEFAULT_CONF_THRESH, *, output: str | os.PathLike | None = None,
            display: bool = True, max_frames: int | None = None) -> VideoSummary:
        """Detects objects in every frame of a video or camera until it ends (or ``q``/Esc).

        Args:
            video_path: a camera index (``0``: the default camera), a video file or URL, or an
                opened ``cv2.VideoCapture`` (its frames are read from where it stands; it is
                released at the end).
            start_frame: frames skipped at the start (an opened capture is read from where it
                stands: pass it to :func:`open_video` with the start frame instead).
            conf_thresh: detections at or above this confidence are drawn.
            output: also write the annotated frames to this video file (``mp4v``, the source's
                frame rate and size).
            display: show the frames in a window (``q`` or Esc quits).
            max_frames: stop after this many frames.

        Returns:
            A :class:`VideoSummary` (frames, model-only and end-to-end FPS).

        Raises:
            VideoSourceError: the source cannot be opened or read, or ``output`` not written.
            RuntimeError: ``display`` on a Linux machine without a display (``DISPLAY`` unset),
                where OpenCV's window would abort the process.
        """
        problem = None
        if display and not has_display():
            problem = RuntimeError("no display found (DISPLAY is not set): pass display=False, with "
                                   "output=... to keep the annotated video")
        elif max_frames is not None and (int(max_frames) != max_frames or max_frames < 1):
            problem = ValueError(f"max_frames must be a positive integer, got {max_frames}")
        if problem is not None:
            if isinstance(video_path, cv2.VideoCapture):
                video_path.release()
            raise problem
        started = time.perf_counter()
        if isinstance(video_path, cv2.VideoCapture):
            capture = video_path
        else:
            capture = open_video(video_path, start_frame)
        writer = None
        try:
            ok, first = capture.read()
            if not ok:
                where = f" at frame {start_frame}" if start_frame else ""
                what = "the video" if isinstance(video_path, cv2.VideoCapture) else describe_source(video_path)
                raise VideoSourceError(f"cannot read a frame from {what}{where}")
            if output is not None:
                writer = self._open_writer(output, capture, first.shape)
            return self._pipeline(capture, first, float(conf_thresh), writer, display, max_frames, started)
        finally:
            capture.release()
            if writer is not None:
                writer.release()
            if display:
                try:
                    cv2.destroyWindow(WINDOW_NAME)
                    cv2.waitKey(1)
                except cv2.error:
                    pass

    @staticmethod
    def _open_writer(output: str | os.PathLike, capture: cv2.VideoCapture, shape: tuple) -> cv2.VideoWriter:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        fps = capture.get(cv2.CAP_PROP_FPS)
        if not np.isfinite(fps) or fps <= 0 or fps > 1000:
            fps = DEFAULT_OUTPUT_FPS
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*FOURCC), float(fps), (shape[1], shape[0]))
        if not writer.isOpened():
            writer.release()
            raise VideoSourceError(f"cannot write the video {path} (OpenCV has no {FOURCC} writer for it?)")
        return writer

    def _pipeline(self, capture, first, conf_thresh, writer, display, max_frames, started) -> VideoSummary:
        height, width = self.input_shape
        stop = threading.Event()
        inbox: queue.Queue = queue.Queue(maxsize=2 * self.batch_size)  # (rgb frame, model input)
        outbox: queue.Queue = queue.Queue(maxsize=2)  # (rgb frames, predictions)
        shown: queue.Queue = queue.Queue()  # annotated BGR frames for the window

        def prepare(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            small = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
            return rgb, preprocess_input(small)

        def read() -> None:
            frame, count = first, 0
            while not stop.is_set():
                if not _put(inbox, prepare(frame), stop):
                    return
                count += 1
                if max_frames is not None and count >= max_frames:
                    break
                ok, frame = capture.read()
                if not ok:
                    break
            _put(inbox, _END, stop)

        counter = _FpsCounter()
        done = [0, 0]  # frames, detections drawn

        def draw() -> None:
            while True:
                try:
                    item = outbox.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
                if item is _END:
                    return
                frames, predictions = item
                detections = self.decode(predictions, conf_thresh)
                for frame, rows in zip(frames, detections):
                    rows = np.asarray(rows)
                    if len(rows):
                        done[1] += int(np.count_nonzero(rows[:, layout.CONFIDENCE] >= conf_thresh))
                    picture = self.annotate(frame, rows, conf_thresh)
                    draw_fps(picture, counter.tick(time.perf_counter()))
                    bgr = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
                    if writer is not None:
                        writer.write(bgr)
                    if display:
                        shown.put(bgr)
                    done[0] += 1

        reader, drawer = _Worker(read, "videotest-reader"), _Worker(draw, "videotest-drawer")
        reader.start()
        drawer.start()
        model_seconds, by_user = 0.0, False
        try:
            ended = False
            while not ended:
                batch, ended = self._next_batch(inbox, reader, stop)
                if batch:
                    tick = time.perf_counter()
                    predictions = self.predict(np.stack([x for _, x in batch]))
                    model_seconds += time.perf_counter() - tick
                    if not _put(outbox, ([rgb for rgb, _ in batch], predictions), stop):
                        break
                if drawer.error is not None:
                    break
                if display and self._show(shown):
                    by_user = True
                    break
            if not by_user and drawer.error is None:
                _put(outbox, _END, stop)
                while drawer.is_alive():  # the last frames, still shown from this thread
                    drawer.join(POLL_SECONDS)
                    if display and self._show(shown):
                        by_user = True
                        break
                if display and not by_user:
                    by_user = self._show(shown)
        except KeyboardInterrupt:
            by_user = True
        finally:
            stop.set()
            for worker in (reader, drawer):
                worker.join()
        for worker in (reader, drawer):
            if worker.error is not None:
                raise worker.error
        return VideoSummary(done[0], model_seconds, time.perf_counter() - started, by_user, done[1])

    def _next_batch(self, inbox: queue.Queue, reader: _Worker, stop: threading.Event) -> tuple[list, bool]:
        """Waits for one frame, then takes whatever else is ready, up to ``batch_size``."""
        batch: list = []
        while not batch:
            try:
                item = inbox.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if reader.error is not None or stop.is_set() or not reader.is_alive():
                    return batch, True
                continue
            if item is _END:
                return batch, True
            batch.append(item)
        while len(batch) < self.batch_size:
            try:
                item = inbox.get_nowait()  # no waiting: a camera's next frame is not due yet
            except queue.Empty:
                break
            if item is _END:
                return batch, True
            batch.append(item)
        return batch, False

    @staticmethod
    def _show(shown: queue.Queue) -> bool:
        """Shows the frames that are ready; returns True when the user asked to quit."""
        while True:
            try:
                bgr = shown.get_nowait()
            except queue.Empty:
                return False
            cv2.imshow(WINDOW_NAME, bgr)
            if (cv2.waitKey(1) & 0xFF) in QUIT_KEYS:
                return True
