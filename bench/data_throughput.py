"""Dataset build throughput vs the raw peppi-py parse of the same files, in one run.

    python bench/data_throughput.py [--replays ../shared/replays] [--config w60]

Prints frames/s for: the raw `peppi_py.read_slippi` parse; `features.read_replay` (parse +
features); the whole TFDS build (features + serialisation + shuffle + write). The ratios are
what to compare across machines; the absolute rates depend on the machine's load.
"""

import argparse
import tempfile
import time

import peppi_py
import tensorflow  # noqa: F401  (imported up front: its import is not build work)

from exphil_keras import features
from exphil_keras.datasets.slippi_windows import build
from exphil_keras.replays import find_replays


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def raw_parse(files) -> int:
    frames = 0
    for path in files:
        try:
            frames += len(peppi_py.read_slippi(str(path)).frames.id)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # unreadable files cost their parse attempt, as in the build
            pass
    return frames


def feature_pass(files, window) -> int:
    frames = 0
    for path in files:
        try:
            frames += features.read_replay(path, min_frames=window).num_frames
        except features.ReplaySkipped:
            pass
    return frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replays", default="../shared/replays")
    parser.add_argument("--config", default="w60", choices=["w60", "w30", "w90"])
    args = parser.parse_args()
    files = find_replays(args.replays)
    window = int(args.config[1:])
    raw_parse(files)  # warm the file cache so every pass reads from memory

    raw_frames, raw_s = timed(lambda: raw_parse(files))
    feat_frames, feat_s = timed(lambda: feature_pass(files, window))
    with tempfile.TemporaryDirectory() as data_dir:
        (_, report), build_s = timed(lambda: build(args.replays, data_dir, args.config))
    build_frames = sum(report.frames.values())

    print(f"{len(files)} files under {args.replays}, config {args.config}")
    print(f"{'pass':<32} {'frames':>9} {'seconds':>8} {'frames/s':>10} {'cost vs parse':>13}")
    for name, frames, seconds in (
        ("raw peppi_py.read_slippi", raw_frames, raw_s),
        ("read_replay (parse + features)", feat_frames, feat_s),
        ("full TFDS build", build_frames, build_s),
    ):
        print(
            f"{name:<32} {frames:>9} {seconds:>8.2f} {frames / seconds:>10,.0f}"
            f" {seconds / raw_s:>12.1f}x"
        )
    print(f"windows written: {sum(report.windows.values())}")


if __name__ == "__main__":
    main()
