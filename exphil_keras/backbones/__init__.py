"""The backbone zoo: seven CLI names over six architectures, all [B, T, H] -> [B, T, H], causal."""

import inspect

from exphil_keras.backbones.attention import SlidingWindowAttentionBackbone
from exphil_keras.backbones.gru import GRUBackbone
from exphil_keras.backbones.jamba import JambaBackbone
from exphil_keras.backbones.lstm import LSTMBackbone
from exphil_keras.backbones.mamba import MambaBackbone
from exphil_keras.backbones.mlp import MLPBackbone

BACKBONES = {
    "mlp": MLPBackbone,
    "lstm": LSTMBackbone,
    "gru": GRUBackbone,
    "attention": SlidingWindowAttentionBackbone,
    "sliding_window": SlidingWindowAttentionBackbone,
    "mamba": MambaBackbone,
    "jamba": JambaBackbone,
}


def build(name, /, **kwargs):
    """The backbone called `name`, built from the knobs it has among `kwargs`.

    Knobs a backbone lacks (e.g. `state_size` for an LSTM) are dropped, so one set of CLI flags
    serves every name.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    cls = BACKBONES[name]
    knobs = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in knobs or k in ("name", "dtype")})


def summary(hidden_size=256, num_layers=2, state_size=16, print_fn=print):
    """Parameters of each backbone name at the given (default) sizes, printed and returned."""
    counts = {}
    for name in BACKBONES:
        backbone = build(
            name, hidden_size=hidden_size, num_layers=num_layers, state_size=state_size
        )
        backbone.build((None, None, hidden_size))
        counts[name] = backbone.count_params()
        print_fn(f"{name:<16}{type(backbone).__name__:<34}{counts[name]:>12,}")
    return counts


__all__ = [
    "BACKBONES",
    "GRUBackbone",
    "JambaBackbone",
    "LSTMBackbone",
    "MLPBackbone",
    "MambaBackbone",
    "SlidingWindowAttentionBackbone",
    "build",
    "summary",
]
