"""What a user sees from `exphil`: flags checked before any work, finished runs kept, one-line
errors with exit 2 (`--debug` for the traceback), and no backend start-up noise on stderr."""

import functools
import json
import os
import re
from pathlib import Path

import exphil_cli
import pytest
from shared_data import BAD_REPLAYS, REPLAYS

from exphil_keras import features, train
from exphil_keras.datasets.slippi_windows import build

exphil = functools.partial(exphil_cli.exphil, timeout=600)  # this file's bound

DUMMY = Path(train.__file__).resolve().parent / "datasets" / "slippi_windows" / "dummy_data"
TINY = ["--backbone", "gru", "--hidden-size", "16", "--batch-size", "4"]
NOISE = re.compile(r"E0000|I0000|W0000|absl|stack backtrace")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "0"], "--epochs 0: must be 1 or more"),
        (["--epochs", "-1"], "--epochs -1: must be 1 or more"),
        (["--max-files", "-1"], "--max-files -1: must be 1 or more"),
        (["--batch-size", "0"], "--batch-size 0: must be 1 or more"),
        (["--lr", "nan"], "--lr nan: must be a finite number"),
        (["--lr", "0"], "--lr 0.0: must be above 0"),
        (["--label-smoothing", "1"], "--label-smoothing 1.0: must be below 1"),
        (["--ema", "1.5"], "--ema 1.5: must be below 1"),
        (["--temporal", "--backbone", "mlp"], "--temporal needs a temporal backbone"),
    ],
)
def test_bad_flags_are_refused_before_any_work(flags, message, tmp_path):
    args = ["--replays", str(tmp_path / "nowhere"), "--output", str(tmp_path / "run"), *flags]
    with pytest.raises(ValueError, match=re.escape(message)):
        train.TrainConfig.from_args(_parse(["train", *args]))
    assert not (tmp_path / "run").exists()


def test_a_frame_delay_range_is_trained_on_its_own_read_time_view(tmp_path):
    """`--frame-delay 0-18` reads windows with a delay drawn per window from 0 to 18 (the
    dataset's view), and bench's subprocess flags write it back the same way."""
    from exphil_keras.datasets import slippi_windows

    args = ["--replays", str(tmp_path), "--frame-delay", "0-18"]
    config = train.TrainConfig.from_args(_parse(["train", *args]))
    assert config.frame_delay == (0, 18)
    assert config.flags(["frame_delay"]) == ["--frame-delay", "0-18"]
    view = slippi_windows.config_for(60, 1, config.frame_delay)
    assert (view.name, view.view.delays) == ("w60_a1_f0-18", (0, 18))
    fixed = train.TrainConfig.from_args(_parse(["train", *args[:2], "--frame-delay", "18"]))
    assert fixed.frame_delay == 18 and slippi_windows.config_for(60, 1, 18).name == "w60_a1_f18"
    assert features.frame_delays("6-6") == 6
    for bad in ("18-0", "-3", "x"):
        with pytest.raises(SystemExit):
            _parse(["train", *args[:2], "--frame-delay", bad])


