"""Training: ExPhil's presets and flags -> a fitted policy saved as a zoo preset folder.

`train(TrainConfig(...))` builds the `slippi_windows` dataset if needed, fits with TensorBoard
logs, best-by-validation checkpoints, resumable backups (`BackupAndRestore`: an interrupted run
continues from its last finished epoch when started again with the same `output`), early
stopping and a clear stop on NaN, then writes `output/preset` (a keras-hub preset folder).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf
import tensorflow_datasets as tfds

from exphil_keras import baselines, distribution, features, policy, zoo
from exphil_keras.datasets import slippi_windows

# ExPhil's training presets (DESIGN.md); explicit flags override them.
PRESETS = {
    "gpu_mlp_quick": dict(
        epochs=5, max_files=50, batch_size=256, hidden_size=128, backbone="mlp", num_layers=2,
        learning_rate=3e-4, schedule="cosine", warmup_steps=100,
    ),
    "gpu_standard": dict(
        epochs=20, max_files=100, batch_size=256, hidden_size=128, backbone="mamba", window=60,
        num_layers=2, learning_rate=1e-4, schedule="cosine", warmup_steps=500,
        label_smoothing=0.1, ema=0.999, patience=5,
    ),
    "production": dict(
        epochs=100, max_files=None, batch_size=256, hidden_size=256, backbone="mamba",
        window=60, num_layers=3, state_size=32, expand=2, learning_rate=1e-4,
        schedule="cosine_restarts", warmup_steps=2000, label_smoothing=0.1, ema=0.9995,
        grad_accumulation=4, patience=10,
    ),
}  # fmt: skip


@dataclasses.dataclass
class TrainConfig:
    replays: str | None = None  # folder of .slp files (the dataset is built from it if needed)
    data_dir: str | None = None  # TFDS data dir
    output: str = "runs/exphil"
    name: str | None = None  # preset name; default <backbone>_custom
    backbone: str = "mlp"
    window: int = 60
    hidden_size: int = 256
    num_layers: int = 2
    state_size: int = 16
    expand: int = 2
    epochs: int = 1
    batch_size: int = 256
    learning_rate: float = 3e-4
    schedule: str = "constant"  # constant | cosine | cosine_restarts
    warmup_steps: int = 0
    label_smoothing: float = 0.0
    ema: float | None = None  # EMA momentum (None or 0: off); validation and best.keras use it
    grad_accumulation: int = 1
    patience: int | None = None  # early stopping on validation last_loss
    action_delay: int = 1
    frame_delay: int = 0
    max_files: int | None = None  # train on the first N training games (by sha256)
    max_steps_per_epoch: int | None = None  # for smoke runs
    seed: int = 0
    preset: str | None = None
    distribute: str = "none"  # none | data-parallel (exphil_keras.distribution)
    command: str = ""

    @classmethod
    def from_preset(cls, preset: str | None, **overrides) -> TrainConfig:
        """The preset's values, then every override that is not None."""
        values = dict(PRESETS[preset]) if preset else {}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(preset=preset, **values)


def dataset_builder(config: TrainConfig) -> tfds.core.DatasetBuilder:
    """The slippi_windows builder for this window and these delays, built if needed."""
    dataset_config = slippi_windows.config_for(
        config.window, config.action_delay, config.frame_delay
    )
    builder = tfds.builder("slippi_windows", config=dataset_config, data_dir=config.data_dir)
    if builder.is_prepared():
        return builder
    if config.replays is None:
        raise ValueError(f"no dataset at {builder.data_dir} and no --replays to build it from")
    return slippi_windows.build(config.replays, config.data_dir, dataset_config)[0]


def windows(builder, split: str, games=None, seed: int = 0) -> tf.data.Dataset:
    """(inputs, targets) windows of one split, optionally only from the given game sha256s.

    The training split's shard order is shuffled once, with `seed` (a reshuffle per pass would
    draw new seeds, and tf.distribute's rewrite of the pipeline draws them differently)."""
    read_config = tfds.ReadConfig(shuffle_seed=seed, shuffle_reshuffle_each_iteration=False)
    ds = builder.as_dataset(split=split, shuffle_files=split == "train", read_config=read_config)
    if games is not None:
        keep = tf.constant(sorted(games))
        ds = ds.filter(lambda ex: tf.reduce_any(tf.equal(ex["sha256"], keep)))
    return ds.map(lambda ex: (ex["inputs"], ex["targets"]), num_parallel_calls=tf.data.AUTOTUNE)


