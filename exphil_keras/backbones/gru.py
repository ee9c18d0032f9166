"""GRU: Keras's built-in `GRU` layers; the streaming state is h per layer."""

import keras

from exphil_keras.backbones.lstm import RecurrentMixer
from exphil_keras.backbones.residual import ResidualBackbone


@keras.saving.register_keras_serializable(package="exphil_keras")
class GRUBackbone(ResidualBackbone):
    """`num_layers` residual GRU blocks of width `hidden_size`.

    `reset_after=True` (cuDNN's formulation, Keras's default) on every backend, so one weights
    file means the same model everywhere.
    """

    def __init__(self, hidden_size=256, num_layers=2, **kwargs):
        mixers = [
            RecurrentMixer(
                keras.layers.GRU(hidden_size, reset_after=True, return_sequences=True),
                name=f"gru_{i}",
            )
            for i in range(num_layers)
        ]
        super().__init__(mixers, **kwargs)
        self.hidden_size = hidden_size
        self.num_layers = num_layers

    def get_config(self):
        config = super().get_config()
        config.update({"hidden_size": self.hidden_size, "num_layers": self.num_layers})
        return config
