"""Mamba's selective scan: h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, y_t = C_t . h_t + D u_t.

The windowed scan loops the streaming step's state update over the frames in float32, by (a, b)
pairs (never a ratio of cumulative products, which underflows for long T or large dt). Its
gradient is written out: the adjoint g_t = dL/dh_t follows the same linear recurrence backwards,
g_t = C_t dy_t + a_{t+1} g_{t+1}, so the backward pass is one more loop over the frames instead of
the autodiff of a loop, which TensorFlow runs 90x slower than the forward under XLA.

The scan is memory-bound: each frame touches a [batch, E, N] state, 1 GB over a production window.
So on a CPU the batch is cut into blocks of rows, and each block runs its frames with a state
that stays in cache; 16 rows (1 MB at E 512, N 32) is also enough work per frame for XLA to
split each frame's operations across the CPU's threads, which 2 rows is not. The forward keeps
no state; the backward recomputes one block's states, then runs its adjoint. The state is laid
out [rows, N, E], so the per-frame sums over N run along E.
`selective_scan_ref` is the tests' float64 oracle.
"""

import keras
import numpy as np
from keras import ops

from exphil_keras.ops.compiled import device_kind

# Batch rows per block by (backend, device kind), measured with batch 256 x 60 frames on an idle
# machine (docs/ARCHITECTURES.md, "Training throughput"); absent, or no more rows than that in
# the batch: the whole batch is one block, which a GPU runs in parallel. Torch, eager, would
# multiply its per-op dispatch with small blocks (not measured). TensorFlow's forward is also in
# the exported graphs (SavedModel, ONNX), which cannot hold an XLA cluster and where blocks would
# run op by op: one block there; its backward is compiled, in blocks. (Training a scanning model
# on a TensorFlow CPU is one XLA program, where forward blocks of 16 rows gained nothing.)
FORWARD_ROWS = {("jax", "cpu"): 16}
BACKWARD_ROWS = {("jax", "cpu"): 16, ("tensorflow", "cpu"): 2}
# Frames per chunk of the backward (`_block_gradients`); absent: the whole window is one chunk.
BACKWARD_FRAMES = {}


def _rows(table):
    """The table's entry for this backend on its device kind ("cpu" or "gpu"), or None."""
    return table.get((keras.backend.backend(), device_kind()))


def _scan(step, carry, frames, reverse=False):
    """`jax.lax.scan`'s contract: `step(carry, frame) -> (carry, output)`; returns the last carry
    and the outputs stacked along axis 0 in the frames' order. Keras's TensorFlow scan stacks only
    outputs shaped like the carry, so TensorFlow gets its own loop (which XLA compiles)."""
    if keras.backend.backend() != "tensorflow":
        return ops.scan(step, carry, frames, reverse=reverse)
    import tensorflow as tf

    frames = tf.nest.map_structure(tf.convert_to_tensor, frames)
    flat = tf.nest.flatten(frames)
    length = tf.shape(flat[0])[0]
    inputs = [tf.TensorArray(f.dtype, length, element_shape=f.shape[1:]).unstack(f) for f in flat]
    # Traced once for the outputs' structure; XLA drops these unused ops.
    example = step(carry, tf.nest.map_structure(lambda f: f[0], frames))[1]
    outputs = [
        tf.TensorArray(o.dtype, length, element_shape=o.shape) for o in tf.nest.flatten(example)
    ]

    def body(i, carry, outputs):
        frame = tf.nest.pack_sequence_as(frames, [a.read(i) for a in inputs])
        carry, output = step(carry, frame)
        outputs = [a.write(i, o) for a, o in zip(outputs, tf.nest.flatten(output), strict=True)]
        return i - 1 if reverse else i + 1, carry, outputs

    _, carry, outputs = tf.while_loop(
        lambda i, *_: i >= 0 if reverse else i < length,
        body,
        (length - 1 if reverse else 0, carry, outputs),
    )
    return carry, tf.nest.pack_sequence_as(example, [a.stack() for a in outputs])


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


def _decayed(A, delta_t, state):
    """exp(dt_t A) * state, the [rows, N, E] state carried one frame (A is [N, E] here)."""
    return ops.exp(delta_t[:, None, :] * A) * state


