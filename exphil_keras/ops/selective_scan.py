"""Mamba's selective scan: h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, y_t = C_t . h_t + D u_t.

The windowed scan loops the streaming step's state update over the frames in float32, by (a, b)
pairs (never a ratio of cumulative products, which underflows for long T or large dt). Its
gradient is written out: the adjoint g_t = dL/dh_t follows the same linear recurrence backwards,
g_t = C_t dy_t + a_{t+1} g_{t+1}, so the backward pass is one more loop over the frames instead of
the autodiff of a loop, which TensorFlow runs 90x slower than the forward under XLA and which
re-stacks every intermediate on all backends. `selective_scan_ref` is the tests' float64 oracle.
"""

import keras
import numpy as np
from keras import ops


def _scan(step, initializer, frames, reverse=False):
    """`tf.scan`'s contract on every backend: `step(previous outputs, frame) -> outputs`, the
    outputs of every frame stacked along axis 0 (in the frames' order, also when `reverse`)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.scan(step, frames, initializer=initializer, reverse=reverse)

    def carried(previous, frame):
        outputs = step(previous, frame)
        return outputs, outputs

    return ops.scan(carried, initializer, frames, reverse=reverse)[1]


def _next_state(u, delta, A, B, state):
    """h_t of h_{t-1} = `state` [B, E, N], zero-order hold: exp(dt A) h_{t-1} + dt B u."""
    return ops.exp(delta[..., None] * A) * state + (delta * u)[..., None] * B[..., None, :]


def selective_scan_step(u, delta, A, B, C, D, state):
    """`selective_scan` for a frame: u, delta [B, E], B, C [B, N], state [B, E, N] -> (y, state)."""
    u, delta, A, B, C, D = (ops.cast(t, "float32") for t in (u, delta, A, B, C, D))
    state = _next_state(u, delta, A, B, state)
    return ops.einsum("ben,bn->be", state, C) + D * u, state


def selective_scan(u, delta, A, B, C, D):
    """y [B, T, E] of u, delta [B, T, E], A [E, N], B, C [B, T, N], D [E]; computed in float32."""
    return _selective_scan(*(ops.cast(t, "float32") for t in (u, delta, A, B, C, D)))


@ops.custom_gradient
def _selective_scan(u, delta, A, B, C, D):
    u, delta, B, C = (ops.moveaxis(t, 1, 0) for t in (u, delta, B, C))  # time-major
    zeros = ops.zeros((ops.shape(u)[1],) + tuple(A.shape), "float32")
    states = _scan(  # h_t [T, B, E, N]
        lambda state, frame: _next_state(frame[0], frame[1], A, frame[2], state),
        zeros,
        (u, delta, B),
    )
    y = ops.einsum("tben,tbn->tbe", states, C) + D * u

    def backward(*args, upstream=None):
        dy = ops.moveaxis(args[0] if upstream is None else upstream, 1, 0)
        previous = ops.concatenate([zeros[None], states[:-1]], axis=0)  # h_{t-1}

        def adjoint(later, frame):
            u_t, delta_t, B_t, C_t, dy_t, h_previous = frame
            a = ops.exp(delta_t[..., None] * A)
            g = later[0] + dy_t[..., None] * C_t[:, None]  # dL/dh_t
            through_a = g * h_previous * a  # dL/d(delta_t A), per (e, n)
            return (
                a * g,  # carried to frame t - 1
                ops.einsum("ben,bn->be", g, B_t),
                ops.sum(through_a * A, axis=-1),
                ops.einsum("ben,be->bn", g, delta_t * u_t),
                ops.einsum("ben,be->en", through_a, delta_t),
            )

        batch, inner, state = ops.shape(zeros)
        start = (
            zeros,
            ops.zeros((batch, inner), "float32"),
            ops.zeros((batch, inner), "float32"),
            ops.zeros((batch, state), "float32"),
            ops.zeros((inner, state), "float32"),
        )
        _, g_b, d_delta_a, d_B, d_A = _scan(
            adjoint, start, (u, delta, B, C, dy, previous), reverse=True
        )
        gradients = (
            delta * g_b + D * dy,  # u
            d_delta_a + u * g_b,  # delta
            ops.sum(d_A, axis=0),  # A
            d_B,
            ops.einsum("tben,tbe->tbn", states, dy),  # C
            ops.sum(dy * u, axis=(0, 1)),  # D
        )
        return tuple(ops.moveaxis(g, 0, 1) if len(g.shape) == 3 else g for g in gradients)

    return ops.moveaxis(y, 0, 1), backward


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
