"""MLP: a per-frame Dense stack, the stateless baseline (it sees only the current frame)."""

import keras

from exphil_keras.backbones.residual import ResidualBackbone


class FrameDense(keras.layers.Layer):
    """Dense(hidden, gelu) applied to each frame on its own; its streaming state is empty."""

    def __init__(self, hidden_size, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(hidden_size, activation="gelu", name="dense")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return self.dense(x)

    def initial_state(self, batch_size):
        return ()

    def step(self, x_t, state):
        return self.dense(x_t), state


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
