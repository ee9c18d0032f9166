"""Mamba: selective state-space blocks (Gu & Dao 2023), `forward` and one-frame `step` side by side.

in_proj -> (x, z); x -> causal depthwise conv -> SiLU -> x_proj -> (dt, B, C); dt -> dt_proj ->
softplus; selective scan with A = -exp(A_log) and D skip; * SiLU(z) -> out_proj. The streaming
state is the conv's last `conv_size - 1` inputs and the SSM state [B, expand * H, state_size].
"""

import math

import keras
from keras import ops

from exphil_keras.backbones.residual import ResidualBackbone
from exphil_keras.ops import selective_scan, selective_scan_step


def _a_log_initializer(shape, dtype=None):
    """S4D-real: A_n = -(n + 1) for every channel."""
    return ops.log(ops.tile(ops.arange(1, shape[-1] + 1, dtype=dtype)[None, :], (shape[0], 1)))


def _dt_bias_initializer(shape, dtype=None, dt_min=1e-3, dt_max=0.1):
    """softplus^-1 of dt ~ log-uniform [dt_min, dt_max]: the scan starts at useful time scales."""
    log_dt = keras.random.uniform(shape, math.log(dt_min), math.log(dt_max), dtype=dtype)
    dt = ops.exp(log_dt)
    return dt + ops.log(-ops.expm1(-dt))


class MambaBlock(keras.layers.Layer):
    """The Mamba mixer of `mamba_simple.py`: [B, T, H] -> [B, T, H], causal."""

    def __init__(self, hidden_size, state_size=16, expand=2, conv_size=4, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.state_size = state_size
        self.expand = expand
        self.conv_size = conv_size
        self.inner_size = expand * hidden_size
        self.dt_rank = math.ceil(hidden_size / 16)
        self.in_projection = keras.layers.Dense(2 * self.inner_size, use_bias=False, name="in_proj")
        self.x_projection = keras.layers.Dense(
            self.dt_rank + 2 * state_size, use_bias=False, name="x_proj"
        )
        self.dt_projection = keras.layers.Dense(self.inner_size, use_bias=False, name="dt_proj")
        self.out_projection = keras.layers.Dense(hidden_size, use_bias=False, name="out_proj")

    def build(self, input_shape):
        inner_shape = tuple(input_shape[:-1]) + (self.inner_size,)
        self.in_projection.build(input_shape)
        self.x_projection.build(inner_shape)
        self.dt_projection.build(tuple(input_shape[:-1]) + (self.dt_rank,))
        self.out_projection.build(inner_shape)
        bound = 1.0 / math.sqrt(self.conv_size)  # PyTorch's Conv1d default
        self.conv_kernel = self.add_weight(
            (self.conv_size, self.inner_size),
            keras.initializers.RandomUniform(-bound, bound),
            name="conv_kernel",
        )
        self.conv_bias = self.add_weight((self.inner_size,), "zeros", name="conv_bias")
        self.dt_bias = self.add_weight((self.inner_size,), _dt_bias_initializer, name="dt_bias")
        self.A_log = self.add_weight(
            (self.inner_size, self.state_size), _a_log_initializer, name="A_log"
        )
        self.D = self.add_weight((self.inner_size,), "ones", name="D")

    def _conv(self, frames):
        """Causal depthwise conv; frames[k] [B, ..., E] is the input conv_size-1-k steps back."""
        kernel, bias = (ops.cast(w, frames[0].dtype) for w in (self.conv_kernel, self.conv_bias))
        return sum(frame * kernel[k] for k, frame in enumerate(frames)) + bias

    def _ssm_inputs(self, u):
        """u [..., E] -> the input-dependent delta [..., E], B, C [..., N]; and A [E, N]."""
        dt, B, C = ops.split(
            self.x_projection(u), [self.dt_rank, self.dt_rank + self.state_size], axis=-1
        )
        dt = self.dt_projection(dt)
        delta = ops.softplus(dt + ops.cast(self.dt_bias, dt.dtype))
        return delta, B, C, -ops.exp(ops.cast(self.A_log, "float32"))

    def call(self, x):
        x, z = ops.split(self.in_projection(x), 2, axis=-1)
        padded = ops.pad(x, [[0, 0], [self.conv_size - 1, 0], [0, 0]])
        last = self.conv_size - 1
        frames = [padded[:, k : (k - last) or None] for k in range(self.conv_size)]
        u = ops.silu(self._conv(frames))
        delta, B, C, A = self._ssm_inputs(u)
        y = ops.cast(selective_scan(u, delta, A, B, C, self.D), z.dtype)
        return self.out_projection(y * ops.silu(z))

    def initial_state(self, batch_size):
        """Conv tail [B, conv_size - 1, E] and SSM state [B, E, N], zeros."""
        return [
            ops.zeros((batch_size, self.conv_size - 1, self.inner_size), self.compute_dtype),
            ops.zeros((batch_size, self.inner_size, self.state_size), "float32"),
        ]

    def step(self, x_t, state):
        conv_tail, ssm_state = state
        x_t, z_t = ops.split(self.in_projection(x_t), 2, axis=-1)
        window = ops.concatenate([conv_tail, x_t[:, None]], axis=1)
        u_t = ops.silu(self._conv([window[:, k] for k in range(self.conv_size)]))
        delta, B, C, A = self._ssm_inputs(u_t)
        y_t, ssm_state = selective_scan_step(u_t, delta, A, B, C, self.D, ssm_state)
        y_t = self.out_projection(ops.cast(y_t, z_t.dtype) * ops.silu(z_t))
        return y_t, [window[:, 1:], ssm_state]


@keras.saving.register_keras_serializable(package="exphil_keras")
class MambaBackbone(ResidualBackbone):
    """`num_layers` residual Mamba blocks (d_state `state_size`, expansion `expand`)."""

    def __init__(
        self, hidden_size=256, num_layers=2, state_size=16, expand=2, conv_size=4, **kwargs
    ):
        mixers = [
            MambaBlock(hidden_size, state_size, expand, conv_size, name=f"mamba_{i}")
            for i in range(num_layers)
        ]
        super().__init__(mixers, **kwargs)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.state_size = state_size
        self.expand = expand
        self.conv_size = conv_size

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_size": self.hidden_size,
                "num_layers": self.num_layers,
                "state_size": self.state_size,
                "expand": self.expand,
                "conv_size": self.conv_size,
            }
        )
        return config