def test_a_bad_flag_is_one_line_and_exit_2(tmp_path):
    done = exphil("train", "--epochs", "0", "--output", str(tmp_path / "run"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "exphil train: error: --epochs 0: must be 1 or more (--debug shows more)"
    )
    assert not (tmp_path / "run").exists()
    debug = exphil("train", "--epochs", "0", "--output", str(tmp_path / "run"), "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


@pytest.mark.parametrize("inside_a_file", [False, True])
def test_an_unusable_output_is_one_line_and_exit_2(inside_a_file, tmp_path):
    """(As root, permission bits do not stop a write: a file in the way does.)"""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    output = blocker / "run" if inside_a_file else blocker
    done = exphil("train", "--replays", str(DUMMY), "--output", str(output), *TINY)
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1 and str(blocker) in done.stderr
    assert blocker.read_text() == "not a folder"


def test_eval_json_is_checked_before_the_evaluation(tmp_path):
    done = exphil("eval", "--model", "mlp_quick", "--replays", str(DUMMY),
                  "--json", str(tmp_path / "missing" / "e.json"))  # fmt: skip
    assert done.returncode == 2
    assert "cannot write in" in done.stderr and "replays:" not in done.stderr


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    build(DUMMY, data_dir, "w60")
    output = tmp_path_factory.mktemp("run")
    args = ["train", "--data-dir", str(data_dir), *TINY, "--output", str(output)]
    done = exphil(*args, "--epochs", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    return args, output


def test_rerunning_a_finished_run_changes_nothing(finished):
    args, output = finished
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file() and "logs" not in p.parts}
    done = exphil(*args, "--epochs", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "is a finished run (1 epochs)" in done.stdout and str(output / "preset") in done.stdout
    after = {p: p.read_bytes() for p in output.rglob("*") if p.is_file() and "logs" not in p.parts}
    assert after == before


def test_rerunning_with_other_settings_names_them(finished):
    args, output = finished
    done = exphil(*args, "--epochs", "1", "--lr", "0.01")
    assert done.returncode == 2
    assert "--lr 0.01 (the run's: 0.0003)" in done.stderr
    assert len(json.loads((output / "epochs.json").read_text())) == 1


def test_more_epochs_train_a_finished_run_further(finished):
    args, output = finished
    done = exphil(*args, "--epochs", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Epoch 1/2" not in done.stdout and "Epoch 2/2" in done.stdout
    assert len(json.loads((output / "epochs.json").read_text())) == 2


@pytest.mark.parametrize("command", ["zoo", "eval", "build-data"])
def test_commands_print_no_backend_start_up_lines(command, tmp_path):
    env = {"RUST_BACKTRACE": "1"}
    args = {
        "zoo": ["zoo"],
        "eval": ["eval", "--model", "mlp_quick", "--replays", str(DUMMY)],
        "build-data": [
            "build-data",
            "--replays",
            str(_bad_and_good(tmp_path)),
            "--data-dir",
            str(tmp_path / "tfds"),
        ],  # fmt: skip
    }[command]
    done = exphil(*args, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not NOISE.findall(done.stderr), done.stderr[-3000:]


def _bad_and_good(tmp_path) -> Path:
    """Every broken replay of shared/ (some make peppi panic) beside the three good ones."""
    folder = tmp_path / "replays"
    folder.mkdir()
    for path in [*BAD_REPLAYS.glob("*.slp"), *DUMMY.glob("*.slp")]:
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def _parse(argv):
    from exphil_keras import cli

    return cli.make_parser().parse_args(argv)


def test_a_replay_is_read_and_reported_whatever_bytes_its_name_holds(tmp_path):
    folder = tmp_path / "replays"
    folder.mkdir()
    odd = os.fsdecode(bytes(folder) + b"/g\xff\xfeame.slp")  # not UTF-8
    Path(odd).write_bytes((DUMMY / "hohav__test_replays_dash_back.slp").read_bytes())
    env = {"PYTHONIOENCODING": "utf-8:strict"}
    done = exphil("build-data", "--replays", str(folder), "--data-dir", str(tmp_path / "tfds"),
                  env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "files read: 1, skipped: 0" in done.stdout
    report = json.loads(next((tmp_path / "tfds").rglob("build_report.json")).read_text())
    assert [g["file"] for split in report["games_used"].values() for g in split.values()] == [
        os.fsdecode(b"g\xff\xfeame.slp")
    ]


@pytest.mark.parametrize(
    ("replay", "message"),
    [
        ("hohav__test_replays_v0.1.slp", "Slippi 0.1.0; libmelee reads replays from Slippi 1.0.0"),
        ("random.slp", "not a Slippi replay"),
        ("PMcca__test_replays_doubles.slp", "4 players (only 2-player games are used)"),
    ],
)
def test_play_replay_refuses_what_it_cannot_play_up_front(replay, message, tmp_path):
    path = REPLAYS / replay
    if replay == "random.slp":
        path = tmp_path / replay
        path.write_bytes(os.urandom(4096))
    done = exphil("play-replay", "--model", "mlp_quick", "--replay", str(path))
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(done.stderr.strip().splitlines()) == 1
    assert str(path) in done.stderr and message in done.stderr


def test_eval_on_a_split_with_no_game_says_so(tmp_path):
    folder = tmp_path / "test_only"
    folder.mkdir()
    (folder / "g.slp").write_bytes((DUMMY / "hohav__test_replays_dash_back.slp").read_bytes())
    done = exphil("eval", "--model", "mlp_quick", "--replays", str(folder), "--split", "validation")
    assert done.returncode == 2
    assert f"none of the 1 replays in {folder} is a validation game" in done.stderr


def test_a_full_disk_is_one_line_and_exit_2():
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    done = exphil("eval", "--model", "mlp_quick", "--replays", str(DUMMY), "--json", "/dev/full")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "exphil eval: error: /dev/full: No space left on device (--debug shows more)"
    )


def test_a_data_dir_that_is_a_file_is_refused_before_the_build(tmp_path):
    blocker = tmp_path / "tfds"
    blocker.write_text("not a folder")
    done = exphil("build-data", "--replays", str(DUMMY), "--data-dir", str(blocker))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"exphil build-data: error: --data-dir {blocker}: a file, not a folder (--debug shows more)"
    )
