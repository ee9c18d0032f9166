"""MLP: a per-frame Dense stack, the stateless baseline (it sees only the current frame)."""

import keras
from keras import ops

from exphil_keras.backbones.residual import ResidualBackbone


def erf(x):
    """erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, float32's resolution), from exp
    alone: the erf op does not survive every export (TensorFlow lowers it to Erfc, which ONNX
    lacks; JAX to a StableHLO composite that TensorFlow's XLA cannot read)."""
    magnitude = ops.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * magnitude)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return ops.sign(x) * (1.0 - poly * ops.exp(-magnitude * magnitude))


def gelu(x):
    """Exact GELU, x * Phi(x)."""
    return 0.5 * x * (1.0 + erf(x * 0.7071067811865476))


class FrameDense(keras.layers.Layer):
    """Dense(hidden, gelu) applied to each frame on its own; its streaming state is empty."""

    def __init__(self, hidden_size, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(hidden_size, name="dense")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return gelu(self.dense(x))

    def initial_state(self, batch_size):
        return ()

    def step(self, x_t, state):
        return self.call(x_t), state


@keras.saving.register_keras_serializable(package="exphil_keras")
class MLPBackbone(ResidualBackbone):
    """`num_layers` residual per-frame Dense blocks of width `hidden_size`."""

    def __init__(self, hidden_size=256, num_layers=2, **kwargs):
        mixers = [FrameDense(hidden_size, name=f"dense_{i}") for i in range(num_layers)]
        super().__init__(mixers, **kwargs)
        self.hidden_size = hidden_size
        self.num_layers = num_layers

    def get_config(self):
        config = super().get_config()
        config.update({"hidden_size": self.hidden_size, "num_layers": self.num_layers})
        return config
