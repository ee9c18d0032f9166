"""Training: a `TrainConfig` (ExPhil's recipes and flags) -> a fitted policy, written as a preset.

Reads top to bottom: check the config and the run folder, the data, the model (compiled once),
the callbacks, `fit`, then the best weights scored and written to OUTPUT/preset. Running the same
command again resumes an interrupted run from its last finished epoch (`BackupAndRestore`),
reports a finished one, and trains it further from its best weights if `--epochs` grew.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path

import keras

from exphil_keras import distribution, features, policy, zoo
from exphil_keras.training import callbacks, record, run, schedules
from exphil_keras.training.config import TrainConfig
from exphil_keras.training.data import training_data, windows

__all__ = ["TrainConfig", "train"]


def train(config: TrainConfig) -> dict:
    """Fit a policy per `config`; returns the written preset's metadata."""
    # === Config and run folder ===
    config.check()
    if config.fine_tune:
        config = _with_the_architecture_of(config.fine_tune, config)
    context, replicas = distribution.scope(config.distribute)  # before the backend's first op
    _check_devices(config, replicas)  # before the run folder: a refused run records nothing
    output = Path(config.output)
    state = run.prepare(config)
    if state.finished:
        print(f"{output} is a finished run ({state.epochs_done} epochs); its preset: "
              f"{output / 'preset'} (more --epochs trains it further)")  # fmt: skip
        return zoo.info(output / "preset")
    keras.utils.set_random_seed(config.seed)

    # === Data ===
    data = training_data(config)

    # === Model, compiled once ===
    with context:
        if config.fine_tune:
            model = zoo.load(config.fine_tune, compile=False)
            model.label_smoothing = config.label_smoothing  # a training knob, not the preset's
        else:
            model = policy.PolicyModel(
                backbone=config.backbone,
                window=config.window,
                hidden_size=config.hidden_size,
                num_layers=config.num_layers,
                state_size=config.state_size,
                expand=config.expand,
                label_smoothing=config.label_smoothing,
                heads=config.heads,
            )
        model.compile(
            optimizer=schedules.optimizer(config, data.steps_per_epoch), jit_compile="auto"
        )
    best = output / "best.keras"
    if state.epochs_done and best.exists():  # a finished run trained further: from its best
        model.set_weights(keras.saving.load_model(best, compile=False).get_weights())
        model.optimizer.iterations.assign(state.epochs_done * data.steps_per_epoch)

    # === Fit ===
    run_callbacks = callbacks.RunCallbacks(config, output)
    model.fit(
        data.train,
        steps_per_epoch=data.steps_per_epoch,
        epochs=config.epochs,
        initial_epoch=state.epochs_done,
        validation_data=data.validation,
        callbacks=run_callbacks.all,
        shuffle=False,  # shuffled by tf.data
    )
    epochs = run_callbacks.run_log.finished_epochs(config.epochs)
    run_callbacks.raise_on_nan()

    # === The best weights, scored and written as the preset ===
    if best.exists():
        model.set_weights(keras.saving.load_model(best, compile=False).get_weights())
    markov = record.markov1_tables(data.train_windows(), data.stride)
    validation_windows = windows(data.builder, "validation")
    last_position = record.last_position_figures(model, validation_windows, markov)
    metadata = {
        "name": config.name or f"{config.backbone}_custom",
        "description": config.description
        or f"A {config.backbone} policy trained by `exphil train` (see training.json).",
        "backbone": config.backbone,
        "feature_version": features.FEATURE_VERSION,
        "window": config.window,
        "action_delay": config.action_delay,
        "frame_delay": config.frame_delay,
        "heads": model.head_kind,
        "learning_rate": config.learning_rate,
        "validation": {
            "last_loss": last_position["loss"],  # the best epoch's val_last_loss, in float64
            "last_position": {k: last_position[k] for k in ("loss", "frames", "heads")},
            "baselines": last_position["baselines"],
        },
    }
    training = {
        **dataclasses.asdict(config),
        "command": config.command or shlex.join(sys.argv),
        "data": {
            "dataset": f"slippi_windows/{data.builder.builder_config.name}",
            "train_games": data.games,
            "train_frames": sum(g["frames"] for g in data.games.values()),
        },
        "epochs_run": len(epochs),
        "best_epoch": run_callbacks.best_epoch(),
        "wall_seconds": round(sum(e["seconds"] for e in epochs), 1),
        "device": record.device(),
        "replicas": replicas,
        "throughput": [e["throughput"] for e in epochs],
        "peak_device_memory_bytes": record.peak_device_memory(),
        "history": run_callbacks.run_log.history(),
    }
    return zoo.save(model, output / "preset", metadata, training, markov)


def _with_the_architecture_of(preset, config: TrainConfig) -> TrainConfig:
    """`config` with the preset's architecture, window and delays (what its weights need)."""
    architecture, metadata = zoo.architecture(preset), zoo.info(preset)
    return dataclasses.replace(
        config,
        **{key: architecture[key] for key in ARCHITECTURE_FIELDS},
        heads=architecture.get("heads", "independent"),  # configs before heads existed lack it
        action_delay=metadata["action_delay"],
        frame_delay=metadata["frame_delay"],
    ).check()


ARCHITECTURE_FIELDS = ("backbone", "window", "hidden_size", "num_layers", "state_size", "expand")


def _check_devices(config: TrainConfig, replicas: int) -> None:
    if config.batch_size % replicas:
        raise ValueError(
            f"--batch-size {config.batch_size} does not divide over {replicas} devices"
        )
    if replicas > 1 and config.grad_accumulation > 1 and keras.backend.backend() == "tensorflow":
        raise ValueError(  # keras-team/keras#20582: merge_call inside the accumulation's cond
            "gradient accumulation under tf.distribute fails in Keras; use --backend jax, or "
            "a larger --batch-size instead of accumulating"
        )
