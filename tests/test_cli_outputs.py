"""What a user sees from the README's commands that tests/test_cli.py does not cover: the games
`train --max-files` trains on, `eval`'s default split, `zoo`'s list and metadata,
`play-replay --port`, and the distribution flags that cannot run together. Each runs the real
command in a subprocess and reads what it printed and wrote; the expected figures are computed
here from the replays, not taken from the command."""

import json
from pathlib import Path

import pytest
from exphil_cli import exphil
from shared_data import REPLAYS

from exphil_keras import features, zoo

DUMMY = Path(features.__file__).resolve().parent / "datasets" / "slippi_windows" / "dummy_data"
VALIDATION_GAME = DUMMY / "project-slippi__slp_consistencyTest_YoshiVDK-Egg-13.slp"
TWO_CPUS = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
TINY = ["--backbone", "mlp", "--hidden-size", "8", "--batch-size", "4"]


def one_line_error(done, command) -> str:
    """The message of a user error: exit 2, one line on stderr, nothing else."""
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    prefix, suffix = f"exphil {command}: error: ", " (--debug shows more)"
    assert lines[0].startswith(prefix) and lines[0].endswith(suffix), lines[0]
    return lines[0][len(prefix) : -len(suffix)]


# --- exphil train --max-files ---------------------------------------------------------------


def test_train_max_files_trains_on_the_first_games_by_sha256(manifest, tmp_path):
    """The three shortest training games (and a validation game); --max-files 2 trains on the
    two whose sha256 sort first, and the run's record says which and how many frames."""
    train_games = sorted(
        (row for row in manifest.values() if _usable(row) and _split(row) == "train"),
        key=lambda row: int(row["frames_peppi"]),
    )[:3]
    replays = tmp_path / "replays"
    replays.mkdir()
    for row in train_games:
        (replays / row["file"]).symlink_to(REPLAYS / row["file"])
    (replays / VALIDATION_GAME.name).symlink_to(VALIDATION_GAME)
    output = tmp_path / "run"
    done = exphil("train", "--replays", str(replays), "--data-dir", str(tmp_path / "tfds"),
                  *TINY, "--epochs", "1", "--max-files", "2", "--output", str(output))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    training = zoo.training(output / "preset")
    first_two = sorted(row["sha256"] for row in train_games)[:2]
    assert sorted(training["data"]["train_games"]) == first_two
    files = {g["file"] for g in training["data"]["train_games"].values()}
    assert files == {manifest_row["file"] for manifest_row in train_games
                     if manifest_row["sha256"] in first_two}  # fmt: skip
    frames = sum(g["frames"] for g in training["data"]["train_games"].values())
    assert training["data"]["train_frames"] == frames > 0
    assert training["max_files"] == 2 and "--max-files 2" in training["command"]


def _usable(row) -> bool:
    """2 humans and a window's worth of play (peppi's count includes the 123-frame start)."""
    two_humans = row["players"] == "2" and row["player_types"] == "human,human"
    return two_humans and int(row["frames_peppi"]) >= 400


def _split(row) -> str:
    return features.split_of(row["sha256"])


# --- exphil eval: the default split ---------------------------------------------------------


