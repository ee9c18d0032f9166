"""A replay assigned to a split, read into its one stored example (by the plain build and by
Beam's workers alike)."""

from __future__ import annotations

import json
import typing

from exphil_keras import features
from exphil_keras.datasets.slippi_windows import storage


class Game(typing.NamedTuple):
    """A replay file assigned to a split."""

    path: str
    name: str  # the path under the replay folder
    sha: str
    split: str


def read(game: Game) -> features.Game:
    return features.read_game(game.path, sha256=game.sha)


def summary(game: Game, read_game: features.Game, view) -> dict:
    """The report's figures for one game; `view` (a windows.View) counts its windows."""
    humans = sum(read_game.humans)
    return dict(
        split=game.split,
        sha=game.sha,
        name=game.name,
        frames=read_game.num_frames,
        humans=humans,
        windows=view.count(read_game.num_frames, humans),
    )


def example(game: Game):
    """(key, stored example, summary figures) of one replay; ReplaySkipped if unusable."""
    read_game = read(game)
    return game.sha, storage.to_example(read_game, game.name), read_game


def beam_example(game: Game, view):
    """One replay on a Beam worker: its example, and its summary (or skip) as a side output."""
    import apache_beam as beam

    try:
        features.probe_replay(game.path)  # the header first, as the plain build's launcher
        key, stored, read_game = example(game)
    except features.ReplaySkipped as skipped:
        yield beam.pvalue.TaggedOutput(
            "summary", json.dumps({"path": game.path, "skipped": skipped.reason})
        )
        return
    yield beam.pvalue.TaggedOutput("summary", json.dumps(summary(game, read_game, view)))
    yield key, stored
