"""`build()`: the dataset from a folder of replays, plainly or on an Apache Beam runner."""

from __future__ import annotations

import contextlib
import time
import typing
from pathlib import Path

import tensorflow_datasets as tfds

from exphil_keras.datasets.slippi_windows.report import BuildReport
from exphil_keras.datasets.slippi_windows.slippi_windows_dataset_builder import (
    Builder,
    SlippiWindowsConfig,
)
from exphil_keras.replays import find_replays


def config_for(window: int = 60, action_delay: int = 1, frame_delay: int = 0):
    """The shipped config's name (w30, w60, w90 with default delays), else a custom config."""
    if (action_delay, frame_delay) == (1, 0) and window in (30, 60, 90):
        return f"w{window}"
    return SlippiWindowsConfig(
        name=f"w{window}_a{action_delay}_f{frame_delay}",
        window=window,
        action_delay=action_delay,
        frame_delay=frame_delay,
    )


def build(
    replays,
    data_dir=None,
    config: str | SlippiWindowsConfig = "w60",
    overwrite: bool = False,
    beam_runner: str | None = None,
    beam_args: typing.Sequence[str] = (),
    memory_buffer_mb: int | None = None,
) -> tuple[Builder, BuildReport]:
    """Build (or reuse) the dataset from a folder of replays; returns the builder and its report.

    With `beam_runner` ("DirectRunner", "DataflowRunner", ...) the replays are read by an Apache
    Beam pipeline; `beam_args` are its pipeline options (e.g. `["--direct_num_workers=2"]`).
    The plain build holds one replay and at most `memory_buffer_mb` of written examples in
    memory (TFDS's default: 1000) and spills the rest to disk (docs/SCALING.md has the limits).
    """
    folder = Path(replays).expanduser()
    find_replays(folder)  # clear errors for a missing or empty folder, before TFDS's own
    builder = tfds.builder("slippi_windows", config=config, data_dir=data_dir)
    mode = (
        tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
        if overwrite
        else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    )
    if beam_args and not beam_runner:
        raise ValueError("Beam options without --beam-runner: name the runner to use them")
    beam_options = None
    if beam_runner:
        from apache_beam.options.pipeline_options import PipelineOptions

        beam_options = PipelineOptions([f"--runner={beam_runner}", *beam_args])
    started = time.perf_counter()
    with _writer_memory(memory_buffer_mb):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=str(folder), download_mode=mode, beam_options=beam_options
            )
        )
    builder.report.seconds = time.perf_counter() - started
    return builder, builder.report


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
