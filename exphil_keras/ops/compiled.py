"""One compiled entry point per backend for inference functions of a Keras layer (the step),
and the kind of device the backend computes on (what per-device choices are keyed by)."""

import functools

import keras


@functools.cache
def device_kind() -> str:
    """ "gpu" when the Keras backend computes on a GPU, else "cpu" (fixed for a process)."""
    if keras.backend.backend() == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return keras.distribution.list_devices()[0].split(":")[0]


def compile_function(function, layer=None):
    """`function(*args)` compiled for the backend, reading built `layer`'s weights at each call.

    TensorFlow: an XLA `tf.function` (variables are read live). JAX: `jax.jit` of a stateless
    version that takes the weights as arguments, so training or loading weights later is seen
    (a plain `jax.jit` would freeze them as constants). Torch: eager under `no_grad`.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, jit_compile=True, reduce_retracing=True)
    if backend == "jax":
        import jax

        if layer is None:
            return jax.jit(function)

        variables = layer.variables  # fixed once built; walking the layers costs 30 us a call

        def stateless(weights, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, weights, strict=True))):
                return function(*args)

        jitted = jax.jit(stateless)
        return lambda *args: jitted([v.value for v in variables], *args)
    if backend == "torch":
        import torch

        def without_grad(*args):
            with torch.no_grad():
                return function(*args)

        return without_grad
    return function
