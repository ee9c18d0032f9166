"""features.py against peppi-py and MANIFEST.tsv, on real replays."""

from pathlib import Path

import numpy as np
import peppi_py
import pytest
from shared_data import REPLAYS

from exphil_keras import features

DUPLICATE_END = REPLAYS / "hohav__tests_data_duplicate_game_end.slp"
HUMAN_VS_CPU = "PMcca__test_replays_sheik_vs_ics_yoshis.slp"  # Slippi 0.1.0
ICE_CLIMBERS = REPLAYS / "hohav__tests_data_ics2.slp"
SEVERAL = [
    "alberobruno__server_uploads_Game_20210523T182632.slp",
    "hohav__tests_data_duplicate_game_end.slp",
    "hohav__tests_data_ics2.slp",
    "Walnut356__Modern_Replays_Game_20221227T212019.slp",
    HUMAN_VS_CPU,
]


def port_data(game, port):
    """frames.ports holds the players present, in start.players order, not indexed by port."""
    index = [int(p.port) for p in game.start.players].index(port)
    return game.frames.ports[index]


def unique_frame_rows(path):
    """Reference dedup: first row of each frame id >= -39, by a plain Python loop."""
    ids = peppi_py.read_slippi(str(path)).frames.id.to_pylist()
    first = {}
    for row, frame in enumerate(ids):
        first.setdefault(frame, row)
    return {f: r for f, r in sorted(first.items()) if f >= features.FIRST_PLAYABLE_FRAME}


@pytest.mark.parametrize("name", SEVERAL)
def test_frame_counts_match_peppi_and_manifest(name, manifest):
    game = peppi_py.read_slippi(str(REPLAYS / name))
    assert len(game.frames.id) == int(manifest[name]["frames_peppi"])
    replay = features.read_replay(REPLAYS / name)
    assert replay.num_frames == len(unique_frame_rows(REPLAYS / name))
    assert replay.sha256 == manifest[name]["sha256"]
    assert replay.slippi_version == manifest[name]["slippi_version"]
    for view in replay.perspectives:
        assert view.num_frames == replay.num_frames - 1  # the last frame has no target
        assert np.all(np.diff(view.frame_ids) == 1)


def test_rollback_dedup_keeps_first_occurrence():
    game = peppi_py.read_slippi(str(DUPLICATE_END))
    ids = game.frames.id.to_numpy()
    assert len(ids) == 6517 and len(np.unique(ids)) == 5023
    first_rows = unique_frame_rows(DUPLICATE_END)
    replay = features.read_replay(DUPLICATE_END)
    view = replay.perspectives[0]
    x = port_data(game, view.port).leader.post.position.x.to_numpy()
    # Frames whose repeated rows disagree: the kept value must be the first one.
    differing = [f for f in first_rows if len(set(x[ids == f])) > 1]
    assert differing, "this replay has rollback frames with differing positions"
    for frame in differing:
        t = int(np.flatnonzero(view.frame_ids == frame)[0])
        x_first = x[first_rows[frame]]
        assert view.inputs["ego_state"][t, 0] == pytest.approx(x_first / 100.0, abs=1e-6)
        assert not np.isclose(x[ids == frame][-1] / 100.0, x_first / 100.0)


def test_perspectives_swap_ego_and_opponent():
    replay = features.read_replay(REPLAYS / SEVERAL[0])
    a, b = replay.perspectives
    assert (a.port, a.opponent_port) == (b.opponent_port, b.port)
    np.testing.assert_array_equal(a.inputs["ego_state"], b.inputs["opp_state"])
    np.testing.assert_array_equal(a.inputs["opp_state"], b.inputs["ego_state"])
    for field in ("action", "nana_action", "character"):
        np.testing.assert_array_equal(a.inputs[f"ego_{field}"], b.inputs[f"opp_{field}"])
    assert not np.array_equal(a.inputs["prev_input"], b.inputs["prev_input"])


def test_cpu_player_is_never_ego(manifest):
    assert manifest[HUMAN_VS_CPU]["player_types"] == "human,cpu"
    replay = features.read_replay(REPLAYS / HUMAN_VS_CPU)
    assert [v.port for v in replay.perspectives] == [0]
    with_cpu = features.read_replay(REPLAYS / HUMAN_VS_CPU, include_cpu_egos=True)
    assert [v.port for v in with_cpu.perspectives] == [0, 1]


@pytest.mark.parametrize("action_delay", [1, 3])
def test_target_is_recorded_input_action_delay_frames_later(action_delay):
    path = REPLAYS / SEVERAL[0]
    game = peppi_py.read_slippi(str(path))
    rows = unique_frame_rows(path)
    view = features.read_replay(path, action_delay=action_delay).perspectives[1]
    pre = port_data(game, view.port).leader.pre
    buttons, stick_x = pre.buttons_physical.to_numpy(), pre.joystick.x.to_numpy()
    for t in (0, 500, view.num_frames - 1):
        later = rows[int(view.frame_ids[t]) + action_delay]
        a_pressed = float(buttons[later] & 0x0100 != 0)
        assert view.targets["buttons"][t, 0] == a_pressed
        assert view.targets["main_x"][t] == int(np.floor((stick_x[later] + 1) / 2 * 16 + 0.5))
        # The previous input is what was pressed at t itself.
        assert view.inputs["prev_input"][t, 8] == pytest.approx(
            stick_x[rows[int(view.frame_ids[t])]]
        )
    np.testing.assert_array_equal(
        features.discretise_controller(view.inputs["prev_input"][action_delay:])["main_y"],
        view.targets["main_y"][:-action_delay],
    )


