"""Windows at read time: a stored game -> W-frame windows of each ego's view, for any window
length, stride, delays and choice of egos, with no rebuild."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import sys

import numpy as np
from tensorflow_datasets.core.utils.lazy_imports_utils import tensorflow as tf

from exphil_keras import features
from exphil_keras.datasets.slippi_windows import storage


@dataclasses.dataclass(frozen=True)
class View:
    """How the stored games are read: windows of `window` frames every `stride` (default
    window // 2) of each ego's view; state from `frame_delay` frames back (an int, or a range
    (low, high) drawn per window, like ExPhil's --online-robust 0-18), targets `action_delay`
    frames ahead."""

    window: int = 60
    stride: int | None = None
    action_delay: int = 1
    frame_delay: int | tuple[int, int] = 0
    include_cpu_egos: bool = False

    def __post_init__(self):
        self.delays  # noqa: B018 (a ValueError for a bad delay)
        if self.window < 1 or self.step < 1 or self.action_delay < 0:
            raise ValueError(f"a window view needs window, stride >= 1 and delays >= 0: {self}")

    @property
    def step(self) -> int:
        return self.stride or max(self.window // 2, 1)

    @property
    def delays(self) -> tuple[int, int]:
        return features.delay_range(self.frame_delay)

    def starts(self, num_frames: int) -> range:
        """Window starts, as rows of the perspective read with the largest frame delay (so
        that every drawn delay has its state rows)."""
        usable = features.usable_frames(num_frames, self.action_delay, self.delays[1])
        return features.window_starts(usable, self.window, self.step)

    def count(self, num_frames: int, humans: int) -> int:
        """Windows of a game of `num_frames` frames with `humans` human players."""
        egos = 2 if self.include_cpu_egos else humans
        return egos * len(self.starts(num_frames))


# A window example's fields (a function: TensorFlow is imported on first use, not with the
# package): (group, name) -> (dtype, shape per frame); "sha256", "port" and
# "first_frame" (one per window) say where it comes from, as in version 1.
@functools.cache
def fields() -> dict:
    return {
        **{("inputs", n): (tf.float32, (d,)) for n, d in features.CONTINUOUS_INPUTS.items()},
        **{("inputs", n): (tf.int32, ()) for n in features.CATEGORICAL_INPUTS},
        **{
            ("targets", h): (tf.float32, (c,)) if h == "buttons" else (tf.int32, ())
            for h, c in features.TARGETS.items()
        },
        ("sha256",): (tf.string, None),
        ("port",): (tf.int32, None),
        ("first_frame",): (tf.int32, None),
    }


def game_windows(
    game: features.Game, view: View, seed: int | None = None, part: int = 0, parts: int = 1
) -> dict:
    """The windows of one game, stacked, by fields() key: [n, W, ...] per frame field, [n] per
    window; without a seed all of them, by ego then start. With a seed, the windows are dealt
    into `parts` random parts and this returns part `part`, in a random order; the generator
    (the deal, the order, a ranged frame delay's draws) is seeded by the seed and the game, so
    the parts are the same every time and together hold every window once."""
    rng = np.random.default_rng([seed or 0, int(game.sha256[:16], 16)])
    low, high = view.delays
    egos = game.egos(view.include_cpu_egos)
    starts = np.asarray(view.starts(game.num_frames), np.int64)
    delays = rng.integers(low, high + 1, size=(len(egos), len(starts), 1))
    chosen = np.arange(len(egos) * len(starts))  # window e * len(starts) + s: ego e, start s
    if seed is not None:
        chosen = rng.permutation(len(chosen))[part::parts]
    windows = []
    for e, ego in enumerate(egos):
        mine = chosen[chosen // max(len(starts), 1) == e] % max(len(starts), 1)
        if not len(mine):
            continue
        now = high + starts[mine, None] + np.arange(view.window)  # [n, W]: rows of frames t
        delay = high if low == high else delays[e, mine]
        arrays = features.frame_arrays(game, ego)
        inputs, targets = features.select_rows(*arrays, now, delay, view.action_delay)
        window = {("inputs", k): v for k, v in inputs.items()}
        window.update({("targets", k): v for k, v in targets.items()})
        window[("port",)] = np.full(len(mine), game.ports[ego], np.int32)
        window[("first_frame",)] = (game.first_frame + now[:, 0]).astype(np.int32)
        windows.append(window)
    stacked = {}
    for key, (dtype, shape) in fields().items():
        empty = np.zeros((0, view.window, *shape) if shape is not None else 0, dtype.as_numpy_dtype)
        stacked[key] = np.concatenate([empty, *(w[key] for w in windows if key in w)])
    stacked[("sha256",)] = np.full(len(stacked[("port",)]), game.sha256.encode(), np.object_)
    if seed is not None:
        order = rng.permutation(len(stacked[("port",)]))
        stacked = {key: value[order] for key, value in stacked.items()}
    return stacked


def nest(flat: dict) -> dict:
    """fields()-keyed values -> {"inputs": {...}, "targets": {...}, "sha256", "port", ...}."""
    out = {}
    for key, value in flat.items():
        if len(key) == 2:
            out.setdefault(key[0], {})[key[1]] = value
        else:
            out[key[0]] = value
    return out


_GAME_KEYS = tuple(storage.game_features().keys())


@functools.cache
def _libm():
    return ctypes.CDLL(ctypes.util.find_library("m")) if sys.platform == "linux" else None


@contextlib.contextmanager
def _ieee_arithmetic():
    """IEEE float arithmetic inside a TensorFlow kernel. TF runs its kernels, numpy_function's
    included, with denormals flushed to zero, where a raw 5e-45 / 5 is 0 instead of 1e-45: the
    features are defined (and the live agent computes them) with IEEE arithmetic. glibc only;
    elsewhere such a denormal feature may read as 0."""
    libm = _libm()
    if libm is None:
        yield
        return
    saved = ctypes.create_string_buffer(64)  # fenv_t: 32 bytes on x86-64, 8 on aarch64
    libm.fegetenv(saved)
    libm.fesetenv(ctypes.c_void_p(-1))  # glibc's FE_DFL_ENV
    try:
        yield
    finally:
        libm.fesetenv(saved)


def _numpy_windows(part, *values, view: View, seed: int | None, parts: int) -> list:
    with _ieee_arithmetic():
        game = storage.from_example(dict(zip(_GAME_KEYS, values, strict=True)))
        return list(game_windows(game, view, seed, int(part), parts).values())


def dataset(games: tf.data.Dataset, view: View, seed: int | None = None, parts: int = 8):
    """Stored games (as TFDS decodes them) -> window examples.

    Without a seed: every game's windows in order (ego, then start). With one, windows of many
    games are mixed before any batching: each game is dealt into `parts` random parts (each
    decoded on its own: `parts` decodes per game per pass, for mixing that a buffer of whole
    games could only give at `parts` times the memory), the parts of 64 games shuffled, and 16
    parts interleaved window by window."""
    numpy_windows = functools.partial(_numpy_windows, view=view, seed=seed, parts=parts)
    if seed is None:
        parts = 1
    games = games.flat_map(lambda game: tf.data.Dataset.from_tensors(game).repeat(parts))
    games = games.enumerate().map(lambda i, game: (i % parts, game))
    if seed is not None:
        games = games.shuffle(64 * parts, seed=seed, reshuffle_each_iteration=False)

    def windows_of(part, example):
        flat = tf.numpy_function(
            numpy_windows,
            [part, *(example[key] for key in _GAME_KEYS)],
            [dtype for dtype, _ in fields().values()],
            stateful=False,
        )
        shaped = {}
        for (key, (_, shape)), value in zip(fields().items(), flat, strict=True):
            shaped[key] = tf.ensure_shape(
                value, (None, view.window, *shape) if shape is not None else (None,)
            )
        return nest(shaped)

    stacked = games.map(windows_of, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if seed is None:
        return stacked.unbatch()
    return stacked.interleave(tf.data.Dataset.from_tensor_slices, cycle_length=16, block_length=1)


def read(builder, split: str, view: View | None = None, seed: int | None = None, games=None):
    """Window examples of one split of a built dataset, cut with `view` (default: the builder
    config's), from the one stored copy. With a seed, the shards, the games and their windows
    are shuffled with it (see `dataset`), once: the same order on every pass. `games`: only
    these sha256s."""
    import tensorflow_datasets as tfds

    read_config = tfds.ReadConfig(
        shuffle_seed=seed, shuffle_reshuffle_each_iteration=False, try_autocache=False
    )
    stored = builder.games(split, shuffle_files=seed is not None, read_config=read_config)
    if games is not None:
        keep = tf.constant(sorted(games))
        stored = stored.filter(lambda game: tf.reduce_any(tf.equal(game["sha256"], keep)))
    view = view or builder.builder_config.view
    return with_size(dataset(stored, view, seed), builder, split, view, games)


def with_size(ds, builder, split, view: View, games=None) -> tf.data.Dataset:
    """`ds` with its number of windows when they are a whole split's (or its `games`'): Keras's
    fit and evaluate then know each epoch's length."""
    by_split = builder.info.metadata.get("report", {}).get("games_used", {})
    used = by_split.get(split) if isinstance(split, str) else None  # not "train[:10%]"
    if used is None:
        return ds
    chosen = used if games is None else {sha: used[sha] for sha in games if sha in used}
    count = sum(view.count(game["frames"], game["humans"]) for game in chosen.values())
    return ds.apply(tf.data.experimental.assert_cardinality(count))
