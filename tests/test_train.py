"""exphil train / eval / zoo end to end, on the three small real replays of dummy_data."""

import dataclasses
import functools
import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import exphil_cli
import keras
import numpy as np
import pytest
from exphil_cli import EXPHIL

from exphil_keras import evaluate, train, zoo
from exphil_keras.datasets.slippi_windows import build
from exphil_keras.training import callbacks, data, schedules

exphil = functools.partial(exphil_cli.exphil, timeout=600)  # this file's bound

DUMMY = Path(train.__file__).resolve().parent / "datasets" / "slippi_windows" / "dummy_data"
TINY = ["--backbone", "gru", "--hidden-size", "16", "--batch-size", "4"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    build(DUMMY, data_dir, "w60")
    return data_dir


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("run")
    config = train.TrainConfig(
        data_dir=str(data_dir), output=str(output), backbone="gru", hidden_size=16,
        batch_size=4, epochs=2, name="gru_tiny",
    )  # fmt: skip
    return output, train.train(config)


def test_train_writes_a_preset_that_loads_and_evaluates(trained, data_dir):
    output, metadata = trained
    preset = output / "preset"
    assert metadata["name"] == "gru_tiny" and zoo.training(preset)["epochs_run"] == 2
    files = ["config.json", "model.weights.h5", "training.json", "markov1.json"]
    assert metadata["sha256"] == {file: zoo.sha256(preset / file) for file in files}
    assert (output / "best.keras").exists() and any((output / "logs").rglob("*tfevents*"))
    model = zoo.load(preset)
    assert model.optimizer is not None  # compiled, ready to fine-tune
    best = keras.saving.load_model(output / "best.keras", compile=False)
    inputs = {k: v[:2] for k, v in _validation_batch(data_dir)[0].items()}
    for head, value in model.predict(inputs, verbose=0).items():
        np.testing.assert_allclose(value, best.predict(inputs, verbose=0)[head], atol=1e-6)


def test_ema_weights_are_validated_and_saved(trained, data_dir, tmp_path):
    """With --ema, validation and the preset use the weights' moving average, not the raw ones:
    at a momentum near 1 they stay near the initial weights, away from the trained run's."""
    config = train.TrainConfig(
        data_dir=str(data_dir), output=str(tmp_path), backbone="gru", hidden_size=16,
        batch_size=4, epochs=2, ema=0.99999,
    )  # fmt: skip
    metadata = train.train(config)
    history = zoo.training(tmp_path / "preset")["history"]["val_last_loss"]
    assert metadata["validation"]["last_loss"] == pytest.approx(min(history), rel=1e-5)
    raw = trained[1]["validation"]["last_loss"]
    assert min(history) > raw + 0.1, (history, raw)


def _validation_batch(data_dir):
    builder = data.dataset_builder(train.TrainConfig(data_dir=str(data_dir)))
    return next(iter(data.windows(builder, "validation").batch(64).as_numpy_iterator()))


def test_eval_matches_the_training_metric_and_reports_baselines(trained, data_dir, tmp_path):
    output, metadata = trained
    validation = tmp_path / "validation"
    validation.mkdir()
    shutil.copy(DUMMY / "project-slippi__slp_consistencyTest_YoshiVDK-Egg-13.slp", validation)
    result = evaluate.evaluate_preset(output / "preset", validation)
    # The same windows as the validation split: eval's float64 loss equals Keras' last_loss.
    assert result["frames"] == 22
    assert result["loss"] == pytest.approx(metadata["validation"]["last_loss"], rel=1e-4)
    assert set(result["heads"]) == {"buttons", "main_x", "main_y", "c_x", "c_y", "shoulder"}
    assert 0 < result["baselines"]["markov1"]["loss"] < result["loss"]
    # Training recorded the same baselines on the same frames, from the dataset.
    recorded = metadata["validation"]["baselines"]
    assert result["baselines"]["markov1"]["loss"] == pytest.approx(recorded["markov1"]["loss"])
    for head, acc in recorded["repeat_previous"].items():
        assert result["baselines"]["repeat_previous"][head]["acc"] == pytest.approx(acc["acc"])
    # ...and the model's own per-head figures at the last position, which ZOO.md's table shows.
    last_position = metadata["validation"]["last_position"]
    assert last_position["frames"] == 22
    for head, figures in result["heads"].items():
        assert last_position["heads"][head] == pytest.approx(figures, rel=1e-4)
    assert 0 <= result["baselines"]["repeat_previous"]["main_x"]["acc"] <= 1
    # The CLI on the whole folder, restricted to the validation games: the same 22 windows.
    done = exphil("eval", "--model", str(output / "preset"), "--replays", str(DUMMY),
                  "--split", "validation", "--json", str(tmp_path / "e.json"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "e.json").read_text())["frames"] == 22


def test_tampered_weights_are_refused(trained, tmp_path):
    output, _ = trained
    copy = tmp_path / "preset"
    shutil.copytree(output / "preset", copy)
    data = bytearray((copy / "model.weights.h5").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.weights.h5").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 .* does not match metadata.json"):
        zoo.load(copy)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown preset 'no_such_preset'") as error:
        zoo.load("no_such_preset")
    for name in zoo.names():
        assert name in str(error.value)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_train_cli_on_other_backends(backend, data_dir, tmp_path):
    done = exphil("train", "--data-dir", str(data_dir), *TINY, "--epochs", "1",
                  "--backend", backend, "--output", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metadata = zoo.info(tmp_path / "preset")
    assert metadata["versions"]["backend"] == backend
    assert np.isfinite(metadata["validation"]["last_loss"])


def test_training_resumes_after_a_kill(data_dir, tmp_path):
    """kill -9 mid-run, even mid-write of the backup: the same command continues the run."""
    command = [*EXPHIL, "train", "--data-dir", str(data_dir),
               *TINY, "--epochs", "30", "--output", str(tmp_path)]  # fmt: skip
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "backup" / "latest.weights.h5"
    # Keras copies the weights to .bkp, then the metadata: once the metadata's .bkp exists (the
    # second save on), the weights' .bkp is whole, and only the latest write can be cut short.
    previous = tmp_path / "backup" / "training_metadata.json.bkp"
    deadline = time.time() + 300
    while not previous.exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.kill(run.pid, signal.SIGKILL)
    assert run.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be interrupted"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # a write cut short
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Epoch 1/30" not in again.stdout  # it skipped the epochs already done
    training = zoo.training(tmp_path / "preset")
    assert training["epochs_run"] == len(training["history"]["loss"]) == 30  # the whole run's


@pytest.mark.parametrize("recorded", [True, False])
def test_a_resumed_run_keeps_its_best_epoch_and_patience(tmp_path, recorded):
    """The epochs before the interruption: NaN, then best 0.5 at epoch 3 of 4. The resumed run's
    next epoch must neither replace the best checkpoint unless better nor restart the patience
    count; the checkpoint's own record wins over the log (a run from before the record: the log)."""
    values = (math.nan, 0.9, 0.5, 0.7, 0.4)  # the 5th was logged, then killed before its backup
    epochs = [{"logs": {"val_last_loss": v}, "seconds": 1.0, "throughput": {}} for v in values]
    (tmp_path / "epochs.json").write_text(json.dumps(epochs))
    (tmp_path / "best.keras").write_bytes(b"the epoch-3 model")
    if recorded:
        (tmp_path / "best.json").write_text(json.dumps({"epoch": 3, "value": 0.55}))
    checkpoint = callbacks.BestCheckpoint(tmp_path / "best.keras", "val_last_loss")
    stopping = keras.callbacks.EarlyStopping(monitor="val_last_loss", patience=2, mode="min")
    log = callbacks.RunLog(tmp_path / "epochs.json", "val_last_loss", checkpoint, stopping)
    for callback in (checkpoint, stopping, log):
        callback.on_train_begin()
    log.on_epoch_begin(4)
    assert checkpoint.best == (0.55 if recorded else 0.5)
    assert stopping.best == 0.5 and stopping.wait == 1
    assert [e["logs"]["val_last_loss"] for e in log.epochs][1:] == [0.9, 0.5, 0.7]
    checkpoint.on_epoch_end(4, {"val_last_loss": 0.6})  # worse: the file stays
    assert (tmp_path / "best.keras").read_bytes() == b"the epoch-3 model"


def test_the_schedule_counts_batches_under_gradient_accumulation():
    """Keras steps the schedule every batch: 2 epochs of 8 batches, 4 per update, no warmup."""
    config = train.TrainConfig(epochs=2, grad_accumulation=4, schedule="cosine", learning_rate=1.0)
    schedule = schedules.learning_rate(config, steps_per_epoch=8)
    assert float(schedule(8)) == pytest.approx(0.5, abs=1e-6)  # half way
    warm = schedules.learning_rate(dataclasses.replace(config, warmup_steps=1), steps_per_epoch=8)
    assert float(warm(2)) < 1.0 and float(warm(4)) == pytest.approx(1.0, abs=1e-2)


def test_nan_loss_stops_training_and_says_where():
    from exphil_keras import policy

    model = policy.build_policy(backbone="mlp", window=8, hidden_size=8, num_layers=1)
    inputs, targets = policy.example_batch(model, 4)
    inputs["ego_state"][1, 3, 0] = np.nan
    stop = callbacks.StopOnNaN()
    history = model.fit(inputs, targets, epochs=3, batch_size=2, callbacks=[stop], verbose=0)
    assert stop.where.startswith("epoch 1, batch ") and stop.where.endswith("(loss nan)")
    assert len(history.history["loss"]) == 1


def test_zoo_page_is_generated_from_the_presets_metadata():
    page = (Path(__file__).resolve().parents[1] / "docs" / "ZOO.md").read_text()
    assert page.endswith(zoo.markdown_table())
