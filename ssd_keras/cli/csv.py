"""``csv``: dataset CSVs from Pascal VOC XML, class folders or an image folder (no TensorFlow).

(This module is ``ssd_keras.cli.csv``; ``import csv`` elsewhere still imports the standard library's,
imports being absolute.)
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]

EXAMPLES = (
    "%(prog)s voc VOC2007/Annotations VOC2007/JPEGImages train.csv   # + train_classes.txt",
    "%(prog)s folders marks/ marks.csv   # + classes.txt",
    "%(prog)s images photos/ photos.csv",
)


def add_parser(commands) -> argparse.ArgumentParser:
    from ._common import add_command

    tools = add_command(
        commands, "csv", help="write dataset CSVs from VOC XML, class folders or an image folder",
        description="Write the project's CSV files: an annotation CSV from Pascal VOC XML (its class list "
                    "beside it as <csv stem>_classes.txt), a classification CSV from a folder per class "
                    "(classes.txt beside it, which its labels index), or an annotation CSV without boxes "
                    "listing the images of a folder. Folders are checked before anything is written.",
        examples=EXAMPLES)
    sources = tools.add_subparsers(dest="source", required=True, metavar="SOURCE")
    voc = sources.add_parser("voc", help="Pascal VOC XML annotations to an annotation CSV (+ <stem>_classes.txt)")
    voc.add_argument("annotations_dir", metavar="ANNOTATIONS_DIR", help="folder of VOC XML files (Annotations/)")
    voc.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of the images (JPEGImages/)")
    voc.add_argument("out_csv", metavar="OUT_CSV", help="annotation CSV to write")
    voc.add_argument("--classes", metavar="voc|FILE",
                     help="class list file or 'voc' (default: the sorted object names)")
    folders = sources.add_parser("folders", help="a folder per class to a classification CSV (image,label) "
                                                 "and classes.txt")
    folders.add_argument("root", metavar="ROOT", help="folder holding one folder of images per class")
    folders.add_argument("out_csv", metavar="OUT_CSV", help="classification CSV to write")
    images = sources.add_parser("images", help="an image folder to an annotation CSV without boxes")
    images.add_argument("folder", metavar="FOLDER", help="folder of images (searched recursively)")
    images.add_argument("out_csv", metavar="OUT_CSV", help="annotation CSV to write")
    tools.set_defaults(run=run)
    return tools


def run(args: argparse.Namespace) -> int:
    from ..data import csv_tools

    if args.source == "voc":
        from ..models import read_class_names

        classes = read_class_names(args.classes) if args.classes else None
        names = csv_tools.voc_to_csv(args.annotations_dir, args.images_dir, args.out_csv, classes=classes)
        class_file = csv_tools.annotation_class_list_path(args.out_csv)
        print(f"{args.out_csv}: {len(names)} classes ({', '.join(names)}), class list -> {class_file}")
    elif args.source == "folders":
        names = csv_tools.folders_to_csv(args.root, args.out_csv)
        print(f"{args.out_csv}: {len(names)} classes ({', '.join(names)}), class list -> "
              f"{csv_tools.CLASSES_FILENAME} beside it")
    else:
        count = csv_tools.images_to_csv(args.folder, args.out_csv)
        print(f"{args.out_csv}: {count} images")
    return 0
