"""Windows at read time from the one stored copy of each game: equal to features.read_replay's
windows (what version 1 stored), for any window, stride, delays and choice of egos."""

import collections
import hashlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from shared_data import REPLAYS

import exphil_keras  # noqa: F401  (registers slippi_windows)
from exphil_keras import features
from exphil_keras.datasets.slippi_windows import View, build, read_windows, storage
from exphil_keras.datasets.slippi_windows.windows import game_windows, nest

# w60 windows of ../shared/replays per split, as version 1 stored them.
W60_WINDOWS = {"train": 47_806, "validation": 4_682, "test": 4_852}
ICE_CLIMBERS = "hohav__tests_data_ics2.slp"
HUMAN_VS_CPU = "PMcca__test_replays_sheik_vs_ics_yoshis.slp"  # Slippi 0.1.0


def digest(inputs: dict, targets: dict) -> str:
    """One window's inputs and targets, as bytes, names and dtypes included."""
    h = hashlib.sha256()
    for group in (inputs, targets):
        for name in sorted(group):
            value = np.asarray(group[name])
            h.update(f"{name}:{value.dtype}:{value.shape}".encode() + value.tobytes())
    return h.hexdigest()


def reference_windows(paths, window=60, action_delay=1, frame_delay=0, cpu=False):
    """split -> multiset of window digests, from read_replay + window_starts (version 1's)."""
    out = collections.defaultdict(collections.Counter)
    for path in paths:
        try:
            replay = features.read_replay(
                path, action_delay, frame_delay, min_frames=window, include_cpu_egos=cpu
            )
        except features.ReplaySkipped:
            continue
        for view in replay.perspectives:
            for start in features.window_starts(view.num_frames, window, window // 2):
                rows = slice(start, start + window)
                out[features.split_of(replay.sha256)][
                    digest(
                        {k: v[rows] for k, v in view.inputs.items()},
                        {k: v[rows] for k, v in view.targets.items()},
                    )
                ] += 1
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    builder, _ = build(REPLAYS, data_dir)
    return data_dir, builder


def test_every_w60_window_of_the_corpus_equals_version_1s(corpus):
    """tfds.load as a user calls it, every split, compared as multisets of window digests."""
    data_dir, builder = corpus
    expected = reference_windows(sorted(REPLAYS.glob("*.slp")))
    assert {s: sum(c.values()) for s, c in expected.items()} == W60_WINDOWS
    for split, count in W60_WINDOWS.items():
        ds = tfds.load("slippi_windows", split=split, data_dir=data_dir, as_supervised=True)
        got = collections.Counter(
            digest({k: v[i] for k, v in x.items()}, {k: v[i] for k, v in y.items()})
            for x, y in tfds.as_numpy(ds.batch(512))
            for i in range(len(y["buttons"]))
        )
        assert sum(got.values()) == count
        assert got == expected[split], split
    # The training stream's order (games dealt into parts, shuffled, interleaved): the same set.
    got = collections.Counter(
        digest(x, y)
        for x, y in tfds.as_numpy(
            read_windows(builder, "train", seed=3).map(lambda ex: (ex["inputs"], ex["targets"]))
        )
    )
    assert got == expected["train"]


@pytest.mark.parametrize(
    "view",
    [
        View(window=30, action_delay=2, frame_delay=3),
        View(window=90, action_delay=0, frame_delay=0, include_cpu_egos=True),
    ],
)
def test_any_view_reads_the_same_stored_copy(corpus, view):
    data_dir, builder = corpus
    names = [ICE_CLIMBERS, HUMAN_VS_CPU, "Walnut356__Modern_Replays_Game_20221227T212019.slp"]
    expected = reference_windows(
        [REPLAYS / n for n in names],
        view.window,
        view.action_delay,
        view.frame_delay,
        view.include_cpu_egos,
    )
    shas = {features.file_sha256(REPLAYS / n) for n in names}
    for split in ("train", "validation", "test"):
        ds = read_windows(builder, split, view, games=shas)
        got = collections.Counter(digest(ex["inputs"], ex["targets"]) for ex in tfds.as_numpy(ds))
        assert got == expected.get(split, collections.Counter()), split


def test_a_frame_delay_range_draws_one_delay_per_window():
    """Each window's state is from one delay d in the range, its inputs and targets from t and
    t + 1, as features.select_rows gives them for d; the draws cover the range."""
    game = features.read_game(REPLAYS / ICE_CLIMBERS)
    windows = nest(game_windows(game, View(window=60, frame_delay=(0, 18)), seed=1))
    arrays = {ego: features.frame_arrays(game, ego) for ego in (0, 1)}
    delays = collections.Counter()
    for i, port in enumerate(windows["port"]):
        now = windows["first_frame"][i] - game.first_frame + np.arange(60)
        ego = game.ports.index(port)
        matches = []
        for d in range(19):
            inputs, targets = features.select_rows(*arrays[ego], now, d, 1)
            if all(
                np.array_equal(windows[group][name][i], value)
                for group, values in (("inputs", inputs), ("targets", targets))
                for name, value in values.items()
            ):
                matches.append(d)
        assert matches, i
        delays[matches[0]] += 1
    assert len(delays) == 19


def test_stored_columns_come_back_bit_for_bit():
    for name in (ICE_CLIMBERS, HUMAN_VS_CPU, "hohav__tests_data_duplicate_game_end.slp"):
        game = features.read_game(REPLAYS / name)
        back = storage.from_example(storage.to_example(game, name))
        assert (back.ports, back.humans, back.stage, back.first_frame) == (
            game.ports,
            game.humans,
            game.stage,
            game.first_frame,
        )
        for before, after in zip(game.players, back.players, strict=True):
            assert sorted(k for k, v in before.items() if v is not None) == sorted(after)
            for column, value in after.items():
                assert value.dtype == before[column].dtype
                assert value.tobytes() == before[column].tobytes(), column
