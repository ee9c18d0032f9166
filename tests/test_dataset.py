"""The slippi_windows TFDS dataset, built from the real replays, loaded as a user would."""

import resource
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from exphil_cli import exphil
from shared_data import BAD_REPLAYS, REPLAYS

import exphil_keras  # noqa: F401  (registers slippi_windows)
from exphil_keras import features
from exphil_keras.datasets.slippi_windows import BuildReport, build

W = 60


# The full build runs as `exphil build-data` in a process whose data memory is capped: the build
# streams, one replay and a bounded writer buffer at a time.
MEMORY_CAP_MB = 1024


def _cap_memory():
    cap = MEMORY_CAP_MB << 20
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))


@pytest.fixture(scope="module")
def full_build(tmp_path_factory):
    """One full build of ../shared/replays, shared by the tests of this module."""
    data_dir = tmp_path_factory.mktemp("tfds")
    done = exphil("build-data", "--replays", REPLAYS, "--data-dir", data_dir,
                  "--memory-buffer-mb", "64", preexec_fn=_cap_memory)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    builder = tfds.builder("slippi_windows/w60", data_dir=data_dir)
    return data_dir, builder, BuildReport(**builder.info.metadata["report"])


def test_each_game_is_stored_once_in_at_most_16_bytes_a_frame(full_build):
    data_dir, builder, report = full_build
    written = sum(f.stat().st_size for f in Path(data_dir).rglob("*") if f.is_file())
    assert written / sum(report.frames.values()) <= 16  # version 1: 1,468
    assert {s: builder.info.splits[s].num_examples for s in report.games} == report.games
    # Every replay it was built from, with its sha256 (games used) or why it was skipped.
    replays = builder.info.metadata["replays"]
    assert len(replays) == 166
    used = {g["file"] for split in report.games_used.values() for g in split.values()}
    assert used | {Path(p).name for p in report.skipped} == set(replays)


def load(split, data_dir, replays=REPLAYS, config="w60", **kwargs):
    return tfds.load(
        f"slippi_windows/{config}",
        split=split,
        data_dir=data_dir,
        download_and_prepare_kwargs={
            "download_config": tfds.download.DownloadConfig(manual_dir=str(replays))
        },
        **kwargs,
    )


def test_full_build_report_accounts_for_every_replay(full_build, manifest):
    _, _, report = full_build
    assert report.files_read + len(report.skipped) == 166
    assert len(report.skipped) == 8
    assert all("players" in reason for reason in report.skipped.values())
    assert sum(report.games.values()) == report.files_read  # short games too: W is read-time
    assert report.windows == {"train": 47_806, "validation": 4_682, "test": 4_852}
    assert "frames/s" in report.format()


def test_validation_batches_match_the_design(full_build):
    data_dir, _, _ = full_build
    ds = load("validation", data_dir, as_supervised=True)
    inputs, targets = next(iter(ds.batch(8)))
    for name, dim in features.CONTINUOUS_INPUTS.items():
        assert inputs[name].shape == (8, W, dim) and inputs[name].dtype.name == "float32"
    for name in features.CATEGORICAL_INPUTS:
        assert inputs[name].shape == (8, W) and inputs[name].dtype.name == "int32"
    assert targets["buttons"].shape == (8, W, 8) and targets["buttons"].dtype.name == "float32"
    for head, classes in features.TARGETS.items():
        if head != "buttons":
            assert targets[head].shape == (8, W) and targets[head].dtype.name == "int32"
            assert 0 <= int(np.min(targets[head])) and int(np.max(targets[head])) < classes


def test_examples_equal_the_feature_pipeline_and_splits_are_by_game(full_build):
    data_dir, _, report = full_build
    ds = load("validation", data_dir, shuffle_files=True)  # windows of 16 games interleaved
    games = set()
    for example in tfds.as_numpy(ds.take(400)):
        sha = example["sha256"].decode()
        assert features.split_of(sha) == "validation"
        games.add(sha)
    assert len(games) > 1
    # One example against a fresh read of its replay: exact, every field.
    path = next(p for p in REPLAYS.glob("*.slp") if features.file_sha256(p) == sha)
    view = next(v for v in features.read_replay(path).perspectives if v.port == example["port"])
    start = int(np.flatnonzero(view.frame_ids == example["first_frame"])[0])
    for group in ("inputs", "targets"):
        for name, value in example[group].items():
            np.testing.assert_array_equal(value, getattr(view, group)[name][start : start + W])


def test_a_build_with_bad_files_keeps_every_good_frame(tmp_path):
    replays = tmp_path / "replays"
    (replays / "nested").mkdir(parents=True)
    good = sorted(REPLAYS.glob("Walnut356__*.slp"))[:6]
    for path in good:
        shutil.copy(path, replays / "nested")
    for name in ("hohav__tests_data_corrupt.slp", "vinceau__slp_200306_2258_Falco_v_Fox_PS.slp"):
        shutil.copy(BAD_REPLAYS / name, replays)
    (replays / "readme.txt").write_text("not a replay")
    builder, report = build(replays, tmp_path / "tfds", "w30")
    expected = [features.read_replay(p, min_frames=30) for p in good]
    assert report.files_read == len(good) and len(report.skipped) == 2
    assert sum(report.frames.values()) == sum(r.num_frames for r in expected)
    windows = sum(
        len(features.window_starts(v.num_frames, 30, 15)) for r in expected for v in r.perspectives
    )
    assert sum(report.windows.values()) == windows
    splits = builder.info.splits
    assert sum(splits[s].num_examples for s in splits) == len(good)
    assert sum(len(list(builder.as_dataset(split=s))) for s in splits) == windows


def test_duplicate_files_and_a_split_of_bad_files_do_not_stop_the_build(tmp_path):
    replays = tmp_path / "replays"
    (replays / "backup").mkdir(parents=True)
    good = REPLAYS / "Walnut356__Modern_Replays_Game_20221227T212019.slp"
    shutil.copy(good, replays)
    shutil.copy(good, replays / "backup" / "copy.slp")
    png = BAD_REPLAYS / "altf4__test_artifacts_corrupt_game_2.slp"  # alone in its split
    assert features.split_of(features.file_sha256(png)) != features.split_of(
        features.file_sha256(good)
    )
    shutil.copy(png, replays)
    _, report = build(replays, tmp_path / "tfds", "w30")
    assert report.files_read == 1
    assert report.skipped[str(replays / "backup" / "copy.slp")].startswith("duplicate of ")
    assert report.skipped[str(replays / png.name)].startswith("not a Slippi replay")


def test_cli_build_data_prints_the_report(tmp_path):
    replays = tmp_path / "replays"
    replays.mkdir()
    for path in sorted(REPLAYS.glob("Walnut356__*.slp"))[:2]:
        shutil.copy(path, replays)
    cmd = [
        "build-data",
        "--replays",
        str(replays),
        "--data-dir",
        str(tmp_path / "tfds"),
        "--config",
        "w30",
    ]
    done = exphil(*cmd, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "files read: 2, skipped: 0" in done.stdout and "frames/s" in done.stdout
    assert (tmp_path / "tfds" / "slippi_windows" / "2.0.0" / "build_report.json").exists()
    again = exphil(*cmd, timeout=300)
    assert again.returncode == 0 and "already built" in again.stdout
