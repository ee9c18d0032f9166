"""A replay assigned to a split, read into its window examples (by the plain build and by Beam's
workers alike)."""

from __future__ import annotations

import json
import typing

from exphil_keras import features
from exphil_keras.datasets.slippi_windows.packing import window_features


class Game(typing.NamedTuple):
    """A replay file assigned to a split."""

    path: str
    name: str  # the path under the replay folder
    sha: str
    split: str


def read(game: Game, config) -> features.Replay:
    return features.read_replay(
        game.path,
        action_delay=config.action_delay,
        frame_delay=config.frame_delay,
        min_frames=config.window,
        include_cpu_egos=config.include_cpu_egos,
        sha256=game.sha,
    )


def summary(game: Game, replay: features.Replay) -> dict:
    ego_frames = sum(view.num_frames for view in replay.perspectives)
    return dict(
        split=game.split,
        sha=game.sha,
        name=game.name,
        frames=replay.num_frames,
        ego_frames=ego_frames,
    )


def beam_replay(game: Game, config):
    """One replay on a Beam worker: its windows, and its summary (or skip) as a side output."""
    import apache_beam as beam

    try:
        replay = read(game, config)
    except features.ReplaySkipped as skipped:
        yield beam.pvalue.TaggedOutput(
            "summary", json.dumps({"path": game.path, "skipped": skipped.reason})
        )
        return
    windows = sum(
        len(features.window_starts(view.num_frames, config.window, config.stride))
        for view in replay.perspectives
    )
    record = {**summary(game, replay), "windows": windows}  # checked against what was written
    yield beam.pvalue.TaggedOutput("summary", json.dumps(record))
    yield from replay_windows(replay, game, config)


def replay_windows(replay: features.Replay, game: Game, config):
    packers = window_features(config.window)
    for view in replay.perspectives:
        yield from _windows(view, game.sha, packers, config.window, config.stride)


def _windows(view: features.Perspective, sha: str, packers, window: int, stride: int):
    inputs = packers["inputs"].pack(view.inputs)
    targets = packers["targets"].pack(view.targets)
    for start in features.window_starts(view.num_frames, window, stride):
        end = start + window
        first_frame = int(view.frame_ids[start])
        yield (
            f"{sha}_{view.port}_{first_frame}",
            {
                "inputs": inputs[start:end],
                "targets": targets[start:end],
                "sha256": sha,
                "port": view.port,
                "first_frame": first_frame,
            },
        )
