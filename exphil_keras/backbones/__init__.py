"""The backbones: every name of `exphil_keras.architectures`, [B, T, H] -> [B, T, H], causal."""

import importlib
import inspect

from exphil_keras import architectures


def _layer_class(architecture):
    module, name = architecture.layer.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


# Importing every backbone module also registers its classes for `.keras` loading.
BACKBONES = {name: _layer_class(architectures.get(name)) for name in architectures.NAMES}


def build(name, /, **kwargs):
    """The backbone called `name`, built from the knobs it has among `kwargs`.

    Knobs a backbone lacks (e.g. `state_size` for an LSTM) are dropped, so one set of CLI flags
    serves every name.
    """
    cls = BACKBONES[architectures.get(name).name]
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


__all__ = ["BACKBONES", "build", "summary"]