def _advanced(A, state, delta_t, x_t, B_t):
    """h_t of h_{t-1} = `state` [rows, N, E]: exp(dt_t A) h_{t-1} + x_t B_t."""
    return _decayed(A, delta_t, state) + x_t[:, None, :] * B_t[:, :, None]


def _block_outputs(A, delta, x, B, C):
    """y - D u of a block: delta, x = delta * u [T, rows, E], B, C [T, rows, N] -> [T, rows, E]."""

    def frame(state, inputs):
        delta_t, x_t, B_t, C_t = inputs
        state = _advanced(A, state, delta_t, x_t, B_t)
        return state, ops.einsum("bne,bn->be", state, C_t)

    zeros = ops.zeros((ops.shape(x)[1],) + tuple(ops.shape(A)), "float32")
    return _scan(frame, zeros, (delta, x, B, C))[1]


def _chunk_gradients(A, start, carry, delta, x, B, C, dy):
    """The adjoint over one chunk of frames [T, rows, ...] from its first state `start` and the
    adjoint `carry` = (a_{t+1} g_{t+1}, dL/dA so far) coming from the later frames: returns the
    carry at the chunk's start and dL/dx, dL/ddelta through the decay [T, rows, E], dL/dB,
    dL/dC [T, rows, N]."""

    def frame(state, inputs):
        state = _advanced(A, state, *inputs)
        return state, state

    states = _scan(frame, start, (delta, x, B))[1]  # this chunk's h_t

    def adjoint(carry, inputs):
        later, d_A = carry  # later = a_{t+1} g_{t+1}
        h, delta_t, x_t, B_t, C_t, dy_t = inputs
        g = later + dy_t[:, None, :] * C_t[:, :, None]  # dL/dh_t
        # a_t h_{t-1} = h_t - x_t B_t: the gradient through the decay needs no stored h_{t-1}.
        through_a = g * (h - x_t[:, None, :] * B_t[:, :, None])  # dL/d(delta_t A)
        outputs = (
            ops.einsum("bne,bn->be", g, B_t),
            ops.sum(through_a * A, axis=1),
            ops.einsum("bne,be->bn", g, x_t),
            ops.einsum("bne,be->bn", h, dy_t),
        )
        # dL/dA accumulates per row, elementwise: a sum over rows every frame costs more.
        return (_decayed(A, delta_t, g), d_A + through_a * delta_t[:, None, :]), outputs

    return _scan(adjoint, carry, (states, delta, x, B, C, dy), reverse=True)


def _block_gradients(A, delta, x, B, C, dy, frames=None):
    """dL/dx, dL/ddelta through the decay [T, rows, E], dL/dB, dL/dC [T, rows, N], dL/dA [N, E].

    With `frames`, the window is cut into chunks of that many frames: a first loop keeps only
    each chunk's first state, and the backward recomputes one chunk's states at a time, so a
    block holds T / frames + frames states instead of T, for one more forward loop."""
    zeros = ops.zeros((ops.shape(x)[1],) + tuple(ops.shape(A)), "float32")
    tensors = (delta, x, B, C, dy)
    if frames is None:
        (_, d_A), outputs = _chunk_gradients(A, zeros, (zeros, zeros), *tensors)
        return outputs, ops.sum(d_A, axis=0)
    length = ops.shape(x)[0]
    # Later zero frames: a decay of 1, no input, no gradient.
    chunks = [
        ops.reshape(_padded(t, frames), (-1, frames) + tuple(ops.shape(t)[1:])) for t in tensors
    ]

    def frame(state, inputs):
        return _advanced(A, state, *inputs), ()

    def first_states(state, inputs):
        return _scan(frame, state, inputs)[0], state

    starts = _scan(first_states, zeros, tuple(chunks[:3]))[1]

    def chunk(carry, inputs):
        return _chunk_gradients(A, inputs[0], carry, *inputs[1:])

    (_, d_A), outputs = _scan(chunk, (zeros, zeros), (starts, *chunks), reverse=True)
    outputs = tuple(ops.reshape(t, (-1,) + tuple(ops.shape(t)[2:]))[:length] for t in outputs)
    return outputs, ops.sum(d_A, axis=0)


