"""How a window is stored: its arrays packed into one bytes field (`PackedWindow`)."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from exphil_keras import features


class PackedWindow(tfds.features.FeatureConnector):
    """A dict of per-frame arrays stored as ONE bytes field: frame rows of 4-byte words.

    Decodes to `{name: [W, width] float32 or [W] int32}`. One proto field per window instead of
    one per array is what keeps the build near the raw parse rate; values round-trip exactly.
    """

    def __init__(self, window: int, fields: dict[str, list], doc=None):
        """`fields`: name -> [width or 0 for a per-frame scalar, "float32" or "int32"]."""
        super().__init__(doc=doc)
        self.window = int(window)
        self.fields = {name: (int(width), str(dtype)) for name, (width, dtype) in fields.items()}
        self.width = sum(max(width, 1) for width, _ in self.fields.values())

    def get_tensor_info(self):
        return {
            name: tfds.features.TensorInfo(
                shape=(self.window, width) if width else (self.window,), dtype=np.dtype(dtype)
            )
            for name, (width, dtype) in self.fields.items()
        }

    def get_serialized_info(self):
        return tfds.features.TensorInfo(shape=(), dtype=np.object_)

    def pack(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Named arrays [T, ...] -> int32 words [T, width] (float32 bit patterns kept)."""
        columns = []
        for name, (width, dtype) in self.fields.items():
            value = np.asarray(arrays[name], dtype=dtype)
            columns.append(value.view(np.int32).reshape(len(value), max(width, 1)))
        return np.concatenate(columns, axis=1)

    def encode_example(self, example_data):
        words = example_data if isinstance(example_data, np.ndarray) else self.pack(example_data)
        if words.shape != (self.window, self.width) or words.dtype != np.int32:
            raise ValueError(
                f"expected packed words {(self.window, self.width)} int32, got "
                f"{words.shape} {words.dtype}"
            )
        return words.tobytes()

    def _unpack(self, words, bitcast, squeeze):
        out, col = {}, 0
        for name, (width, dtype) in self.fields.items():
            part = words[:, col : col + max(width, 1)]
            col += max(width, 1)
            if dtype == "float32":
                part = bitcast(part)
            out[name] = part if width else squeeze(part)
        return out

    def decode_example(self, tfexample_data):
        import tensorflow as tf

        words = tf.reshape(tf.io.decode_raw(tfexample_data, tf.int32), (self.window, self.width))
        return self._unpack(
            words, lambda x: tf.bitcast(x, tf.float32), lambda x: tf.squeeze(x, axis=1)
        )

    def decode_example_np(self, example_data):
        words = np.frombuffer(example_data, np.int32).reshape(self.window, self.width)
        return self._unpack(words, lambda x: x.view(np.float32), lambda x: x[:, 0])

    def to_json_content(self):
        return {"window": self.window, "fields": {k: list(v) for k, v in self.fields.items()}}


def _window_features(window: int) -> tfds.features.FeaturesDict:
    inputs = {name: [dim, "float32"] for name, dim in features.CONTINUOUS_INPUTS.items()}
    inputs.update({name: [0, "int32"] for name in features.CATEGORICAL_INPUTS})
    targets = {
        head: [classes, "float32"] if head == "buttons" else [0, "int32"]
        for head, classes in features.TARGETS.items()
    }
    return tfds.features.FeaturesDict(
        {
            "inputs": PackedWindow(window, inputs),
            "targets": PackedWindow(window, targets),
            "sha256": tfds.features.Text(),
            "port": np.int32,
            "first_frame": np.int32,
        }
    )


def window_features(window: int) -> tfds.features.FeaturesDict:
    """The features of one window example: packed inputs and targets, and where it came from."""
    inputs = {name: [dim, "float32"] for name, dim in features.CONTINUOUS_INPUTS.items()}
    inputs.update({name: [0, "int32"] for name in features.CATEGORICAL_INPUTS})
    targets = {
        head: [classes, "float32"] if head == "buttons" else [0, "int32"]
        for head, classes in features.TARGETS.items()
    }
    return tfds.features.FeaturesDict(
        {
            "inputs": PackedWindow(window, inputs),
            "targets": PackedWindow(window, targets),
            "sha256": tfds.features.Text(),
            "port": np.int32,
            "first_frame": np.int32,
        }
    )
