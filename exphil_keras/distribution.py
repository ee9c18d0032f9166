"""Data-parallel training on the engines that exist: `keras.distribution` on JAX, `tf.distribute`
on TensorFlow. Nothing here moves a tensor itself.

`--batch-size` stays the global batch: each of N devices gets batch / N windows of every step and
the gradients are averaged, so N devices follow the one-device run step for step at the same
learning rate. To use N times the batch instead, pass `--batch-size` N times larger and raise
`--lr` (linearly, with warmup, is the usual start).

Devices: every local GPU; with none, the CPU split into the virtual devices that
`XLA_FLAGS=--xla_force_host_platform_device_count=N` asks JAX for (TensorFlow is given the same
number of logical CPUs), which is how the tests run it. Several hosts: JAX reads
`KERAS_DISTRIBUTION_JOB_ADDRESSES`, `KERAS_DISTRIBUTION_NUM_PROCESSES` and
`KERAS_DISTRIBUTION_PROCESS_ID` (`keras.distribution.initialize`); TensorFlow reads `TF_CONFIG`
(`MultiWorkerMirroredStrategy`).
"""

from __future__ import annotations

import contextlib
import os
import re

MODES = ("none", "data-parallel")


def virtual_cpu_count() -> int:
    """The CPU device count that XLA_FLAGS asks for (1 when it asks for none)."""
    flags = os.environ.get("XLA_FLAGS", "")
    match = re.search(r"--xla_force_host_platform_device_count=(\d+)", flags)
    return int(match.group(1)) if match else 1


def scope(mode: str):
    """(context to build and compile the model in, number of replicas) for `mode`; `fit`
    runs outside it, on the strategy the model was built under.

    Call it before anything runs on the backend: TensorFlow fixes its devices at first use.
    """
    if mode == "none":
        return contextlib.nullcontext(), 1
    if mode != "data-parallel":
        raise ValueError(f"unknown --distribute {mode!r}; choose one of {', '.join(MODES)}")
    import keras  # here, not at the top: the CLI reads MODES without starting a backend

    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_data_parallel()
    if backend == "tensorflow":
        return _tensorflow_mirrored()
    raise ValueError(
        f"--distribute data-parallel runs on the jax and tensorflow backends, not {backend}"
    )


def _jax_data_parallel():
    import keras

    if "KERAS_DISTRIBUTION_JOB_ADDRESSES" in os.environ:
        keras.distribution.initialize()
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return contextlib.nullcontext(), len(devices)


def _tensorflow_mirrored():
    import tensorflow as tf

    if "TF_CONFIG" in os.environ:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif tf.config.list_physical_devices("GPU"):
        strategy = tf.distribute.MirroredStrategy()
    else:
        count = virtual_cpu_count()
        if count > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * count
            )
        devices = [device.name for device in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    return strategy.scope(), strategy.num_replicas_in_sync
