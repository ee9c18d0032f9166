"""Backbones: the name registry, shapes, causality, configs and the default parameter counts."""

import inspect

import numpy as np
from keras import ops

from exphil_keras import backbones


def test_build_maps_every_cli_name():
    for name, cls in backbones.BACKBONES.items():
        assert isinstance(backbones.build(name, hidden_size=8, num_layers=1), cls)
    assert backbones.BACKBONES["sliding_window"] is backbones.BACKBONES["attention"]


def test_shape_and_causality(architecture, small):
    backbone = backbones.build(architecture, **small)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 20, small["hidden_size"])).astype("float32")
    y = ops.convert_to_numpy(backbone(x))
    assert y.shape == x.shape
    changed = x.copy()
    changed[:, 11:] = rng.normal(size=changed[:, 11:].shape)  # frames after t = 10
    y_changed = ops.convert_to_numpy(backbone(changed))
    np.testing.assert_array_equal(y_changed[:, :11], y[:, :11])
    assert not np.allclose(y_changed[:, 11:], y[:, 11:])


def test_config_is_exactly_the_constructor_arguments(architecture, small):
    backbone = backbones.build(architecture, **small)
    config = backbone.get_config()
    arguments = set(inspect.signature(type(backbone)).parameters) - {"kwargs"}
    assert set(config) - {"name", "trainable", "dtype"} == arguments
    clone = type(backbone).from_config(config)
    assert clone.get_config() == config


def test_summary_counts_parameters():
    h, n = 32, 4  # small sizes keep it fast; docs/ARCHITECTURES.md lists the default sizes
    counts = backbones.summary(hidden_size=h, num_layers=2, state_size=n, print_fn=lambda _: None)
    assert set(counts) == set(backbones.BACKBONES)
    assert counts["attention"] == counts["sliding_window"]
    norms = 3 * 2 * h  # two block norms and the final norm, gamma and beta
    assert counts["mlp"] == 2 * (h * h + h) + norms
    assert counts["gru"] == 2 * 3 * (2 * h * h + 2 * h) + norms
    assert counts["lstm"] == 2 * 4 * (2 * h * h + h) + norms
    assert counts["attention"] == 2 * 4 * h * h + norms
    e, rank = 2 * h, -(-h // 16)  # expand 2, dt_rank ceil(h / 16)
    mamba_block = h * 2 * e + 5 * e + e * (rank + 2 * n) + rank * e + 2 * e + e * n + e * h
    assert counts["mamba"] == 2 * mamba_block + norms
    assert counts["jamba"] == mamba_block + 4 * h * h + norms


def test_mlp_gelu_is_the_exact_gelu_within_float32():
    import math

    from exphil_keras.backbones.mlp import gelu

    x = np.linspace(-8, 8, 4001)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])  # float64
    got = ops.convert_to_numpy(gelu(ops.convert_to_tensor(x, "float32")))
    np.testing.assert_allclose(got, exact, atol=2e-6, rtol=0)