def _padded(t, multiple):
    """`t` with zeros appended along axis 0 up to a multiple of `multiple` entries."""
    padding = (-ops.shape(t)[0]) % multiple
    return ops.pad(t, [[0, padding]] + [[0, 0]] * (len(t.shape) - 1))


def _by_blocks(function, tensors, total, rows):
    """`function(*time-major block tensors) -> (outputs [T, rows, ...], term)` run block by block
    over `tensors` [B, T, ...] in blocks of `rows` (None: one block): returns the outputs as
    [B, T, ...] and `total` plus every term. A block is `rows` consecutive rows, turned
    time-major inside the loop, where it fits in cache: the whole tensors are never transposed."""

    def batch_major(*tensors):
        """`function` of [rows, T, ...] tensors, its outputs [rows, T, ...]."""
        outputs, term = function(*(ops.swapaxes(t, 0, 1) for t in tensors))
        return tuple(ops.swapaxes(t, 0, 1) for t in outputs), term

    batch = ops.shape(tensors[0])[0]
    # One block also when a block would hold the whole batch, and for a JAX export (jax2tf),
    # whose symbolic batch size cannot be cut into blocks.
    one_block = rows is None or (
        batch <= rows if isinstance(batch, int) else keras.backend.backend() == "jax"
    )
    if one_block:
        outputs, term = batch_major(*tensors)
        return outputs, total + term
    # Zero rows: zero states, outputs, gradients. [B, T, ...] -> [B / rows, rows, T, ...].
    blocks = [ops.reshape(_padded(t, rows), (-1, rows) + tuple(ops.shape(t)[1:])) for t in tensors]

    def block(total, inputs):
        outputs, term = batch_major(*inputs)
        return total + term, outputs

    total, outputs = _scan(block, total, tuple(blocks))
    outputs = tuple(ops.reshape(t, (-1,) + tuple(ops.shape(t)[2:]))[:batch] for t in outputs)
    return outputs, total


def _compiled(function):
    """`function` compiled by XLA on TensorFlow for a training step that is not (tf.distribute,
    jit_compile=False), where these loops would run op by op, several times slower; inside an
    XLA step it is inlined. JAX compiles the whole training step already; torch runs eagerly."""
    if keras.backend.backend() != "tensorflow":
        return function
    import tensorflow as tf

    return tf.function(function, jit_compile=True, reduce_retracing=True, autograph=False)


def _outputs(A, delta, x, B, C):
    """y - D u [B, T, E] of the scan, A [N, E]; the forward sums nothing (a zero for its term)."""

    def block(*tensors):
        return (_block_outputs(A, *tensors),), 0.0

    rows = _rows(FORWARD_ROWS)
    return _by_blocks(block, (delta, x, B, C), 0.0, rows)[0][0]


@_compiled
def _gradients(A, delta, x, B, C, dy):
    """dL/dx, dL/ddelta through the decay, dL/dB, dL/dC, dL/dA [N, E] of upstream `dy`."""
    rows, frames = _rows(BACKWARD_ROWS), _rows(BACKWARD_FRAMES)
    outputs, d_A = _by_blocks(
        lambda *t: _block_gradients(A, *t, frames=frames),
        (delta, x, B, C, dy),
        ops.zeros_like(A),
        rows,
    )
    return outputs + (d_A,)


@ops.custom_gradient
def _selective_scan(u, delta, A, B, C, D):
    A_ne = ops.transpose(A)
    x = delta * u

    def backward(*args, upstream=None):
        dy = args[0] if upstream is None else upstream
        d_x, d_delta_a, d_B, d_C, d_A = _gradients(A_ne, delta, x, B, C, dy)
        return (
            delta * d_x + D * dy,  # u
            d_delta_a + u * d_x,  # delta
            ops.transpose(d_A),
            d_B,
            d_C,
            ops.sum(dy * u, axis=(0, 1)),  # D
        )

    return _outputs(A_ne, delta, x, B, C) + D * u, backward


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
