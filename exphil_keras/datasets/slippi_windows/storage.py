"""How a game is stored: one example per game, both players' raw columns in one compressed field.

The columns are `features.Game`'s, so that reading decodes them with features.py's own encoders.
Each column is stored in the narrowest dtype that gives back the same bits (an integral float as
int8/int16, a stick value k/80 as int8, a bool as uint8), else, for float32, as the differences of
its bit patterns (smooth values give small ones); every column's bytes are then split into byte
planes (most significant bytes of neighbouring frames are alike) and the whole game is
zlib-compressed. zlib is in the standard library, and level 6 costs a quarter of level 9's time
for 5% more bytes (measured on ../shared/replays: 12.2 vs 11.7 bytes per game frame).
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import tensorflow_datasets as tfds

from exphil_keras import features

ZLIB_LEVEL = 6
_STICK_STEPS = np.float32(80)  # Melee's processed stick values are multiples of 1/80


def game_features() -> tfds.features.FeaturesDict:
    """One stored game: where it came from, who played, and its compressed columns."""
    return tfds.features.FeaturesDict(
        {
            "sha256": tfds.features.Text(),
            "file": tfds.features.Text(),  # the path under the replay folder
            "slippi_version": tfds.features.Text(),
            "stage": np.int32,
            "first_frame": np.int32,
            "num_frames": np.int32,
            "ports": tfds.features.Tensor(shape=(2,), dtype=np.int32),
            "humans": tfds.features.Tensor(shape=(2,), dtype=np.bool_),
            "columns": tfds.features.Tensor(shape=(), dtype=np.object_),
        }
    )


def to_example(game: features.Game, file: str) -> dict:
    return {
        "sha256": game.sha256,
        # A name need not be UTF-8 (it arrives with surrogate escapes); the record keeps it
        # readable, with such bytes escaped.
        "file": file.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"),
        "slippi_version": game.slippi_version,
        "stage": game.stage,
        "first_frame": game.first_frame,
        "num_frames": game.num_frames,
        "ports": np.asarray(game.ports, np.int32),
        "humans": np.asarray(game.humans, np.bool_),
        "columns": encode_columns(game.players),
    }


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def from_example(example: dict) -> features.Game:
    """A stored example (numpy values, as `tfds.as_numpy` or a data source gives them) -> Game."""
    return features.Game(
        path=_text(example["file"]),
        sha256=_text(example["sha256"]),
        slippi_version=_text(example["slippi_version"]),
        stage=int(example["stage"]),
        first_frame=int(example["first_frame"]),
        ports=[int(p) for p in example["ports"]],
        humans=[bool(h) for h in example["humans"]],
        players=decode_columns(example["columns"], int(example["num_frames"])),
    )


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _narrow(value: np.ndarray) -> tuple[np.ndarray, str]:
    """(stored array, transform): the smallest exact form of one column."""
    if value.dtype == np.bool_:
        return value.astype(np.uint8), "cast"
    if value.dtype.kind in "iu":
        for dtype in (np.uint8, np.int8, np.uint16, np.int16):
            if np.dtype(dtype).itemsize < value.dtype.itemsize:
                stored = value.astype(dtype)
                if _same_bits(stored.astype(value.dtype), value):
                    return stored, "cast"
        return value, "raw"
    if value.dtype == np.float32:
        for dtype in (np.int8, np.int16):
            stored = value.astype(dtype)
            if _same_bits(stored.astype(np.float32), value):
                return stored, "cast"
        with np.errstate(invalid="ignore"):
            steps = np.rint(value * _STICK_STEPS)
        if np.all(np.abs(steps) <= 127):
            stored = steps.astype(np.int8)
            if _same_bits(_unstick(stored), value):
                return stored, "stick"
        return np.diff(value.view(np.int32), prepend=np.int32(0)), "delta"
    return value, "raw"


def _unstick(stored: np.ndarray) -> np.ndarray:
    return stored.astype(np.float32) / _STICK_STEPS


def _widen(stored: np.ndarray, dtype: np.dtype, transform: str) -> np.ndarray:
    if transform == "cast":
        return stored.astype(dtype)
    if transform == "stick":
        return _unstick(stored)
    if transform == "delta":
        return np.cumsum(stored, dtype=np.int32).view(np.float32)
    return stored


def encode_columns(players: list[dict]) -> bytes:
    """Players' columns -> zlib(header length, JSON header, byte planes of every column)."""
    header, body = [], []
    for player, columns in enumerate(players):
        for name, value in columns.items():
            if value is None:  # a field this Slippi version lacks
                continue
            value = np.asarray(value)
            stored, transform = _narrow(value)
            header.append([player, name, value.dtype.str, stored.dtype.str, transform])
            planes = stored.view(np.uint8).reshape(len(stored), stored.dtype.itemsize).T
            body.append(np.ascontiguousarray(planes).tobytes())
    head = json.dumps(header, separators=(",", ":")).encode()
    return zlib.compress(struct.pack("<I", len(head)) + head + b"".join(body), ZLIB_LEVEL)


def decode_columns(blob: bytes, num_frames: int) -> list[dict]:
    """`encode_columns`'s bytes -> the players' columns, bit for bit."""
    data = zlib.decompress(blob)
    (length,) = struct.unpack_from("<I", data)
    offset = 4 + length
    players = [{}, {}]
    for player, name, dtype, stored_dtype, transform in json.loads(data[4:offset]):
        stored_dtype = np.dtype(stored_dtype)
        size = num_frames * stored_dtype.itemsize
        planes = np.frombuffer(data, np.uint8, size, offset).reshape(stored_dtype.itemsize, -1)
        offset += size
        stored = np.ascontiguousarray(planes.T).view(stored_dtype).reshape(num_frames)
        players[player][name] = _widen(stored, np.dtype(dtype), transform)
    return players