def test_frame_delay_shows_older_state():
    path = REPLAYS / SEVERAL[0]
    now = features.read_replay(path).perspectives[0]
    late = features.read_replay(path, frame_delay=2).perspectives[0]
    # Row t of the delayed view is frame now.frame_ids[t + 2]: its input and target are that
    # frame's, its game state is two frames older.
    np.testing.assert_array_equal(late.frame_ids, now.frame_ids[2:])
    np.testing.assert_array_equal(late.inputs["ego_state"], now.inputs["ego_state"][:-2])
    np.testing.assert_array_equal(late.inputs["prev_input"], now.inputs["prev_input"][2:])
    np.testing.assert_array_equal(late.targets["main_x"], now.targets["main_x"][2:])


@pytest.mark.parametrize(
    "name, present",
    [
        (HUMAN_VS_CPU, "0000000000"),  # Slippi 0.1.0: none of them
        ("altf4__test_artifacts_test_game_2.slp", "1101000000"),  # 2.0.1
        ("Walnut356__Modern_Replays_Game_20221227T212019.slp", "1111111111"),  # 3.14.0
    ],
)
def test_versioned_fields_have_present_flags(name, present, manifest):
    assert list(features.VERSIONED_FIELDS)[:5] == [
        "airborne",
        "jumps",
        "hitlag",
        "hitstun",
        "hurtbox_state",
    ]
    state = features.read_replay(REPLAYS / name).perspectives[0].inputs["ego_state"]
    for field, expected in zip(features.VERSIONED_FIELDS, present, strict=True):
        flag = state[:, features.PLAYER_FEATURES.index(f"{field}_present")]
        value = state[:, features.PLAYER_FEATURES.index(field)]
        assert np.all(flag == int(expected)), (manifest[name]["slippi_version"], field)
        if expected == "0":
            assert np.all(value == 0)


def test_nana_is_seen_and_internal_character_ids_are_used():
    replay = features.read_replay(ICE_CLIMBERS)
    ics = next(v for v in replay.perspectives if 10 in v.inputs["ego_character"])  # 10 = Popo
    game = peppi_py.read_slippi(str(ICE_CLIMBERS))
    rows = unique_frame_rows(ICE_CLIMBERS)
    alive = (
        port_data(game, ics.port).follower.post.position.x.is_valid().to_numpy(zero_copy_only=False)
    )
    expected = alive[[rows[int(f)] for f in ics.frame_ids]]
    assert 0 < expected.sum() < len(expected)  # she dies in this game
    state = ics.inputs["ego_state"]
    present = state[:, features.PLAYER_FEATURES.index("nana_present")]
    np.testing.assert_array_equal(present, expected)
    nana_columns = [features.PLAYER_FEATURES.index(n) for n in features.NANA_FIELDS]
    assert np.all(state[present == 0][:, nana_columns] == 0)
    assert np.all(ics.inputs["ego_nana_action"][present == 0] == 0)
    assert np.any(ics.inputs["ego_nana_action"][present == 1] > 0)
    other = ics.inputs["opp_state"][:, features.PLAYER_FEATURES.index("nana_present")]
    assert np.all(other == 0)


def test_discretisation_buckets():
    controller = np.zeros((5, features.NUM_CONTROLLER_FEATURES), np.float32)
    controller[:, 8] = [-1.0, 0.0, 1.0, 0.3125, -0.4375]  # the last two fall on a half
    controller[:, 12] = [0.0, 0.5, 1.0, 0.625, 0.125]
    targets = features.discretise_controller(controller)
    assert targets["main_x"].tolist() == [0, 8, 16, 11, 5]  # halves round up, like ExPhil
    assert targets["shoulder"].tolist() == [0, 2, 4, 3, 1]
    assert targets["main_y"].tolist() == [8] * 5


def test_split_is_by_whole_game_from_sha256():
    assert features.split_of("00000000" + "f" * 56) == "validation"  # k = 0
    assert features.split_of("00000001" + "f" * 56) == "test"  # k = 1
    assert features.split_of("00000002" + "f" * 56) == "train"


def test_every_feature_is_documented():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "FEATURES.md").read_text()
    assert f"feature_version {features.FEATURE_VERSION}" in doc
    names = [*features.PLAYER_FEATURES[:17], "nana_present", *features.NANA_FIELDS]
    names += [*features.CATEGORICAL_INPUTS, *features.CONTROLLER_FEATURES, *features.TARGETS]
    assert [n for n in names if f"`{n}`" not in doc] == []
