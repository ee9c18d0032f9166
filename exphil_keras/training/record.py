"""What a finished run records in its preset: where it ran, its peak memory, and the figures of
`exphil eval` on the validation windows beside the baselines trained on its own games."""

from __future__ import annotations

import os
import platform

import keras
import tensorflow as tf
import tensorflow_datasets as tfds

from exphil_keras import baselines


def device() -> str:
    """Where training ran: the backend and the GPUs, or the CPU cores."""
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    where = ", ".join(gpus) if gpus else f"CPU, {os.cpu_count()} cores ({platform.machine()})"
    return f"{keras.backend.backend()} backend, {where}"


def peak_device_memory() -> int | None:
    """Peak bytes in use on the first GPU (None on CPU)."""
    if keras.backend.backend() == "jax":
        import jax

        first = jax.local_devices()[0]
        stats = first.memory_stats() if first.platform == "gpu" else None
        return stats.get("peak_bytes_in_use") if stats else None
    if tf.config.list_physical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    return None


def markov1_tables(train_windows: tf.data.Dataset, stride: int) -> baselines.Markov1:
    """Markov-1 counts over the training windows; the last `stride` positions of each window
    are each frame exactly once (stride = window // 2)."""
    markov = baselines.Markov1()
    for inputs, targets in tfds.as_numpy(train_windows.batch(1024)):
        markov.update(
            inputs["prev_input"][:, -stride:], {h: v[:, -stride:] for h, v in targets.items()}
        )
    return markov


def last_position_figures(model, validation: tf.data.Dataset, markov: baselines.Markov1) -> dict:
    """`exphil eval`'s figures on the validation windows: the model's per-head NLL and accuracy
    at the last position, where the baselines are scored (Keras's accuracies average every
    position)."""
    last_frames = baselines.LastFrames()
    for inputs, targets in tfds.as_numpy(validation.batch(1024)):
        # `predict`, not `predict_on_batch`: under tf.distribute the latter returns every
        # replica's copy of the batch.
        scored = model.with_targets(inputs, targets)  # autoregressive heads: teacher-forced
        logits = model.predict(scored, batch_size=len(inputs["prev_input"]), verbose=0)
        last_frames.add(inputs, targets, logits)
    return last_frames.result(markov)
