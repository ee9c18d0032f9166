"""The selective scan against the float64 numpy recurrence, its oracle."""

import importlib

import keras
import numpy as np
import pytest
from keras import ops

from exphil_keras.ops import selective_scan, selective_scan_ref, selective_scan_step


def scan_inputs(length, dt, batch=2, inner=3, state=4, seed=0):
    """u, delta, A, B, C, D; delta = dt everywhere, or softplus-like random values if dt is None."""
    rng = np.random.default_rng(seed)
    delta = (
        rng.uniform(1e-3, 0.5, (batch, length, inner))
        if dt is None
        else np.full((batch, length, inner), dt)
    )
    return (
        rng.normal(size=(batch, length, inner)),
        delta,
        -np.exp(rng.normal(size=(inner, state))),
        rng.normal(size=(batch, length, state)),
        rng.normal(size=(batch, length, state)),
        rng.normal(size=inner),
    )


def set_block_rows(monkeypatch, table, rows):
    """The scan's `table` entry set to `rows` for this backend on either device kind."""
    module = importlib.import_module("exphil_keras.ops.selective_scan")  # not the function
    for kind in ("cpu", "gpu"):
        monkeypatch.setitem(getattr(module, table), (keras.backend.backend(), kind), rows)


# rows: the forward's batch rows per block (None: the table's). Batch 40 and 5 are no multiple
# of the rows (16 on a CPU under JAX, and 2): the last block is padded.
@pytest.mark.parametrize(
    "length, dt, batch, rows",
    [
        (60, None, 2, None),
        (60, 0.1, 2, None),
        (1024, 0.1, 2, None),
        (1024, None, 2, None),
        (200, 20.0, 2, None),
        (60, None, 40, None),
        (60, None, 5, 2),
    ],
)
def test_scan_matches_float64_reference(length, dt, batch, rows, monkeypatch):
    if rows:
        set_block_rows(monkeypatch, "FORWARD_ROWS", rows)
    args = scan_inputs(length, dt, batch)
    expected = selective_scan_ref(*args)
    actual = ops.convert_to_numpy(selective_scan(*(a.astype("float32") for a in args)))
    assert actual.dtype == np.float32
    assert np.all(np.isfinite(actual))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_step_matches_scan():
    u, delta, A, B, C, D = (a.astype("float32") for a in scan_inputs(30, None))
    expected = ops.convert_to_numpy(selective_scan(u, delta, A, B, C, D))
    state = np.zeros((u.shape[0],) + A.shape, "float32")
    for t in range(u.shape[1]):
        y_t, state = selective_scan_step(u[:, t], delta[:, t], A, B[:, t], C[:, t], D, state)
        np.testing.assert_allclose(ops.convert_to_numpy(y_t), expected[:, t], atol=1e-5)


def gradients(objective, args):
    """d objective(*args) / d args on the backend, compiled where the backend compiles."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def grad(*tensors):
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                value = objective(*tensors)
            return tape.gradient(value, tensors)

        return [g.numpy() for g in grad(*(tf.constant(a) for a in args))]
    if backend == "jax":
        import jax

        return list(jax.jit(jax.grad(objective, argnums=tuple(range(len(args)))))(*args))
    import torch

    tensors = [torch.tensor(a, requires_grad=True) for a in args]
    objective(*tensors).backward()
    return [t.grad.numpy() for t in tensors]


# Backward layouts (batch rows per block, frames per chunk), None: whole. The default is the
# table's choice for this backend and device; the others are set for both device kinds.
LAYOUTS = {"default": None, "whole": (None, None), "rows 2 frames 5": (2, 5), "frames 5": (None, 5)}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("batch", [2, 3])
def test_scan_gradient_matches_float64_finite_differences(batch, layout, monkeypatch):
    """16 frames in chunks of 5: the last chunk is padded, as is the last block of rows."""
    if LAYOUTS[layout]:
        set_block_rows(monkeypatch, "BACKWARD_ROWS", LAYOUTS[layout][0])
        set_block_rows(monkeypatch, "BACKWARD_FRAMES", LAYOUTS[layout][1])
    args = [a.astype("float32") for a in scan_inputs(16, None, batch)]
    weights = np.random.default_rng(2).normal(size=args[0].shape)

    def objective(*tensors):
        return ops.sum(selective_scan(*tensors) * ops.convert_to_tensor(weights, "float32"))

    def reference(*arrays):
        return float((selective_scan_ref(*arrays) * weights).sum())

    eps = 1e-6
    for index, gradient in enumerate(gradients(objective, args)):
        expected = np.zeros(args[index].shape)
        for position in np.ndindex(args[index].shape):
            up, down = [a.astype(np.float64) for a in args], [a.astype(np.float64) for a in args]
            up[index][position] += eps
            down[index][position] -= eps
            expected[position] = (reference(*up) - reference(*down)) / (2 * eps)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(
            np.asarray(gradient), expected, rtol=1e-3, atol=1e-4 * scale, err_msg=f"arg {index}"
        )


@pytest.mark.parametrize(
    "name", ["mamba_standard", "mamba_production", "jamba_standard", "jamba_production"]
)
def test_shipped_preset_logits_equal_those_of_the_reference_scan(name, monkeypatch):
    """A trained preset's logits, the scan's contract where it matters: within 1e-5 of the same
    model with the float64 oracle in place of the scan."""
    from exphil_keras import zoo
    from exphil_keras.backbones import mamba
    from exphil_keras.policy import example_batch

    model = zoo.load(name, compile=False)
    inputs, _ = example_batch(model, 3, seed=1)
    actual = {head: ops.convert_to_numpy(t) for head, t in model(inputs).items()}

    def oracle(*args):
        return ops.convert_to_tensor(
            selective_scan_ref(*(ops.convert_to_numpy(a) for a in args)), "float32"
        )

    monkeypatch.setattr(mamba, "selective_scan", oracle)
    for head, logits in model(inputs).items():
        expected = ops.convert_to_numpy(logits)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(actual[head], expected, rtol=1e-5, atol=1e-5 * scale)
