"""`exphil`: the command line. Thin: parses flags and calls the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _build_data(args) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from exphil_keras.datasets.slippi_windows import build

    with logging_redirect_tqdm():  # skip messages print above the progress bar, not through it
        builder, report = build(args.replays, args.data_dir, args.config, overwrite=args.overwrite)
    if not report.files_read and not report.skipped:
        print(f"dataset already built at {builder.data_dir} (--overwrite rebuilds it)")
        return 0
    print(report.format())
    report_path = Path(builder.data_dir) / "build_report.json"
    report_path.write_text(json.dumps(report.to_dict(), indent=1))
    print(f"dataset: {builder.data_dir}\nreport: {report_path}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exphil",
        description="Melee policies from Slippi replays, as a Keras 3 model zoo.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build-data",
        help="build the slippi_windows TFDS dataset from a folder of .slp replays",
        description=(
            "Read every .slp file under --replays with peppi-py, skip unusable ones (with the "
            "reason), and write training windows to a TFDS data dir, split by whole game "
            "(train 80 / validation 10 / test 10 by the file's sha256). Prints a report."
        ),
    )
    build.add_argument("--replays", required=True, help="folder tree of .slp files")
    build.add_argument(
        "--data-dir", default=None, help="TFDS data dir (default: TFDS's, ~/tensorflow_datasets)"
    )
    build.add_argument(
        "--config",
        default="w60",
        choices=["w60", "w30", "w90"],
        help="window length in frames (stride is half of it; default: w60)",
    )
    build.add_argument(
        "--overwrite", action="store_true", help="rebuild even if the dataset already exists"
    )
    build.set_defaults(run=_build_data)
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    args = make_parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        print(f"exphil {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"exphil {args.command}: interrupted; nothing partial was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
