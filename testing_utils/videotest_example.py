"""The original video example, updated: SSD300 on a video file, or on camera 0.

    python testing_utils/videotest_example.py                      # camera 0
    python testing_utils/videotest_example.py --video clip.mp4     # a file

The model is the entry points' default (``ssd_keras.cli.load_detection_model``): SSD300 with the
VOC weights at ``weights/weights_SSD300.hdf5`` when present, else the embedded shapes demo model.
``q`` or Esc quits the window. ``videotest.py --help`` lists the other options (output video,
headless runs, start frame, confidence threshold).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from videotest import VideoTest, VideoSourceError, open_video


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

    from ssd_keras.cli import import_tensorflow_quietly, load_detection_model

    import_tensorflow_quietly()
    model, class_names = load_detection_model(None)  # VOC weights, else the demo model
    input_shape = (300, 300, 3)
    vid_test = VideoTest(class_names, model, input_shape)
    print(vid_test.run(capture, display=not args.no_display, max_frames=args.max_frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())
