"""Learning-rate schedules: ExPhil's constant, cosine and cosine-with-restarts, after a linear
warmup, counted in batches."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="exphil_keras")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to the peak rate, then `after` (a schedule counted from the warmup's end)."""

    def __init__(self, peak, warmup_steps, after):
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.after = after

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = self.peak * (step + 1.0) / max(self.warmup_steps, 1)
        return keras.ops.where(step < self.warmup_steps, warm, self.after(step - self.warmup_steps))

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "after": keras.saving.serialize_keras_object(self.after),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "after": keras.saving.deserialize_keras_object(config["after"])})


def learning_rate(config, steps_per_epoch: int):
    """The schedule over the run, counted in batches: Keras steps it at every batch, also those
    that only accumulate gradients (`warmup_steps` counts optimizer updates)."""
    total = max(config.epochs * steps_per_epoch, 1)
    warmup = config.warmup_steps * config.grad_accumulation
    decay_steps = max(total - warmup, 1)
    peak = config.learning_rate
    after = {
        "constant": lambda: keras.optimizers.schedules.PolynomialDecay(peak, decay_steps, peak),
        "cosine": lambda: keras.optimizers.schedules.CosineDecay(peak, decay_steps),
        "cosine_restarts": lambda: keras.optimizers.schedules.CosineDecayRestarts(
            peak, max(decay_steps // 8, 1)
        ),
    }[config.schedule]()
    return WarmupSchedule(peak, warmup, after) if warmup else after


def optimizer(config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam on the schedule, with the run's EMA and gradient accumulation."""
    return keras.optimizers.Adam(
        learning_rate(config, steps_per_epoch),
        use_ema=bool(config.ema),
        ema_momentum=config.ema or 0.99,
        gradient_accumulation_steps=config.grad_accumulation
        if config.grad_accumulation > 1
        else None,
    )
