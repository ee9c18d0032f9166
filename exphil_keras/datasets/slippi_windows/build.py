"""`build()`: the dataset from a folder of replays, plainly or on an Apache Beam runner, with
nothing stale or partial left to load."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import typing
from pathlib import Path

import tensorflow_datasets as tfds

from exphil_keras import features
from exphil_keras.datasets.slippi_windows.report import BuildReport
from exphil_keras.datasets.slippi_windows.slippi_windows_dataset_builder import (
    Builder,
    SlippiWindowsConfig,
)
from exphil_keras.replays import find_replays

LOCK = "build.lock"
INCOMPLETE = "incomplete."  # TFDS's prefix for a folder being written


def config_for(window: int = 60, action_delay: int = 1, frame_delay: int | tuple = 0):
    """The shipped config's name (w30, w60, w90 with default delays), else a custom config
    (`frame_delay` an int, or a range (low, high) drawn per window). Configs are read-time
    views: they all read the same stored games."""
    if (action_delay, features.delay_range(frame_delay)[1]) == (1, 0) and window in (30, 60, 90):
        return f"w{window}"
    return SlippiWindowsConfig(
        name=f"w{window}_a{action_delay}_f{features.delay_text(frame_delay)}",
        window=window,
        action_delay=action_delay,
        frame_delay=features.delay_normal(frame_delay),
    )


def build(
    replays,
    data_dir=None,
    config: str | SlippiWindowsConfig = "w60",
    overwrite: bool = False,
    beam_runner: str | None = None,
    beam_args: typing.Sequence[str] = (),
    memory_buffer_mb: int | None = None,
    file_format: str | None = None,
) -> tuple[Builder, BuildReport]:
    """Build (or reuse) the dataset from a folder of replays; returns the builder and its report
    (empty when an existing dataset was reused).

    An existing dataset built from other files is an error (ValueError) unless `overwrite`;
    with `overwrite` the old dataset stays until the new one is complete. One build at a time
    per data dir (a lock file holding the builder's pid); a dead build's lock and leftovers are
    cleared by the next. With `beam_runner` ("DirectRunner", "DataflowRunner", ...) the replays
    are read by an Apache Beam pipeline; `beam_args` are its pipeline options. The plain build
    holds one replay and at most `memory_buffer_mb` of written examples in memory (TFDS's
    default: 1000) and spills the rest to disk (docs/SCALING.md has the limits).
    `file_format`: TFDS's, "tfrecord" (default) or "array_record" (random access through
    `tfds.data_source`; docs/SCALING.md compares them).
    """
    folder = Path(replays).expanduser()
    find_replays(folder)  # clear errors for a missing or empty folder, before TFDS's own
    if beam_args and not beam_runner:
        raise ValueError("Beam options without --beam-runner: name the runner to use them")
    builder = tfds.builder("slippi_windows", config=config, data_dir=data_dir)
    dataset_dir = Path(builder.data_dir)
    dataset_dir.parent.mkdir(parents=True, exist_ok=True)
    with _lock(dataset_dir.parent):
        for leftover in dataset_dir.parent.glob(f"{INCOMPLETE}*"):
            shutil.rmtree(leftover, ignore_errors=True)  # a killed build's: nothing loads them
        if builder.is_prepared() and not overwrite:
            check_source(builder, folder)
            return builder, BuildReport()
        # A rebuild is written beside the old dataset, which it replaces only once complete.
        staging = dataset_dir.parent / f"{INCOMPLETE}rebuild-{os.getpid()}"
        target = tfds.builder("slippi_windows", config=config, data_dir=staging)
        if not builder.is_prepared():
            target = builder
        started = time.perf_counter()
        try:
            with _writer_memory(memory_buffer_mb), _empty_beam_split():
                target.download_and_prepare(
                    download_config=tfds.download.DownloadConfig(
                        manual_dir=str(folder), beam_options=_beam_options(beam_runner, beam_args)
                    ),
                    file_format=file_format,
                )
            target.report.seconds = time.perf_counter() - started
            if target is not builder:
                old = dataset_dir.parent / f"{INCOMPLETE}old-{os.getpid()}"
                dataset_dir.rename(old)
                Path(target.data_dir).rename(dataset_dir)
                shutil.rmtree(old)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        built = tfds.builder("slippi_windows", config=config, data_dir=data_dir)
        built.report = target.report
        return built, target.report


def _beam_options(runner, args):
    if not runner:
        return None
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions([f"--runner={runner}", *args])


@contextlib.contextmanager
def _empty_beam_split():
    """The Beam workers assign the splits, so the pipeline declares all three; TFDS's writer
    fails one that got no game, deep in the runner's traceback: one line instead."""
    try:
        yield
    except Exception as e:
        match = re.search(r"number of generated examples is 0 for split (\w+)", str(e))
        if not match:
            raise
        raise ValueError(
            f"no usable game in the {match[1]} split: a Beam build needs one in each split "
            "(the plain build leaves an empty split out)"
        ) from None


def check_source(builder, replays) -> None:
    """ValueError unless the dataset was built from the replays now under `replays` (the same
    paths and sizes: a stat per file, no hashing)."""
    built_from = builder.info.metadata.get("replays")
    folder = Path(replays).expanduser()
    now = {str(p.relative_to(folder)): p.stat().st_size for p in find_replays(folder)}
    if built_from == now:
        return
    built_from = built_from or {}
    added = sorted(now.keys() - built_from.keys())
    removed = sorted(built_from.keys() - now.keys())
    changed = sorted(p for p in now.keys() & built_from.keys() if now[p] != built_from[p])
    differences = ", ".join(
        f"{len(paths)} {what} (e.g. {paths[0]})"
        for what, paths in (("added", added), ("removed", removed), ("changed", changed))
        if paths
    )
    raise ValueError(
        f"the dataset in {builder.data_dir} was built from other replays than {folder}: "
        f"{differences or 'no record of its replays'}; rebuild it with `exphil build-data "
        f"--replays {folder} --data-dir {builder.data_dir_root} --overwrite`, or use another "
        "--data-dir"
    )


@contextlib.contextmanager
def _lock(folder: Path):
    """One build per data dir: an exclusive lock on a file that holds the builder's pid. The
    kernel drops the lock when its holder dies, so a dead build's lock is simply taken."""
    import fcntl

    with open(folder / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise ValueError(
                f"another build (pid {holder}) is writing {folder}; wait for it to finish"
            ) from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _writer_memory(megabytes: int | None):
    """TFDS's writer shuffles the examples in memory up to `shuffle.MAX_MEM_BUFFER_SIZE` (1 GB)
    before it spills them to bucket files on disk; TFDS has no public knob for it."""
    from tensorflow_datasets.core import shuffle

    saved = shuffle.MAX_MEM_BUFFER_SIZE
    if megabytes is not None:
        shuffle.MAX_MEM_BUFFER_SIZE = int(megabytes) << 20
    try:
        yield
    finally:
        shuffle.MAX_MEM_BUFFER_SIZE = saved