def training_games(builder, max_files: int | None) -> dict[str, dict]:
    """The training split's games (sha256 -> file, frames), the first `max_files` by sha256."""
    games = builder.info.metadata["report"]["games_used"]["train"]
    chosen = sorted(games)[:max_files] if max_files else sorted(games)
    return {sha: games[sha] for sha in chosen}


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


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """The schedule over the run, counted in batches: Keras steps it at every batch, also those
    that only accumulate gradients (`warmup_steps` counts optimizer updates)."""
    total = max(config.epochs * steps_per_epoch, 1)
    warmup = config.warmup_steps * config.grad_accumulation
    decay_steps = max(total - warmup, 1)
    if config.schedule == "constant":
        after = keras.optimizers.schedules.PolynomialDecay(
            config.learning_rate, decay_steps, config.learning_rate
        )
    elif config.schedule == "cosine":
        after = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps)
    elif config.schedule == "cosine_restarts":
        after = keras.optimizers.schedules.CosineDecayRestarts(
            config.learning_rate, max(decay_steps // 8, 1)
        )
    else:
        raise ValueError(f"unknown schedule {config.schedule!r}")
    if not warmup:
        return after
    return WarmupSchedule(config.learning_rate, warmup, after)


class Backup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that survives `kill -9` at any moment: it keeps the previous epoch's
    backup beside the latest (a write cut short falls back to it), and a backup with no readable
    copy at all is reported and set aside, so the run starts over instead of failing."""

    def __init__(self, backup_dir):
        super().__init__(backup_dir, double_checkpoint=True)

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except OSError as e:
            print(f"backup in {self.backup_dir} is unreadable ({e}); starting from epoch 1")
            shutil.rmtree(self.backup_dir)


class StopOnNaN(keras.callbacks.Callback):
    """Stops at the first non-finite loss and remembers where, for a clear error."""

    def __init__(self):
        super().__init__()
        self.where = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = f"epoch {self.epoch + 1}, batch {batch + 1} (loss {loss})"
            self.model.stop_training = True


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model whenever `monitor` improves: written beside `path` and renamed over it,
    then recorded in `path`.json (epoch, value), so a kill never leaves a broken file and a
    resumed run knows which epoch the file holds."""

    def __init__(self, path, monitor):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.record = self.path.with_suffix(".json")
        self.best = math.inf

    def resume(self, logged_best: float | None):
        """On a resumed run: the recorded value, or for a run from before the record (its file
        written by ModelCheckpoint) the best logged epoch's, if the file exists."""
        if self.record.exists():
            self.best = json.loads(self.record.read_text())["value"]
        elif self.path.exists() and logged_best is not None:
            self.best = logged_best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value) or value >= self.best:
            return
        partial = self.path.with_name(f"{self.path.stem}.partial.keras")
        self.model.save(partial)
        os.replace(partial, self.path)
        _write_json(self.record, {"epoch": epoch + 1, "value": float(value)})
        self.best = float(value)


class RunLog(keras.callbacks.Callback):
    """Per finished epoch: its logs, wall seconds and throughput (the training batches after the
    first, which pays for compilation, and their seconds), kept in `path` across resumes.

    Keras's callbacks start afresh when BackupAndRestore resumes a run, so at a resumed run's
    first epoch this reloads the epochs done before it and hands their best `monitor` value on
    to the checkpoint and to early stopping, whose patience goes on counting. It must come
    before the backup in the callback list, so that an epoch is logged before it is backed up.
    """

    def __init__(self, path, monitor, checkpoint: BestCheckpoint, early_stopping=None):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.checkpoint, self.early_stopping = checkpoint, early_stopping
        self.epochs = None

    def _load(self, epochs: int) -> list:
        done = json.loads(self.path.read_text()) if epochs and self.path.exists() else []
        if len(done) < epochs:
            print(f"{self.path} has {len(done)} of the {epochs} finished epochs; the history, "
                  "wall time and early stopping cover only those")  # fmt: skip
        return done[:epochs]

    def on_epoch_begin(self, epoch, logs=None):
        if self.epochs is None:  # this process's first epoch; `epoch` epochs were done before
            self.epochs = self._load(epoch)
            if epoch:
                self._resume()
        self.started = time.perf_counter()
        self.throughput = {"batches": 0, "seconds": 0.0}

    def _resume(self):
        values = [e["logs"].get(self.monitor, math.nan) for e in self.epochs]
        finite = [v for v in values if math.isfinite(v)]
        best = min(finite) if finite else None
        self.checkpoint.resume(best)
        if self.early_stopping is not None and best is not None:
            self.early_stopping.best = best
            self.early_stopping.wait = len(values) - 1 - values.index(best)

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if batch == 0:
            self.first_batch_end = now
        else:
            self.throughput = {"batches": batch, "seconds": round(now - self.first_batch_end, 3)}

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(
            {
                "logs": {k: float(v) for k, v in (logs or {}).items()},
                "seconds": round(time.perf_counter() - self.started, 1),
                "throughput": self.throughput,
            }
        )
        _write_json(self.path, self.epochs)

    def finished_epochs(self, epochs: int) -> list:
        """Every epoch of the run (also when a resume found none left to run)."""
        if self.epochs is None:
            self.epochs = self._load(epochs)
        return self.epochs

    def history(self) -> dict[str, list[float]]:
        keys = dict.fromkeys(k for e in self.epochs for k in e["logs"])
        return {k: [e["logs"].get(k, math.nan) for e in self.epochs] for k in keys}


