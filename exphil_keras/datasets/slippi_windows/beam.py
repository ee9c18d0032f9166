"""The build as an Apache Beam pipeline: the workers hash, screen and read the replays.

The launcher only lists the files (a stat each): hashing 100k replays is a pass over the whole
corpus, so it runs on the workers, as does dropping the duplicate copies of a game (grouped by
sha256, the first path in `find_replays` order kept). The three splits share one read of every
file; each keeps its own games.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import apache_beam as beam

from exphil_keras import features
from exphil_keras.datasets.slippi_windows import games
from exphil_keras.datasets.slippi_windows.report import SPLITS


def _skip(path, reason) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput("summary", json.dumps({"path": path, "skipped": reason}))


def _hash(game: games.Game):
    try:
        sha = features.file_sha256(game.path)
    except features.ReplaySkipped as skipped:
        yield _skip(game.path, skipped.reason)
        return
    yield sha, game._replace(sha=sha, split=features.split_of(sha))


def _first_copy(sha_copies):
    _, copies = sha_copies
    first, *others = sorted(copies, key=lambda game: Path(game.path))
    for other in others:
        yield _skip(other.path, f"duplicate of {first.path}")
    yield first


def _read(game: games.Game, view):
    for output in games.beam_example(game, view):
        yield output if isinstance(output, beam.pvalue.TaggedOutput) else (game.split, output)


def examples(files: list[games.Game], listing, summaries, view) -> dict:
    """split -> PTransform of its (key, example) pairs. The file list travels as a text file
    beside the data (a corpus-sized list is too big for a pipeline graph); each file's summary
    (or skip) goes to `summaries`, for the launcher's report."""
    listing.write_text("".join(json.dumps(game) + "\n" for game in files))
    shared = {}

    def read_all(pipeline):
        if "games" not in shared:  # built once, in the first split's transform
            hashed = (
                pipeline
                | "Files" >> beam.io.ReadFromText(os.fspath(listing))
                | "Parse" >> beam.Map(lambda line: games.Game(*json.loads(line)))
                | "SpreadHashing" >> beam.Reshuffle()
                | "Hash" >> beam.FlatMap(_hash).with_outputs("summary", main="games")
            )
            read = (
                hashed.games
                | "BySha" >> beam.GroupByKey()
                | "FirstCopy" >> beam.FlatMap(_first_copy).with_outputs("summary", main="games")
            )
            parsed = (
                read.games
                | "SpreadReading" >> beam.Reshuffle()
                | "Read" >> beam.FlatMap(_read, view=view).with_outputs("summary", main="games")
            )
            _ = (
                (hashed.summary, read.summary, parsed.summary)
                | "AllSummaries" >> beam.Flatten()
                | "Summaries" >> beam.io.WriteToText(os.fspath(summaries), num_shards=1)
            )
            shared["games"] = parsed.games
        return shared["games"]

    def of_split(split):
        @beam.ptransform_fn
        def split_examples(pipeline):
            return (
                read_all(pipeline)
                | f"Keep{split}" >> beam.Filter(lambda kv: kv[0] == split)
                | f"Drop{split}" >> beam.Values()
            )

        return split_examples()

    return {split: of_split(split) for split in SPLITS}
