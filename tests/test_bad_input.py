"""Bad input: every kind gives a clear message naming the file, and never stops a build."""

import shutil

import numpy as np
import pytest
from exphil_cli import exphil
from shared_data import BAD_REPLAYS, REPLAYS, read_manifest

from exphil_keras import features
from exphil_keras.replays import find_replays

GOOD = REPLAYS / "alberobruno__server_uploads_Game_20210523T182632.slp"


@pytest.mark.parametrize("name", sorted(read_manifest(BAD_REPLAYS)))
def test_unreadable_replays_are_skipped_with_peppis_error(name, bad_manifest):
    with pytest.raises(features.ReplaySkipped) as skipped:
        features.read_replay(BAD_REPLAYS / name)
    assert name in str(skipped.value)
    assert f"({bad_manifest[name]['error_type']}: " in skipped.value.reason


def test_parser_panic_is_caught():
    panics = [
        n for n, row in read_manifest(BAD_REPLAYS).items() if row["error_type"] == "PanicException"
    ]
    assert panics
    with pytest.raises(features.ReplaySkipped, match="PanicException"):
        features.read_replay(BAD_REPLAYS / panics[0])


def test_truncated_replay_is_skipped(tmp_path):
    cut = tmp_path / "cut.slp"
    data = GOOD.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(features.ReplaySkipped, match="truncated"):
        features.read_replay(cut)


def test_corrupted_bytes_never_crash(tmp_path):
    rng = np.random.default_rng(0)
    data = GOOD.read_bytes()
    header = tmp_path / "header.slp"
    header.write_bytes(b"garbage!" + data[8:])
    with pytest.raises(features.ReplaySkipped, match="not a Slippi replay"):
        features.read_replay(header)
    for i in range(5):
        noisy = np.frombuffer(data, np.uint8).copy()
        noisy[rng.integers(1000, len(data), 50)] = rng.integers(0, 256, 50)
        path = tmp_path / f"noisy{i}.slp"
        path.write_bytes(noisy.tobytes())
        try:  # damaged frame data may still parse; either outcome is fine, a crash is not
            replay = features.read_replay(path)
            assert all(np.isfinite(v.inputs["ego_state"]).all() for v in replay.perspectives)
        except features.ReplaySkipped:
            pass


def test_non_slp_content_and_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("not a replay")
    fake = tmp_path / "picture.slp"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert find_replays(tmp_path) == [fake]
    with pytest.raises(features.ReplaySkipped, match="picture.slp: not a Slippi replay"):
        features.read_replay(fake)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="replay folder not found: .*nowhere"):
        find_replays(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no .slp files under"):
        find_replays(tmp_path)


@pytest.mark.parametrize(
    "name, players",
    [
        ("PMcca__test_replays_doubles.slp", 4),
        ("project-slippi__slp_placementsTest_ffa_1p2p3p_winner_3p.slp", 3),
    ],
)
def test_doubles_and_ffa_are_skipped(name, players):
    with pytest.raises(features.ReplaySkipped, match=f"{players} players"):
        features.read_replay(REPLAYS / name)


def test_single_player_mode_is_skipped():
    with pytest.raises(features.ReplaySkipped, match="homeRun_positive.slp: unsupported game mode"):
        features.read_replay(BAD_REPLAYS / "project-slippi__slp_homeRun_positive.slp")


def test_all_shared_replays_are_read_or_skipped_with_a_reason(manifest):
    skipped = {}
    for name, row in manifest.items():
        try:
            replay = features.read_replay(REPLAYS / name, min_frames=60)
            assert replay.perspectives
            assert len(replay.perspectives) == row["player_types"].split(",").count("human")
        except features.ReplaySkipped as e:
            skipped[name] = e.reason
    not_two = {n for n, row in manifest.items() if row["players"] != "2"}
    assert len(manifest) == 166 and len(not_two) == 8
    assert {n for n, r in skipped.items() if "players" in r} == not_two
    assert all(r.startswith("too short") for n, r in skipped.items() if n not in not_two)


def test_cli_names_the_problem(tmp_path):
    def run(*args):
        return exphil("build-data", *args, timeout=300)

    missing = run("--replays", str(tmp_path / "nowhere"), "--data-dir", str(tmp_path / "d"))
    assert missing.returncode == 2 and "replay folder not found" in missing.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(REPLAYS / "PMcca__test_replays_doubles.slp", bad)
    shutil.copy(BAD_REPLAYS / "altf4__test_artifacts_corrupt_game_2.slp", bad)  # a PNG
    useless = run("--replays", str(bad), "--data-dir", str(tmp_path / "d"))
    assert useless.returncode == 2, useless.stderr
    assert "error: no usable game under" in useless.stderr
    for reason in ("doubles.slp: 4 players", "corrupt_game_2.slp: not a Slippi replay"):
        assert reason in useless.stderr
    # A file whose header reads but whose frames make peppi panic: the error names it too.
    shutil.copy(BAD_REPLAYS / "altf4__test_artifacts_test_game_1.slp", bad)
    useless = run("--replays", str(bad), "--data-dir", str(tmp_path / "d"))
    assert useless.returncode == 2, useless.stderr
    assert "error: no usable game in the" in useless.stderr
    assert "test_game_1.slp: unreadable (PanicException" in useless.stderr
