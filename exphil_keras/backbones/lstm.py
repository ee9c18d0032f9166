"""LSTM: Keras's built-in `LSTM` layers; the streaming state is (h, c) per layer."""

import keras
from keras import ops

from exphil_keras.backbones.residual import ResidualBackbone


class RecurrentMixer(keras.layers.Layer):
    """A Keras RNN layer over the window; its own cell, called once, for a frame."""

    def __init__(self, rnn, **kwargs):
        super().__init__(**kwargs)
        self.rnn = rnn

    def build(self, input_shape):
        self.rnn.build(input_shape)

    def call(self, x):
        return self.rnn(x)

    def initial_state(self, batch_size):
        sizes = self.rnn.cell.state_size
        sizes = sizes if isinstance(sizes, (list, tuple)) else [sizes]
        return [ops.zeros((batch_size, size), self.compute_dtype) for size in sizes]

    def step(self, x_t, state):
        y_t, state = self.rnn.cell(x_t, state)
        return y_t, list(state) if isinstance(state, (list, tuple)) else [state]


@keras.saving.register_keras_serializable(package="exphil_keras")
class LSTMBackbone(ResidualBackbone):
    """`num_layers` residual LSTM blocks of width `hidden_size`."""

    def __init__(self, hidden_size=256, num_layers=2, **kwargs):
        mixers = [
            RecurrentMixer(keras.layers.LSTM(hidden_size, return_sequences=True), name=f"lstm_{i}")
            for i in range(num_layers)
        ]
        super().__init__(mixers, **kwargs)
        self.hidden_size = hidden_size
        self.num_layers = num_layers

    def get_config(self):
        config = super().get_config()
        config.update({"hidden_size": self.hidden_size, "num_layers": self.num_layers})
        return config
