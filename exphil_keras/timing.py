"""Decision and benchmark timing: the one-thread setting the 60 FPS budget is measured under,
and the median / p99 / max that every report gives. Shared by the agent's play-replay report,
`exphil bench` and bench/latency.py."""

from __future__ import annotations

import time

import numpy as np

# One CPU thread for every library: the frame budget is one thread's (set before the import).
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
}


def spread(ms) -> dict:
    """Median, p99 and max of times in milliseconds."""
    ms = np.asarray(ms, np.float64)
    return {
        "median": float(np.median(ms)),
        "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()),
    }


def timings_ms(function, repeats: int, warmup: int = 10) -> dict:
    """The spread of `function()`'s wall time in milliseconds, after `warmup` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return spread(np.asarray(times) * 1e3)


def one_thread_backend():
    """Pins the Keras backend to one thread and returns `ready(tree)`, which waits until the
    tree's arrays are computed (JAX dispatches asynchronously; the others return computed)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if keras.backend.backend() == "jax":
        import jax

        return jax.block_until_ready
    return lambda tree: tree
