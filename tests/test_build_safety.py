"""Nothing stale or lost: a dataset built from other replays is never used silently; a rebuild
keeps the old dataset until the new one is complete; a killed build leaves nothing that loads;
one build at a time per data dir."""

import functools
import os
import shutil
import signal
import subprocess
import time

import exphil_cli
import pytest
import tensorflow_datasets as tfds
from exphil_cli import EXPHIL
from shared_data import BAD_REPLAYS, REPLAYS

import exphil_keras  # noqa: F401  (registers slippi_windows)
from exphil_keras.datasets.slippi_windows import build  # noqa: F401
from exphil_keras.datasets.slippi_windows.build import _lock

exphil = functools.partial(exphil_cli.exphil, timeout=300)  # this file's bound

WALNUT = sorted(REPLAYS.glob("Walnut356__*.slp"))


def folder(tmp_path, name, paths):
    out = tmp_path / name
    out.mkdir()
    for path in paths:
        (out / path.name).symlink_to(path)
    return out


def shas(data_dir) -> set:
    games = tfds.builder("slippi_windows", data_dir=data_dir).info.metadata["report"]
    return {sha for split in games["games_used"].values() for sha in split}


def test_a_dataset_of_other_replays_is_refused_not_used(tmp_path):
    data_dir = tmp_path / "tfds"
    build(folder(tmp_path, "a", WALNUT[:2]), data_dir)
    other = folder(tmp_path, "b", WALNUT[1:3])
    with pytest.raises(ValueError, match="added .*removed .*--overwrite"):
        build(other, data_dir)
    done = exphil("train", "--replays", other, "--data-dir", data_dir, "--output", tmp_path / "run")
    assert done.returncode == 2
    assert f"{data_dir}" in done.stderr and "built from other replays" in done.stderr
    assert not (tmp_path / "run" / "preset").exists()


def test_overwrite_keeps_the_old_dataset_until_the_new_one_is_complete(tmp_path):
    data_dir = tmp_path / "tfds"
    build(folder(tmp_path, "a", WALNUT[:2]), data_dir)
    before = shas(data_dir)
    bad = folder(tmp_path, "bad", [BAD_REPLAYS / "hohav__tests_data_corrupt.slp"])
    with pytest.raises(ValueError, match="no usable game"):
        build(bad, data_dir, overwrite=True)
    assert shas(data_dir) == before  # the failed rebuild changed nothing
    assert not list((data_dir / "slippi_windows").glob("incomplete.*"))
    build(folder(tmp_path, "b", WALNUT[2:4]), data_dir, overwrite=True)
    assert shas(data_dir) != before and len(shas(data_dir)) == 2


def test_a_killed_build_leaves_nothing_that_loads_and_the_next_build_cleans_up(tmp_path):
    data_dir = tmp_path / "tfds"
    replays = folder(tmp_path, "a", sorted(REPLAYS.glob("*.slp"))[:60])
    cmd = [*EXPHIL, "build-data", "--replays", str(replays)]
    build_process = subprocess.Popen([*cmd, "--data-dir", str(data_dir)])
    parent = data_dir / "slippi_windows"
    deadline = time.monotonic() + 120
    while not list(parent.glob("incomplete.*/*.tfrecord*")) and time.monotonic() < deadline:
        time.sleep(0.05)  # killed while writing its shards
    build_process.send_signal(signal.SIGKILL)
    build_process.wait(timeout=60)
    assert list(parent.glob("incomplete.*"))
    assert not tfds.builder("slippi_windows", data_dir=data_dir).is_prepared()
    with pytest.raises(AssertionError, match="could not find data"):
        tfds.load("slippi_windows", split="train", data_dir=data_dir, download=False)
    builder, report = build(replays, data_dir)
    assert report.files_read and builder.is_prepared()
    assert not list(parent.glob("incomplete.*"))


def test_two_builds_at_once_one_waits_for_none(tmp_path):
    data_dir = tmp_path / "tfds"
    parent = data_dir / "slippi_windows"
    parent.mkdir(parents=True)
    replays = folder(tmp_path, "a", WALNUT[:1])
    with _lock(parent):  # another build holds the data dir
        done = exphil("build-data", "--replays", replays, "--data-dir", data_dir)
    assert done.returncode == 2
    assert f"another build (pid {os.getpid()}) is writing" in done.stderr
    # A lock file left by a dead build (its pid inside, no lock held) is taken over.
    (parent / "build.lock").write_text("999999")
    assert exphil("build-data", "--replays", replays, "--data-dir", data_dir).returncode == 0
    shutil.rmtree(data_dir)
