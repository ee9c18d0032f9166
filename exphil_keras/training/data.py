"""The training data: the `slippi_windows` dataset (built from the replays if needed), read as
windows of the run's length and delays, its training stream and validation windows, and the steps
per epoch."""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf
import tensorflow_datasets as tfds

from exphil_keras.datasets import slippi_windows


def dataset_builder(config) -> tfds.core.DatasetBuilder:
    """The slippi_windows builder read with this window and these delays, built if needed; a
    dataset built from other replays than `config.replays` is a ValueError, never reused."""
    dataset_config = slippi_windows.config_for(
        config.window, config.action_delay, config.frame_delay
    )
    builder = tfds.builder("slippi_windows", config=dataset_config, data_dir=config.data_dir)
    if builder.is_prepared():
        if config.replays is not None:
            slippi_windows.check_source(builder, config.replays)
        return builder
    if config.replays is None:
        raise ValueError(f"no dataset at {builder.data_dir} and no --replays to build it from")
    return slippi_windows.build(config.replays, config.data_dir, dataset_config)[0]


def windows(builder, split: str, games=None, seed: int = 0) -> tf.data.Dataset:
    """(inputs, targets) windows of one split, optionally only from the given game sha256s.

    The training split is shuffled once, with `seed` (games, each game's windows, and their
    interleaving; a reshuffle per pass would draw new seeds, and tf.distribute's rewrite of the
    pipeline draws them differently); other splits come in a fixed order."""
    ds = slippi_windows.read_windows(
        builder, split, seed=seed if split == "train" else None, games=games
    )
    return ds.map(lambda ex: (ex["inputs"], ex["targets"]), num_parallel_calls=tf.data.AUTOTUNE)


def training_games(builder, max_files: int | None) -> dict[str, dict]:
    """The training split's games (sha256 -> file, frames, humans), the first `max_files` by
    sha256."""
    games = builder.info.metadata["report"]["games_used"]["train"]
    chosen = sorted(games)[:max_files] if max_files else sorted(games)
    return {sha: games[sha] for sha in chosen}


@dataclasses.dataclass
class TrainingData:
    builder: tfds.core.DatasetBuilder
    games: dict[str, dict]  # the training games used (sha256 -> file, frames, humans)
    train: tf.data.Dataset  # endless, shuffled, batched
    validation: tf.data.Dataset  # batched
    steps_per_epoch: int

    @property
    def stride(self) -> int:
        return self.builder.builder_config.stride

    def train_windows(self) -> tf.data.Dataset:
        """The training games' windows, once each, unbatched (for the Markov-1 tables)."""
        return windows(self.builder, "train", self.games)


def training_data(config) -> TrainingData:
    """The run's data, batched as `fit` takes it.

    One endless stream shuffled with fixed seeds (reshuffle_each_iteration would draw them from
    a seed resource, which tf.distribute's rewrite of the pipeline re-creates differently), so
    every device count sees the same batches in the same order."""
    builder = dataset_builder(config)
    games = training_games(builder, config.max_files)
    all_train = config.max_files is None
    train_ds = windows(builder, "train", None if all_train else games, config.seed)
    view = builder.builder_config.view
    windows_per_epoch = sum(view.count(g["frames"], g["humans"]) for g in games.values())
    steps_per_epoch = math.ceil(max(windows_per_epoch, 1) / config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
        train_ds = train_ds.take(steps_per_epoch * config.batch_size)
    batched = (
        train_ds.repeat()
        .shuffle(4096, seed=config.seed, reshuffle_each_iteration=False)
        .batch(config.batch_size, drop_remainder=True)
    )
    validation = windows(builder, "validation").batch(config.batch_size)
    return TrainingData(
        builder=builder,
        games=games,
        train=batched.prefetch(tf.data.AUTOTUNE),
        validation=validation.prefetch(tf.data.AUTOTUNE),
        steps_per_epoch=steps_per_epoch,
    )
