"""Dataset cost vs the raw peppi-py parse of the same files, in one run.

    python bench/data_throughput.py [--replays ../shared/replays]

Prints, for the same replays: the raw `peppi_py.read_slippi` parse; `features.read_game`
(parse + dedup + columns); the plain TFDS build (+ compression, write) and its bytes on disk per
game frame (the whole data dir); w60 windows per second delivered as `fit` takes them (batch 256,
shuffled) against what GRU-256 training consumes on this machine; and the same build and reads in
TFDS's array_record format (random access through `tfds.data_source`; TFDS 4.9 cannot read it
through tf.data: `as_dataset()` raises NotImplementedError for ArrayRecord files). The ratios
are what to compare across machines; the absolute rates depend on the machine and its load.
"""

import argparse
import random
import tempfile
import time
from pathlib import Path

import peppi_py
import tensorflow as tf
import tensorflow_datasets as tfds

from exphil_keras import features
from exphil_keras.datasets.slippi_windows import build, read_windows, storage
from exphil_keras.replays import find_replays

BATCH, WINDOW = 256, 60


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


def read_pass(files) -> int:
    frames = 0
    for path in files:
        try:
            frames += features.read_game(path).num_frames
        except features.ReplaySkipped:
            pass
    return frames


def disk_bytes(folder) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def fit_stream(builder, batches) -> float:
    """Windows/s of the training stream (training/data.py's: shuffled games, windows, buffer)."""
    ds = read_windows(builder, "train", seed=0).repeat().shuffle(4096, seed=0).batch(BATCH)
    it = iter(ds.prefetch(tf.data.AUTOTUNE))
    next(it)  # start-up: the first games decoded, the buffer filled
    _, seconds = timed(lambda: [next(it) for _ in range(batches)])
    return batches * BATCH / seconds


def gru_consumption(builder, steps) -> float:
    """Windows/s that GRU-256 (gpu_standard's backbone) trains on, data held in memory."""
    from exphil_keras import policy

    ds = read_windows(builder, "train").map(lambda ex: (ex["inputs"], ex["targets"]))
    ds = ds.take(BATCH * 2).cache().repeat().batch(BATCH)
    model = policy.build_policy(backbone="gru", window=WINDOW, hidden_size=256)
    model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)  # compile and warm up
    _, seconds = timed(lambda: model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0))
    return steps * BATCH / seconds


def random_access_games(builder, split, count) -> float:
    """Games/s decoded in a random order through `tfds.data_source` (array_record only)."""
    source = tfds.data_source("slippi_windows", split=split, data_dir=builder.data_dir_root)
    order = random.Random(0).choices(range(len(source)), k=count)
    _, seconds = timed(lambda: [storage.from_example(source[i]) for i in order])
    return count / seconds


def sequential_games(builder, split) -> float:
    games = builder.games(split)
    count, seconds = timed(lambda: sum(1 for _ in tfds.as_numpy(games)))
    return count / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replays", default="../shared/replays")
    parser.add_argument("--batches", type=int, default=60, help="batches timed from the stream")
    parser.add_argument("--gru-steps", type=int, default=5, help="GRU-256 training steps timed")
    args = parser.parse_args()
    files = find_replays(args.replays)
    raw_parse(files)  # warm the file cache so every pass reads from memory

    raw_frames, raw_s = timed(lambda: raw_parse(files))
    read_frames, read_s = timed(lambda: read_pass(files))
    with tempfile.TemporaryDirectory() as tfrecord_dir, tempfile.TemporaryDirectory() as ar_dir:
        (builder, report), build_s = timed(lambda: build(args.replays, tfrecord_dir))
        (ar_builder, _), ar_build_s = timed(
            lambda: build(args.replays, ar_dir, file_format="array_record")
        )
        frames = sum(report.frames.values())
        rows = [
            ("raw peppi_py.read_slippi", raw_frames, raw_s),
            ("features.read_game", read_frames, read_s),
            ("plain build, tfrecord", frames, build_s),
            ("plain build, array_record", frames, ar_build_s),
        ]
        sizes = {"tfrecord": disk_bytes(tfrecord_dir), "array_record": disk_bytes(ar_dir)}
        stream = fit_stream(builder, args.batches)
        gru = gru_consumption(builder, args.gru_steps)
        reads = {
            "tfrecord, in order (tf.data)": sequential_games(builder, "train"),
            "array_record, random (data_source)": random_access_games(ar_builder, "train", 200),
        }

    print(f"{len(files)} files under {args.replays}, {frames} game frames stored")
    print(f"{'pass':<28} {'frames':>9} {'seconds':>8} {'frames/s':>10} {'cost vs parse':>13}")
    for name, count, seconds in rows:
        print(
            f"{name:<28} {count:>9} {seconds:>8.2f} {count / seconds:>10,.0f}"
            f" {seconds / raw_s:>12.2f}x"
        )
    for fmt, size in sizes.items():
        print(f"data dir, {fmt}: {size:,} bytes, {size / frames:.2f} bytes per game frame")
    print(f"w60 windows/s to fit (batch {BATCH}, shuffled), tfrecord: {stream:,.0f}")
    print(f"GRU-256 training consumes: {gru:,.0f} windows/s ({gru * WINDOW:,.0f} frames/s)")
    print(f"stream / GRU-256 consumption: {stream / gru:.1f}x")
    for name, rate in reads.items():
        print(f"stored games/s, {name}: {rate:,.1f}")


if __name__ == "__main__":
    main()
