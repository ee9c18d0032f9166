"""Scale-out on existing engines: data-parallel training on 2 virtual CPU devices
(keras.distribution on JAX, tf.distribute on TensorFlow) and the Apache Beam build."""

import hashlib
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from exphil_cli import exphil
from shared_data import BAD_REPLAYS, REPLAYS

from exphil_keras import features, train, zoo
from exphil_keras.datasets.slippi_windows import build
from exphil_keras.training import data

DUMMY = Path(train.__file__).resolve().parent / "datasets" / "slippi_windows" / "dummy_data"
TWO_CPUS = "--xla_force_host_platform_device_count=2"
# Same global batch, same data order: the 2-device run is the 1-device run up to float32
# reduction order.
RTOL = 1e-5


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    build(DUMMY, data_dir, "w60")
    return data_dir


def _train(data_dir, output, backend, distribute) -> dict:
    cmd = ["train", "--data-dir", data_dir, "--backbone", "gru", "--hidden-size", "16"]
    cmd += ["--batch-size", "4", "--epochs", "2", "--backend", backend]
    cmd += ["--distribute", distribute, "--output", output]
    done = exphil(*cmd, timeout=600, env={"XLA_FLAGS": TWO_CPUS})
    assert done.returncode == 0, done.stderr[-3000:]
    return {**zoo.info(output / "preset"), "training": zoo.training(output / "preset")}


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_data_parallel_on_two_devices_follows_the_one_device_run(backend, data_dir, tmp_path):
    single = _train(data_dir, tmp_path / "single", backend, "none")
    parallel = _train(data_dir, tmp_path / "parallel", backend, "data-parallel")
    assert single["training"]["replicas"] == 1 and parallel["training"]["replicas"] == 2
    for key in ("loss", "last_loss", "val_last_loss"):
        np.testing.assert_allclose(
            parallel["training"]["history"][key], single["training"]["history"][key], rtol=RTOL
        )
    # Saved by the 2-device run, loaded here on one device: the same validation loss.
    model = zoo.load(tmp_path / "parallel" / "preset")
    builder = data.dataset_builder(train.TrainConfig(data_dir=str(data_dir)))
    ds = data.windows(builder, "validation").batch(4)
    result = model.evaluate(ds, return_dict=True, verbose=0)
    assert result["last_loss"] == pytest.approx(parallel["validation"]["last_loss"], rel=RTOL)


def test_data_parallel_refuses_a_batch_that_does_not_divide(data_dir, tmp_path):
    cmd = ["train", "--data-dir", data_dir, "--batch-size", "3", "--backend", "jax"]
    cmd += ["--distribute", "data-parallel", "--output", tmp_path / "run"]
    done = exphil(*cmd, timeout=300, env={"XLA_FLAGS": TWO_CPUS})
    assert done.returncode == 2 and "does not divide over 2 devices" in done.stderr


def _examples(builder) -> dict:
    """(sha256, port, first_frame) -> checksum of the example's inputs and targets."""
    out = {}
    for split in builder.info.splits:
        for ex in tfds.as_numpy(builder.as_dataset(split=split)):
            digest = hashlib.sha256()
            for group in ("inputs", "targets"):
                for name in sorted(ex[group]):
                    digest.update(name.encode() + ex[group][name].tobytes())
            out[(split, ex["sha256"].decode(), int(ex["port"]), int(ex["first_frame"]))] = (
                digest.hexdigest()
            )
    return out


BEAM_ARGS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def test_the_beam_build_equals_the_plain_build(tmp_path):
    replays = tmp_path / "replays"
    replays.mkdir()
    by_split = {}
    for path in sorted(REPLAYS.glob("*.slp")):  # five of each split: a Beam build needs all 3
        by_split.setdefault(features.split_of(features.file_sha256(path)), []).append(path)
    chosen = [path for paths in by_split.values() for path in paths[:5]]
    for path in [*chosen, BAD_REPLAYS / "hohav__tests_data_corrupt.slp"]:
        (replays / path.name).symlink_to(path)
    plain, plain_report = build(replays, tmp_path / "plain", "w60")
    beam, beam_report = build(
        replays,
        tmp_path / "beam",
        "w60",
        beam_runner="DirectRunner",
        beam_args=BEAM_ARGS,
    )
    plain_figures, beam_figures = plain_report.to_dict(), beam_report.to_dict()
    assert plain_figures.pop("seconds") > 0 and beam_figures.pop("seconds") > 0
    assert beam_figures == plain_figures
    assert plain_report.files_read >= 5 and len(plain_report.skipped) >= 1
    assert beam.info.metadata["report"]["games_used"] == plain_figures["games_used"]
    assert not list(Path(beam.data_dir).glob("beam_build_summaries*"))
    examples = _examples(plain)
    assert len(examples) == sum(plain_report.windows.values())
    assert _examples(beam) == examples


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_the_beam_build_is_exact_under_cpu_load(tmp_path):
    """Under a CPU load (busy processes, one per core, as a loaded CI machine has), five
    DirectRunner multi_processing builds each equal the plain build, example for example."""
    replays = tmp_path / "replays"
    replays.mkdir()
    for path in [*DUMMY.glob("*.slp"), BAD_REPLAYS / "hohav__tests_data_corrupt.slp"]:
        (replays / path.name).symlink_to(path)
    (replays / "copy.slp").symlink_to(next(DUMMY.glob("*.slp")))
    plain, plain_report = build(replays, tmp_path / "plain", "w60")
    expected = _examples(plain)
    load = [multiprocessing.Process(target=_spin, args=(600,)) for _ in range(os.cpu_count())]
    for process in load:
        process.start()
    try:
        for run in range(5):
            beam, report = build(
                replays, tmp_path / f"beam{run}", beam_runner="DirectRunner", beam_args=BEAM_ARGS
            )
            assert report.games_used == plain_report.games_used
            assert report.skipped == plain_report.skipped
            assert _examples(beam) == expected, run
    finally:
        for process in load:
            process.kill()
