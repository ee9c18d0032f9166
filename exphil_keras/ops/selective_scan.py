"""Mamba's selective scan: h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, y_t = C_t . h_t + D u_t.

The windowed scan is `selective_scan_step` looped over the frames, so streaming equals the window
by construction. It recurs over (a, b) pairs in float32 (never a ratio of cumulative products,
which underflows for long T or large dt), in the time loop that `keras.backend.backend()` picks.
`selective_scan_ref` is the slow float64 numpy oracle of the tests.
"""

import keras
import numpy as np
from keras import ops


def _keras_loop(step, state, frames):
    """`keras.ops.scan`: lax.scan on JAX, a Python loop on torch."""
    return ops.scan(step, state, frames)[1]


def _tensorflow_loop(step, state, frames):
    """`tf.scan`: unlike `keras.ops.scan`'s, its gradient compiles under XLA (jit_compile=True)."""
    import tensorflow as tf

    _, outputs = tf.scan(
        lambda carried, frame: step(carried[0], frame),
        frames,
        initializer=(state, tf.zeros_like(state[..., 0])),  # y_t [B, E] of state [B, E, N]
    )
    return outputs


# The time loops each backend may use; the first is used. bench/latency.py times them all.
# The scan is one loop over frames of `selective_scan_step`, with no (a, b) or states stacked
# over T (tf.scan stacks its carry): on CPU at T = 60, D*N = 8192 that halves the time of
# stacking (a, b) first, and the sequential loop beats `lax.associative_scan` (0.8 vs 1.2 ms).
LOOPS = {
    "tensorflow": {"tf.scan": _tensorflow_loop},  # keras.ops.scan's outputs must match its carry
    "jax": {"lax.scan": _keras_loop},
    "torch": {"keras.ops.scan": _keras_loop},
}


def selective_scan_step(u, delta, A, B, C, D, state):
    """`selective_scan` for a frame: u, delta [B, E], B, C [B, N], state [B, E, N] -> (y, state)."""
    u, delta, A, B, C, D = (ops.cast(t, "float32") for t in (u, delta, A, B, C, D))
    a = ops.exp(delta[..., None] * A)  # zero-order hold
    b = (delta * u)[..., None] * B[..., None, :]
    state = a * state + b
    return ops.einsum("ben,bn->be", state, C) + D * u, state


def selective_scan(u, delta, A, B, C, D, loop=None):
    """y [B, T, E] of u, delta [B, T, E], A [E, N], B, C [B, T, N], D [E]; computed in float32.

    `selective_scan_step` over the frames, in the backend's loop (`loop` names one of
    `LOOPS[backend]`; the default is the first).
    """
    u, delta, A, B, C, D = (ops.cast(t, "float32") for t in (u, delta, A, B, C, D))
    loops = LOOPS.get(keras.backend.backend(), LOOPS["torch"])
    run = loops[loop] if loop else next(iter(loops.values()))

    def step(state, frame):
        y, state = selective_scan_step(frame[0], frame[1], A, frame[2], frame[3], D, state)
        return state, y

    state = ops.zeros((ops.shape(u)[0],) + tuple(A.shape), "float32")
    outputs = run(step, state, tuple(ops.moveaxis(t, 1, 0) for t in (u, delta, B, C)))
    return ops.moveaxis(outputs, 0, 1)


def selective_scan_ref(u, delta, A, B, C, D):
    """Float64 numpy loop over time, the tests' oracle for `selective_scan`."""
    u, delta, A, B, C, D = (np.asarray(t, np.float64) for t in (u, delta, A, B, C, D))
    state = np.zeros(u.shape[:1] + A.shape)
    ys = []
    for t in range(u.shape[1]):
        state = (
            np.exp(delta[:, t, :, None] * A) * state
            + (delta[:, t] * u[:, t])[..., None] * B[:, t, None, :]
        )
        ys.append(np.einsum("ben,bn->be", state, C[:, t]) + D * u[:, t])
    return np.stack(ys, axis=1)
