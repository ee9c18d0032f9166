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
import tensorflow as tf

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
        low, high = self.delays
        if self.window < 1 or self.step < 1 or self.action_delay < 0 or not 0 <= low <= high:
            raise ValueError(f"a window view needs window, stride >= 1 and delays >= 0: {self}")

    @property
    def step(self) -> int:
        return self.stride or max(self.window // 2, 1)

    @property
    def delays(self) -> tuple[int, int]:
        delay = self.frame_delay
        return (delay, delay) if isinstance(delay, int) else (int(delay[0]), int(delay[1]))

    def starts(self, num_frames: int) -> range:
        """Window starts, as rows of the perspective read with the largest frame delay (so
        that every drawn delay has its state rows)."""
        usable = features.usable_frames(num_frames, self.action_delay, self.delays[1])
        return features.window_starts(usable, self.window, self.step)

    def count(self, num_frames: int, humans: int) -> int:
        """Windows of a game of `num_frames` frames with `humans` human players."""
        egos = 2 if self.include_cpu_egos else humans
        return egos * len(self.starts(num_frames))


# A window example's fields: (group, name) -> (dtype, shape per frame); "sha256", "port" and
# "first_frame" (one per window) say where it comes from, as in version 1.
FIELDS = {
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


def game_windows(game: features.Game, view: View, seed: int | None = None) -> dict:
    """All windows of one game, stacked, by FIELDS key: [n, W, ...] per frame field, [n] per
    window. With a seed the windows come in a random order, and a ranged frame delay is drawn,
    from a generator seeded by the seed and the game (the same every time)."""
    rng = np.random.default_rng([seed or 0, int(game.sha256[:16], 16)])
    low, high = view.delays
    starts = np.asarray(view.starts(game.num_frames), np.int64)
    now = high + starts[:, None] + np.arange(view.window)  # [n, W]: rows of the frames t
    parts = []
    for ego in game.egos(view.include_cpu_egos):
        delay = high if low == high else rng.integers(low, high + 1, size=(len(starts), 1))
        arrays = features.frame_arrays(game, ego)
        inputs, targets = features.select_rows(*arrays, now, delay, view.action_delay)
        part = {("inputs", k): v for k, v in inputs.items()}
        part.update({("targets", k): v for k, v in targets.items()})
        part[("port",)] = np.full(len(starts), game.ports[ego], np.int32)
        part[("first_frame",)] = (game.first_frame + now[:, 0]).astype(np.int32)
        parts.append(part)
    stacked = {}
    for key, (dtype, shape) in FIELDS.items():
        empty = np.zeros((0, view.window, *shape) if shape is not None else 0, dtype.as_numpy_dtype)
        stacked[key] = np.concatenate([empty, *(p[key] for p in parts if key in p)])
    stacked[("sha256",)] = np.full(len(stacked[("port",)]), game.sha256.encode(), np.object_)
    if seed is not None:
        order = rng.permutation(len(stacked[("port",)]))
        stacked = {key: value[order] for key, value in stacked.items()}
    return stacked


def nest(flat: dict) -> dict:
    """FIELDS-keyed values -> {"inputs": {...}, "targets": {...}, "sha256", "port", ...}."""
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


def _numpy_windows(*values, view: View, seed: int | None) -> list:
    with _ieee_arithmetic():
        game = storage.from_example(dict(zip(_GAME_KEYS, values, strict=True)))
        return list(game_windows(game, view, seed).values())


def dataset(games: tf.data.Dataset, view: View, seed: int | None = None, cycle: int = 16):
    """Stored games (as TFDS decodes them) -> window examples.

    Without a seed: every game's windows in order (ego, then start). With one: each game's
    windows in a seeded random order, `cycle` games interleaved window by window, so that a
    shuffle buffer downstream mixes windows of many games rather than of one."""
    numpy_windows = functools.partial(_numpy_windows, view=view, seed=seed)

    def windows_of(example):
        flat = tf.numpy_function(
            numpy_windows,
            [example[key] for key in _GAME_KEYS],
            [dtype for dtype, _ in FIELDS.values()],
            stateful=False,
        )
        shaped = {}
        for (key, (_, shape)), value in zip(FIELDS.items(), flat, strict=True):
            shaped[key] = tf.ensure_shape(
                value, (None, view.window, *shape) if shape is not None else (None,)
            )
        return nest(shaped)

    stacked = games.map(windows_of, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if seed is None:
        return stacked.unbatch()
    return stacked.interleave(
        tf.data.Dataset.from_tensor_slices, cycle_length=cycle, block_length=1
    )


def read(builder, split: str, view: View | None = None, seed: int | None = None, games=None):
    """Window examples of one split of a built dataset, cut with `view` (default: the builder
    config's), from the one stored copy. With a seed, the games' order (shards and a buffer of
    64 games), each game's windows and the interleaving are shuffled with it, once (the same
    order on every pass). `games`: only these sha256s."""
    import tensorflow_datasets as tfds

    read_config = tfds.ReadConfig(
        shuffle_seed=seed, shuffle_reshuffle_each_iteration=False, try_autocache=False
    )
    stored = builder.games(split, shuffle_files=seed is not None, read_config=read_config)
    if games is not None:
        keep = tf.constant(sorted(games))
        stored = stored.filter(lambda game: tf.reduce_any(tf.equal(game["sha256"], keep)))
    if seed is not None:
        stored = stored.shuffle(64, seed=seed, reshuffle_each_iteration=False)
    view = view or builder.builder_config.view
    ds = dataset(stored, view, seed)
    used = builder.info.metadata.get("report", {}).get("games_used", {}).get(split)
    if used is not None:  # a whole split: its size is known (Keras's fit and evaluate use it)
        chosen = used if games is None else {sha: used[sha] for sha in games if sha in used}
        count = sum(view.count(game["frames"], game["humans"]) for game in chosen.values())
        ds = ds.apply(tf.data.experimental.assert_cardinality(count))
    return ds
