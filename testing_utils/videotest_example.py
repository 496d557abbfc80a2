"""The original video example, updated: SSD300 on a video file, or on camera 0.

    python testing_utils/videotest_example.py                      # camera 0
    python testing_utils/videotest_example.py --video clip.mp4     # a file

The model is the entry points' default (:func:`ssd_keras.models.resolve_model`): SSD300 with the
VOC weights at ``weights/weights_SSD300.hdf5`` when present, else the embedded shapes demo model.
``q`` or Esc quits the window. ``videotest.py --help`` lists the other options (output video,
headless runs, start frame, confidence threshold, other weights and classes).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ssd_keras.video import VideoSourceError, VideoTest, open_video


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SSD300 on a video file or camera 0")
    parser.add_argument("--video", metavar="PATH", help="a video file (default: camera 0)")
    parser.add_argument("--no-display", action="store_true", help="open no window (prints the summary)")
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    args = parser.parse_args(argv)
    try:
        capture = open_video(args.video if args.video else 0)
    except VideoSourceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from ssd_keras.models import import_tensorflow_quietly, resolve_model

    import_tensorflow_quietly()
    model, class_names, description = resolve_model()  # VOC weights, else the demo model
    print(f"model: {description}")
    input_shape = (300, 300, 3)
    vid_test = VideoTest(class_names, model, input_shape)
    print(vid_test.run(capture, display=not args.no_display, max_frames=args.max_frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())
