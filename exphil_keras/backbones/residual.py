"""The shared shape of every backbone: a pre-norm residual stack of causal, streamable mixers."""

import keras
from keras import ops


class ResidualBackbone(keras.layers.Layer):
    """[B, T, H] -> [B, T, H]: x + mixer_i(norm_i(x)) for each mixer, then a final norm.

    Each mixer is causal and offers `call` (a window), `initial_state(batch_size)` and
    `step(x_t, state)` (one frame), so the whole stack streams with the same weights. Subclasses
    make the mixers from their constructor arguments and return those arguments in `get_config`.
    """

    def __init__(self, mixers, **kwargs):
        super().__init__(**kwargs)
        self.mixers = mixers
        self.norms = [
            keras.layers.LayerNormalization(epsilon=1e-5, name=f"norm_{i}")
            for i in range(len(mixers))
        ]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")

    def build(self, input_shape):
        for norm, mixer in zip(self.norms, self.mixers, strict=True):
            norm.build(input_shape)
            mixer.build(input_shape)
        self.final_norm.build(input_shape)

    def call(self, x):
        for norm, mixer in zip(self.norms, self.mixers, strict=True):
            x = x + mixer(norm(x))
        return self.final_norm(x)

    def initial_state(self, batch_size):
        """The state before the first frame: one entry per mixer."""
        return [mixer.initial_state(batch_size) for mixer in self.mixers]

    def step(self, x_t, state):
        """One frame [B, H] -> ([B, H], next state); equal to `call` at that frame's position."""
        x_t = ops.convert_to_tensor(x_t, self.compute_dtype)
        next_state = []
        for norm, mixer, mixer_state in zip(self.norms, self.mixers, state, strict=True):
            y_t, mixer_state = mixer.step(norm(x_t), mixer_state)
            x_t = x_t + y_t
            next_state.append(mixer_state)
        return self.final_norm(x_t), next_state

    def compute_output_shape(self, input_shape):
        return input_shape
