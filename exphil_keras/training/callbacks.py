"""The training run's callbacks: a backup that survives `kill -9`, the best checkpoint written
atomically, the per-epoch log that carries across resumes, and a clear stop on NaN."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import keras

MONITOR = "val_last_loss"  # the seed-comparable validation loss


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


class RunCallbacks:
    """The callbacks of a run in `output`, in the order they must run."""

    def __init__(self, config, output: Path):
        self.stop_on_nan = StopOnNaN()
        self.checkpoint = BestCheckpoint(output / "best.keras", MONITOR)
        self.early_stopping = (
            keras.callbacks.EarlyStopping(monitor=MONITOR, patience=config.patience, mode="min")
            if config.patience
            else None
        )
        self.run_log = RunLog(output / "epochs.json", MONITOR, self.checkpoint, self.early_stopping)
        self.all = [
            self.run_log,
            Backup(str(output / "backup")),  # before the swap: it keeps the raw weights
            *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.ema else []),
            self.checkpoint,
            keras.callbacks.TensorBoard(str(output / "logs")),
            self.stop_on_nan,
            *([self.early_stopping] if self.early_stopping else []),
        ]

    def raise_on_nan(self) -> None:
        if self.stop_on_nan.where:
            raise FloatingPointError(
                f"training stopped: the loss became NaN or infinite at {self.stop_on_nan.where}. "
                f"Lower --lr, check the data, or resume from {self.checkpoint.path} (the best "
                "finished epoch)."
            )

    def best_epoch(self) -> int | None:
        record = self.checkpoint.record
        return json.loads(record.read_text())["epoch"] if record.exists() else None