def _write_json(path: Path, value):
    """Written beside and renamed over `path`: a kill mid-write leaves the previous file whole."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)


def peak_device_memory() -> int | None:
    """Peak bytes in use on the first GPU (None on CPU)."""
    if keras.backend.backend() == "jax":
        import jax

        device = jax.local_devices()[0]
        stats = device.memory_stats() if device.platform == "gpu" else None
        return stats.get("peak_bytes_in_use") if stats else None
    if tf.config.list_physical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    return None


def markov1_tables(ds: tf.data.Dataset, stride: int) -> baselines.Markov1:
    """Markov-1 counts over the training windows; the last `stride` positions of each window
    are each frame exactly once (stride = window // 2)."""
    markov = baselines.Markov1()
    for inputs, targets in tfds.as_numpy(ds.batch(1024)):
        markov.update(
            inputs["prev_input"][:, -stride:], {h: v[:, -stride:] for h, v in targets.items()}
        )
    return markov


def validation_last_position(model, val_ds: tf.data.Dataset, markov: baselines.Markov1) -> dict:
    """`exphil eval`'s figures on the validation windows: the model's per-head NLL and accuracy
    at the last position, where the baselines are scored (Keras's accuracies average every
    position)."""
    last_frames = baselines.LastFrames()
    for inputs, targets in tfds.as_numpy(val_ds.batch(1024)):
        last_frames.add(inputs, targets, model.predict_on_batch(inputs))
    return last_frames.result(markov)


def train(config: TrainConfig) -> dict:
    """Fit a policy per `config`; returns the written preset's metadata."""
    context, replicas = distribution.scope(config.distribute)  # before TF's first op
    if config.batch_size % replicas:
        raise ValueError(
            f"--batch-size {config.batch_size} does not divide over {replicas} devices"
        )
    if config.grad_accumulation < 1:
        raise ValueError(f"--grad-accumulation {config.grad_accumulation}: must be 1 or more")
    if replicas > 1 and config.grad_accumulation > 1 and keras.backend.backend() == "tensorflow":
        raise ValueError(  # keras-team/keras#20582: merge_call inside the accumulation's cond
            "gradient accumulation under tf.distribute fails in Keras; use --backend jax, or "
            "a larger --batch-size instead of accumulating"
        )
    keras.utils.set_random_seed(config.seed)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    builder = dataset_builder(config)
    games = training_games(builder, config.max_files)
    all_train = config.max_files is None
    train_ds = windows(builder, "train", None if all_train else games, config.seed)
    val_ds = windows(builder, "validation")
    stride = builder.builder_config.stride
    if all_train:
        steps_per_epoch = math.ceil(builder.info.splits["train"].num_examples / config.batch_size)
    else:  # a game gives about (2 * frames / window) windows per perspective
        steps_per_epoch = max(1, sum(2 * g["frames"] // stride for g in games.values()))
        steps_per_epoch = math.ceil(steps_per_epoch / config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
        train_ds = train_ds.take(steps_per_epoch * config.batch_size)

    with context:
        model = policy.build_policy(
            backbone=config.backbone,
            window=config.window,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            state_size=config.state_size,
            expand=config.expand,
            label_smoothing=config.label_smoothing,
        )
        optimizer = keras.optimizers.Adam(
            learning_rate(config, steps_per_epoch),
            use_ema=bool(config.ema),
            ema_momentum=config.ema or 0.99,
            gradient_accumulation_steps=config.grad_accumulation
            if config.grad_accumulation > 1
            else None,
        )
        model.compile(optimizer=optimizer, jit_compile="auto")

    best = output / "best.keras"
    nan = StopOnNaN()
    checkpoint = BestCheckpoint(best, "val_last_loss")
    early_stopping = (
        keras.callbacks.EarlyStopping(monitor="val_last_loss", patience=config.patience, mode="min")
        if config.patience
        else None
    )
    run_log = RunLog(output / "epochs.json", "val_last_loss", checkpoint, early_stopping)
    callbacks = [
        run_log,
        Backup(str(output / "backup")),  # before the swap: it keeps the raw weights
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.ema else []),
        checkpoint,
        keras.callbacks.TensorBoard(str(output / "logs")),
        nan,
        *([early_stopping] if early_stopping else []),
    ]
    # One endless stream shuffled with fixed seeds (reshuffle_each_iteration would draw them from
    # a seed resource, which tf.distribute's rewrite of the pipeline re-creates differently), so
    # every device count sees the same batches in the same order.
    batched = (
        train_ds.repeat()
        .shuffle(4096, seed=config.seed, reshuffle_each_iteration=False)
        .batch(config.batch_size, drop_remainder=True)
    )
    model.fit(
        batched.prefetch(tf.data.AUTOTUNE),
        steps_per_epoch=steps_per_epoch,
        epochs=config.epochs,
        validation_data=val_ds.batch(config.batch_size).prefetch(tf.data.AUTOTUNE),
        callbacks=callbacks,
        shuffle=False,  # shuffled above, by tf.data
    )
    epochs = run_log.finished_epochs(config.epochs)
    if nan.where:
        raise FloatingPointError(
            f"training stopped: the loss became NaN or infinite at {nan.where}. Lower "
            f"--lr, check the data, or resume from {best} (the best finished epoch)."
        )
    if best.exists():
        model = keras.saving.load_model(best, compile=False)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), jit_compile="auto")
    validation = model.evaluate(val_ds.batch(config.batch_size), return_dict=True, verbose=0)
    markov = markov1_tables(windows(builder, "train", games), stride)
    last_position = validation_last_position(model, val_ds, markov)
    name = config.name or f"{config.backbone}_custom"
    metadata = {
        "name": name,
        "description": f"A {config.backbone} policy trained by `exphil train` (see training.json).",
        "backbone": config.backbone,
        "feature_version": features.FEATURE_VERSION,
        "window": config.window,
        "action_delay": config.action_delay,
        "frame_delay": config.frame_delay,
        "heads": "independent",
        "learning_rate": config.learning_rate,
        "validation": {
            "last_loss": float(validation["last_loss"]),
            "last_position": {k: last_position[k] for k in ("loss", "frames", "heads")},
            "baselines": last_position["baselines"],
        },
    }
    training = {
        **dataclasses.asdict(config),
        "command": config.command or shlex.join(sys.argv),
        "data": {
            "dataset": f"slippi_windows/{builder.builder_config.name}",
            "train_games": games,
            "train_frames": sum(g["frames"] for g in games.values()),
        },
        "epochs_run": len(epochs),
        "best_epoch": json.loads(checkpoint.record.read_text())["epoch"]
        if checkpoint.record.exists()
        else None,
        "wall_seconds": round(sum(e["seconds"] for e in epochs), 1),
        "device": device(),
        "replicas": replicas,
        "throughput": [e["throughput"] for e in epochs],
        "peak_device_memory_bytes": peak_device_memory(),
        "history": run_log.history(),
        "validation_all_positions": {k: float(v) for k, v in validation.items()},
    }
    return zoo.save(model, output / "preset", metadata, training, markov)


def device() -> str:
    """Where training ran: the backend and the GPUs, or the CPU cores."""
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    where = ", ".join(gpus) if gpus else f"CPU, {os.cpu_count()} cores ({platform.machine()})"
    return f"{keras.backend.backend()} backend, {where}"


def config_from_args(args) -> TrainConfig:
    """argparse namespace (cli.py's train flags) -> TrainConfig."""
    backbone = args.backbone
    if args.temporal and backbone in (None, "mlp"):
        if backbone == "mlp":
            raise ValueError("--temporal needs a temporal backbone; mlp sees one frame at a time")
        backbone = "mamba"
    return TrainConfig.from_preset(
        args.preset,
        replays=args.replays,
        data_dir=args.data_dir,
        output=args.output,
        name=args.name,
        backbone=backbone,
        window=args.window_size,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        state_size=args.state_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        label_smoothing=args.label_smoothing,
        action_delay=args.action_delay,
        frame_delay=args.frame_delay,
        max_files=args.max_files,
        max_steps_per_epoch=args.max_steps_per_epoch,
        schedule=args.schedule,
        warmup_steps=args.warmup_steps,
        ema=args.ema,
        grad_accumulation=args.grad_accumulation,
        patience=args.patience,
        seed=args.seed,
        distribute=args.distribute,
        command=shlex.join(["exphil", *sys.argv[1:]]),
    )