def test_eval_by_default_scores_every_game_of_the_folder(tmp_path):
    """`--split` defaults to all (its --help says so): every window of every replay, the
    validation game's 22 among them, scored at its last position."""
    metadata = zoo.info("mlp_quick")
    expected = 0
    for path in sorted(DUMMY.glob("*.slp")):
        replay = features.read_replay(path, min_frames=metadata["window"])
        for view in replay.perspectives:
            starts = features.window_starts(view.num_frames, metadata["window"],
                                            metadata["window"] // 2)  # fmt: skip
            expected += len(starts)
    assert expected > 22  # more than the validation split alone
    out = tmp_path / "eval.json"
    done = exphil("eval", "--model", "mlp_quick", "--replays", str(DUMMY), "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["frames"] == expected
    assert done.stdout.splitlines()[0].endswith(f", {expected} frames")
    assert f"{result['loss']:.4f}" in done.stdout.splitlines()[0]
    assert "default: all" in exphil("eval", "--help").stdout


def test_eval_scores_at_the_frame_delay_asked(tmp_path):
    """`--frame-delay 9`: the windows of the game seen 9 frames late (fewer rows per game)."""
    window, out = zoo.info("mlp_quick")["window"], tmp_path / "eval.json"
    expected = 0
    for path in sorted(DUMMY.glob("*.slp")):
        for view in features.read_replay(path, frame_delay=9, min_frames=window).perspectives:
            expected += len(features.window_starts(view.num_frames, window, window // 2))
    args = ["--model", "mlp_quick", "--replays", str(DUMMY), "--frame-delay", "9"]
    done = exphil("eval", *args, "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (result["frame_delay"], result["frames"]) == (9, expected)
    assert "at frame delay 9" in done.stdout.splitlines()[0]


# --- exphil zoo -----------------------------------------------------------------------------


def test_zoo_lists_every_shipped_preset_with_its_description():
    done = exphil("zoo")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    names = zoo.names()
    assert len(names) == 11 and len(lines) == 2 * len(names)
    assert lines[0::2] == names
    for name, line in zip(names, lines[1::2], strict=True):
        description = json.loads(_metadata_file(name).read_text())["description"]
        assert line == f"    {description}" and len(description) > 20


def test_zoo_name_prints_the_presets_metadata_json():
    done = exphil("zoo", "mlp_quick")
    assert done.returncode == 0, done.stderr[-3000:]
    shown = json.loads(done.stdout)
    assert shown == json.loads(_metadata_file("mlp_quick").read_text())
    assert shown["name"] == "mlp_quick" and shown["backbone"] == "mlp"
    assert set(shown["sha256"]) >= {"config.json", "model.weights.h5"}


def test_zoo_unknown_name_is_one_line_naming_the_shipped_ones():
    message = one_line_error(exphil("zoo", "no_such_preset"), "zoo")
    assert "unknown preset 'no_such_preset'" in message
    assert all(name in message for name in zoo.names())


def _metadata_file(name) -> Path:
    return Path(zoo.__file__).resolve().parent / "presets" / name / "metadata.json"


# --- exphil play-replay --port --------------------------------------------------------------

GAME = REPLAYS / "hohav__tests_data_v3.16.slp"  # 2 humans, ports 1 and 2, 315 frames


def test_play_replay_port_plays_that_port(tmp_path):
    out = tmp_path / "play.json"
    done = exphil("play-replay", "--model", "mlp_quick", "--replay", str(GAME), "--port", "2",
                  "--json", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (result["port"], result["opponent_port"]) == (2, 1)
    assert (
        f"{GAME} (Slippi 3.16.0): port 2 vs 1, {result['frames']} frames decided"
        in (done.stdout.splitlines()[0])
    )
    assert result["frames"] > 200 and result["compared_frames"] == result["frames"] - 1


def test_play_replay_port_not_in_the_game_is_refused(tmp_path):
    done = exphil("play-replay", "--model", "mlp_quick", "--replay", str(GAME), "--port", "3",
                  "--json", str(tmp_path / "play.json"))  # fmt: skip
    message = one_line_error(done, "play-replay")
    assert message == "port 3 is not playing; ports in this game: [1, 2]"
    assert not (tmp_path / "play.json").exists()


# --- exphil train --distribute: what cannot run together ------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--backend", "tensorflow", "--grad-accumulation", "2"],
            "gradient accumulation under tf.distribute fails in Keras; use --backend jax, or a "
            "larger --batch-size instead of accumulating",
        ),
        (
            ["--backend", "jax", "--batch-size", "3"],
            "--batch-size 3 does not divide over 2 devices",
        ),
        (
            ["--backend", "torch"],
            "--distribute data-parallel runs on the jax and tensorflow backends, not torch",
        ),
    ],
)
def test_distribution_flags_that_cannot_run_together_are_refused(flags, message, tmp_path):
    """On 2 devices, refused before any work, and nothing kept in --output: a run record left
    there would refuse the corrected command the message suggests ("holds a run with other
    settings")."""
    output = tmp_path / "run"
    args = ["train", "--data-dir", str(tmp_path / "tfds"), "--backbone", "mlp",
            "--distribute", "data-parallel", "--output", str(output)]  # fmt: skip
    done = exphil(*args, *flags, env=TWO_CPUS)
    assert one_line_error(done, "train") == message
    assert not (output / "run.json").exists(), "a refused run left a run record behind"
    assert not (tmp_path / "tfds").exists()  # refused before the data
