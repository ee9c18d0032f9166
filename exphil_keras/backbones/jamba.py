"""Jamba: Mamba blocks with a sliding-window attention block every `attention_every`-th layer.

Mamba carries long, cheap state; the attention layer adds exact recall over the last `window`
frames. With the defaults (2 layers, attention_every 2) the stack is Mamba, then attention.
"""

import keras

from exphil_keras.backbones.attention import SlidingWindowAttention
from exphil_keras.backbones.mamba import MambaBlock
from exphil_keras.backbones.residual import ResidualBackbone


@keras.saving.register_keras_serializable(package="exphil_keras")
class JambaBackbone(ResidualBackbone):
    """`num_layers` residual blocks: layer i is attention if (i + 1) % attention_every == 0."""

    def __init__(
        self,
        hidden_size=256,
        num_layers=2,
        state_size=16,
        expand=2,
        conv_size=4,
        num_heads=4,
        window=60,
        attention_every=2,
        **kwargs,
    ):
        mixers = [
            SlidingWindowAttention(hidden_size, num_heads, window, name=f"attention_{i}")
            if (i + 1) % attention_every == 0
            else MambaBlock(hidden_size, state_size, expand, conv_size, name=f"mamba_{i}")
            for i in range(num_layers)
        ]
        super().__init__(mixers, **kwargs)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.state_size = state_size
        self.expand = expand
        self.conv_size = conv_size
        self.num_heads = num_heads
        self.window = window
        self.attention_every = attention_every

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_size": self.hidden_size,
                "num_layers": self.num_layers,
                "state_size": self.state_size,
                "expand": self.expand,
                "conv_size": self.conv_size,
                "num_heads": self.num_heads,
                "window": self.window,
                "attention_every": self.attention_every,
            }
        )
        return config
