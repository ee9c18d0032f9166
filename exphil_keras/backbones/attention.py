"""Sliding-window attention: causal multi-head attention over the last `window` frames.

Positions enter only as ALiBi biases, -slope_h * (query - key) distance, so a key needs no
position of its own: streaming keeps the keys and values of the last `window` frames in a
rolling buffer and gets exactly the windowed scores.
"""

import math

import keras
import numpy as np
from keras import ops

from exphil_keras.backbones.residual import ResidualBackbone


def alibi_slopes(num_heads):
    """ALiBi's geometric slopes 2^(-8 i / num_heads), i = 1..num_heads."""
    return 2.0 ** (-8.0 * np.arange(1, num_heads + 1) / num_heads)


class SlidingWindowAttention(keras.layers.Layer):
    """Causal MHA where frame t attends to frames t - window + 1 .. t, with ALiBi biases."""

    def __init__(self, hidden_size, num_heads=4, window=60, **kwargs):
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by {num_heads} heads")
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.window = window
        self.head_size = hidden_size // num_heads
        self.query_key_value = keras.layers.Dense(3 * hidden_size, use_bias=False, name="qkv")
        self.output_projection = keras.layers.Dense(hidden_size, use_bias=False, name="output")

    def build(self, input_shape):
        self.query_key_value.build(input_shape)
        self.output_projection.build(input_shape)

    def _heads(self, x):
        """[..., H] -> query, key, value [..., heads, head_size]."""
        qkv = self.query_key_value(x)
        qkv = ops.reshape(qkv, ops.shape(qkv)[:-1] + (3, self.num_heads, self.head_size))
        return qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]

    def _attend(self, query, key, value, distance, allowed):
        """query [B, Tq, h, d], key/value [B, Tk, h, d], distance/allowed [Tq, Tk] -> [B, Tq, H]."""
        scores = ops.einsum("bqhd,bkhd->bhqk", query, key) / math.sqrt(self.head_size)
        slopes = ops.convert_to_tensor(alibi_slopes(self.num_heads), "float32")
        bias = -slopes[:, None, None] * ops.cast(distance, "float32")
        scores = ops.where(allowed, ops.cast(scores, "float32") + bias, -1e9)
        weights = ops.cast(ops.softmax(scores, axis=-1), value.dtype)
        out = ops.einsum("bhqk,bkhd->bqhd", weights, value)
        return self.output_projection(ops.reshape(out, ops.shape(out)[:2] + (self.hidden_size,)))

    def call(self, x):
        query, key, value = self._heads(x)
        positions = ops.arange(ops.shape(x)[1])
        distance = positions[:, None] - positions[None, :]
        allowed = (distance >= 0) & (distance < self.window)
        return self._attend(query, key, value, distance, allowed)

    def initial_state(self, batch_size):
        """Keys and values of the last `window` frames (oldest first) and the frames seen so far."""
        shape = (batch_size, self.window, self.num_heads, self.head_size)
        buffer = ops.zeros(shape, self.compute_dtype)
        return [buffer, buffer, ops.zeros((), "int32")]

    def step(self, x_t, state):
        keys, values, frames_seen = state
        query, key, value = self._heads(x_t)
        keys = ops.concatenate([keys[:, 1:], key[:, None]], axis=1)
        values = ops.concatenate([values[:, 1:], value[:, None]], axis=1)
        distance = ops.arange(self.window - 1, -1, -1)[None, :]
        allowed = distance <= frames_seen
        y_t = self._attend(query[:, None], keys, values, distance, allowed)[:, 0]
        # Capped at `window`: older frames all look alike, and the state stays bounded.
        return y_t, [keys, values, ops.minimum(frames_seen + 1, self.window)]


@keras.saving.register_keras_serializable(package="exphil_keras")
class SlidingWindowAttentionBackbone(ResidualBackbone):
    """`num_layers` residual attention blocks, `num_heads` heads over `window` frames."""

    def __init__(self, hidden_size=256, num_layers=2, num_heads=4, window=60, **kwargs):
        mixers = [
            SlidingWindowAttention(hidden_size, num_heads, window, name=f"attention_{i}")
            for i in range(num_layers)
        ]
        super().__init__(mixers, **kwargs)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.window = window

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_size": self.hidden_size,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "window": self.window,
            }
        )
        return config
