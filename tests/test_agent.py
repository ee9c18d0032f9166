"""The live agent against real libmelee and real replays: train/serve parity, step parity, CLI."""

import gc
import json
import time

import melee
import numpy as np
import pytest
from exphil_cli import exphil
from keras import ops
from melee.enums import Stage, to_internal_stage
from shared_data import REPLAYS

from exphil_keras import agent, features, policy, zoo

# Replay -> last frame id to stream (None: all). Five Slippi versions, each chosen for what it
# covers; the cut-offs keep the test fast and still reach what matters in each game.
PARITY = {
    "project-slippi__slp_consistencyTest_NessVFox-Absorb.slp": None,  # 3.7.0: no hitlag yet
    "hohav__tests_data_ics2.slp": 2000,  # 3.12.0: Nana alive, then dead from frame 1680
    "hohav__tests_data_duplicate_game_end.slp": 600,  # 3.15.0: rollbacks that differ (-34, 303)
    "hohav__tests_data_v3.16.slp": None,  # 3.16.0: intangible hurtboxes
    "blasphemetheus__test_fixtures_replays_fox_multishine.slp": None,  # 3.19.1
}
SHORT = "hohav__tests_data_v3.16.slp"
TOLERANCE = 1e-5


def gamestates(path, last_frame=None):
    """(gamestate, slippi version) per frame, as the live Console hands them out."""
    console = melee.Console(path=str(path), is_dolphin=False)
    console.connect()
    while (gamestate := console.step()) is not None:
        if last_frame is not None and gamestate.frame > last_frame:
            return
        yield gamestate, console.slp_version_tuple


def lossy_columns(name: str) -> list[int]:
    """Columns of input `name` that LIBMELEE_LOSSY excuses (all of them for a whole input)."""
    if name in agent.LIBMELEE_LOSSY:
        return list(range(features.CONTINUOUS_INPUTS.get(name, 1)))
    if name in ("ego_state", "opp_state"):
        lossy = [f for f in agent.LIBMELEE_LOSSY if f in features.PLAYER_FEATURES]
        return [features.PLAYER_FEATURES.index(f) for f in lossy]
    return []


@pytest.fixture(scope="module")
def streamed():
    """Replay -> [(agent's inputs, read_replay's inputs)], one pair per perspective."""
    out = {}
    for name, last_frame in PARITY.items():
        replay = features.read_replay(REPLAYS / name)
        rows = {
            view.port: {int(f): t for t, f in enumerate(view.frame_ids)}
            for view in replay.perspectives
        }
        served = {view.port: [] for view in replay.perspectives}
        for gamestate, version in gamestates(REPLAYS / name, last_frame):
            for view in replay.perspectives:
                t = rows[view.port].get(int(gamestate.frame))
                if t is not None:
                    inputs = agent.gamestate_inputs(
                        gamestate, view.port + 1, view.opponent_port + 1, version
                    )
                    served[view.port].append((t, inputs))
        out[name] = []
        for view in replay.perspectives:
            index = [t for t, _ in served[view.port]]
            assert index == list(range(len(index))), "libmelee skipped or repeated a frame"
            assert last_frame is not None or len(index) == view.num_frames
            stacked = {k: np.concatenate([x[k] for _, x in served[view.port]]) for k in view.inputs}
            out[name].append((stacked, {k: v[: len(index)] for k, v in view.inputs.items()}))
    return out


def test_lossy_fields_name_real_inputs():
    known = set(features.PLAYER_FEATURES) | set(features.CATEGORICAL_INPUTS)
    assert set(agent.LIBMELEE_LOSSY) <= known


@pytest.mark.parametrize("name", PARITY)
def test_libmelee_inputs_equal_replay_inputs(name, streamed):
    for served, trained in streamed[name]:
        assert len(served["stage"]) > 100
        for key, expected in trained.items():
            actual = served[key].astype(np.float64)
            expected = expected.astype(np.float64)
            if actual.ndim == 1:
                actual, expected = actual[:, None], expected[:, None]
            keep = np.setdiff1d(np.arange(actual.shape[1]), lossy_columns(key))
            wrong = np.abs(actual[:, keep] - expected[:, keep]) > TOLERANCE
            where = [
                features.PLAYER_FEATURES[keep[c]] if key.endswith("_state") else int(keep[c])
                for c in np.unique(np.nonzero(wrong)[1])
            ]
            assert not wrong.any(), f"{key}: columns {where} disagree on {wrong.any(1).sum()} rows"


def test_every_lossy_player_field_does_disagree(streamed):
    """The list is as short as the truth: each player field in it differs on real frames."""
    differ = set()
    for pairs in streamed.values():
        for served, trained in pairs:
            for field in agent.LIBMELEE_LOSSY:
                if field in features.PLAYER_FEATURES:
                    c = features.PLAYER_FEATURES.index(field)
                    gap = np.abs(served["ego_state"][:, c] - trained["ego_state"][:, c])
                    if (gap > TOLERANCE).any():
                        differ.add(field)
    assert differ == set(agent.LIBMELEE_LOSSY) - {"stage"}


def test_stages_libmelee_knows_map_back_exactly():
    """Stage is lossy only off the tournament stages: those six map back to the replay's ids."""
    known = [i for i in range(features.NUM_STAGES) if to_internal_stage(i) is not Stage.NO_STAGE]
    assert len(known) == 6
    assert all(agent.EXTERNAL_STAGE[to_internal_stage(i)] == i for i in known)


@pytest.fixture(scope="module")
def gru():
    return zoo.load("gru_standard", compile=False)


def agent_logits(model, name, frames, decisions=False, **kwargs):
    """The agent's logits and inputs on the first `frames` playable frames of a replay (and,
    with `decisions`, the decision it made on each)."""
    states = [g for g, _ in gamestates(REPLAYS / name)]
    player = agent.Agent(model, 1, 2, **kwargs)
    logits, inputs, made = [], [], []
    for gamestate in states:
        made.append(player.act(gamestate))
        if gamestate.frame >= features.FIRST_PLAYABLE_FRAME:
            logits.append(player.last_logits)
            inputs.append(agent.gamestate_inputs(gamestate, 1, 2))
            if len(logits) == frames:
                made = made[-frames:]
                return (player, logits, inputs, states) + ((made,) if decisions else ())
    raise AssertionError(f"{name} has fewer than {frames} playable frames")


def test_agent_logits_equal_the_windowed_policy(gru):
    frames = gru.window
    player, logits, inputs, states = agent_logits(gru, SHORT, frames)
    window = {k: np.stack([x[k][0] for x in inputs])[None] for k in inputs[0]}
    windowed = {head: np.asarray(v)[0] for head, v in gru(window).items()}
    for t in range(frames):
        for head in features.TARGETS:
            np.testing.assert_allclose(logits[t][head], windowed[head][t], atol=1e-4)
    # A second game (the frame counter goes back) starts from a fresh state: same logits again.
    again = []
    for gamestate in states:
        player.act(gamestate)
        if gamestate.frame >= features.FIRST_PLAYABLE_FRAME:
            again.append(player.last_logits)
            if len(again) == frames:
                break
    for first, second in zip(logits, again, strict=True):
        for head in features.TARGETS:
            np.testing.assert_allclose(first[head], second[head], atol=1e-5)


def test_greedy_decision_is_the_argmax(gru):
    player, logits, _, _ = agent_logits(gru, SHORT, 5)
    decision, last = player.decision, logits[-1]
    classes = features.discretise_controller(agent.encode_controller_state(decision)[0])
    np.testing.assert_array_equal(classes["buttons"] > 0.5, last["buttons"] > 0)
    for head in agent.CATEGORICAL_HEADS:
        assert classes[head] == np.argmax(last[head])
    assert gc.get_freeze_count() > 0  # the agent froze the model's objects out of the collector


def agent_draws(model, temperature, seed, frames=40):
    """The classes the agent chose on the first `frames` playable frames of SHORT, and the
    classes `policy.draw` gives for the same logits from the uniforms its seed yields."""
    player, logits, _, _, decisions = agent_logits(
        model, SHORT, frames, temperature=temperature, seed=seed, decisions=True
    )
    rng = np.random.default_rng(seed)
    rng.random((1, policy.NUM_UNIFORMS), dtype=np.float32)  # the warm-up step's draw
    made, expected = [], []
    for frame_logits, decision in zip(logits, decisions, strict=True):
        uniforms = rng.random((1, policy.NUM_UNIFORMS), dtype=np.float32)
        made.append(features.discretise_controller(agent.encode_controller_state(decision)[0]))
        expected.append(
            {
                head: ops.convert_to_numpy(policy.draw(head, z[None], uniforms, temperature))[0]
                for head, z in frame_logits.items()
            }
        )
    return made, expected


def test_the_agent_draws_with_its_temperature_and_seed(gru):
    """Each decision is `policy.draw` (whose frequencies tests/models/test_autoregressive.py
    checks) of that frame's logits, from the uniforms of a generator seeded with the agent's
    seed, at the agent's temperature: so it neither ignores its temperature nor its seed."""
    made, expected = agent_draws(gru, temperature=0.7, seed=11)
    for t, (chose, drawn) in enumerate(zip(made, expected, strict=True)):
        np.testing.assert_array_equal(chose["buttons"] > 0.5, drawn["buttons"] > 0.5, f"frame {t}")
        for head in agent.CATEGORICAL_HEADS:
            assert int(chose[head]) == int(drawn[head]), f"frame {t}, {head}"
    greedy, _ = agent_draws(gru, temperature=0.0, seed=11)
    other, _ = agent_draws(gru, temperature=0.7, seed=12)
    heads = agent.CATEGORICAL_HEADS
    # The real logits at 0.7 do draw off the argmax now and then, and another seed draws apart.
    assert any(int(s[h]) != int(g[h]) for s, g in zip(made, greedy, strict=True) for h in heads)
    assert any(int(s[h]) != int(o[h]) for s, o in zip(made, other, strict=True) for h in heads)


def test_cli_play_replay_prints_latency_and_agreement(tmp_path):
    out = tmp_path / "play.json"
    done = exphil("play-replay", "--model", "gru_standard", "--replay", REPLAYS / SHORT,
                  "--json", out, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "decision latency: median" in done.stdout and "p99" in done.stdout
    assert "agreement with the player's next input" in done.stdout
    assert "decision CPU time: median" in done.stdout
    result = json.loads(out.read_text())
    assert result["frames"] > 200 and result["compared_frames"] == result["frames"] - 1
    assert result["latency_ms"]["median"] > 0 and result["cpu_ms"]["median"] > 0
    assert len(result["over_budget_frames"]) == result["latency_ms"]["over_budget"]
    assert set(result["agreement"]) == set(features.TARGETS)
    assert all(0.0 <= v <= 1.0 for v in result["agreement"].values())


class _PausedOnce:
    """A policy whose 30th step sleeps past the frame budget: wall time without CPU time."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def initial_state(self, batch):
        return self.model.initial_state(batch)

    def sample_step(self, *args):
        self.calls += 1
        if self.calls == 30:
            time.sleep(features.FRAME_BUDGET_MS / 1e3 + 0.01)
        return self.model.sample_step(*args)


def test_play_replay_reports_each_frame_over_budget(gru):
    result = agent.play_replay(_PausedOnce(gru), REPLAYS / SHORT)
    json.dumps(result)  # the report is JSON, over-budget frames included
    assert result["latency_ms"]["over_budget"] >= 1
    assert len(result["over_budget_frames"]) == result["latency_ms"]["over_budget"]
    paused = max(result["over_budget_frames"], key=lambda f: f["wall_ms"])
    assert paused["wall_ms"] > features.FRAME_BUDGET_MS + 5
    assert paused["cpu_ms"] < paused["wall_ms"] - 5  # sleeping is not computing
    assert "over budget: frame" in agent.format_play_report(result)


class _Recording:
    """A policy that keeps the inputs the agent feeds it, frame by frame."""

    def __init__(self, model):
        self.model, self.fed = model, []

    def initial_state(self, batch):
        return self.model.initial_state(batch)

    def sample_step(self, inputs, *args):
        self.fed.append(inputs)
        return self.model.sample_step(inputs, *args)


def delayed_agent_inputs(model, frame_delay, action_delay, online_delay=0):
    """{frame seen: (inputs fed, frame decided for)} over SHORT, and the agent's decisions."""
    recording = _Recording(model)
    delays = dict(frame_delay=frame_delay, action_delay=action_delay, online_delay=online_delay)
    player = agent.Agent(recording, 1, 2, **delays)
    recording.fed.clear()  # the warm-up step
    fed, decisions = {}, {}
    for gamestate, _ in gamestates(REPLAYS / SHORT):
        decisions[int(gamestate.frame)] = player.act(gamestate)
        if player.decided_for is not None:
            fed[int(gamestate.frame)] = (recording.fed[-1], player.decided_for)
    assert len(recording.fed) == len(fed)  # the policy decides only when it has a frame that old
    return fed, decisions


def assert_inputs_equal(served: dict, trained: dict, skip=()):
    for key, expected in trained.items():
        if key in skip:
            continue
        actual = np.asarray(served[key], np.float64).reshape(len(expected), -1)
        expected = np.asarray(expected, np.float64).reshape(len(expected), -1)
        keep = np.setdiff1d(np.arange(actual.shape[1]), lossy_columns(key))
        np.testing.assert_allclose(actual[:, keep], expected[:, keep], atol=TOLERANCE, err_msg=key)


@pytest.mark.parametrize("frame_delay, action_delay", [(0, 1), (4, 1), (3, 2)])
def test_a_delayed_agent_feeds_the_rows_it_was_trained_on(gru, frame_delay, action_delay):
    """The agent's inputs on seeing frame t are read_replay's row t at the same delays: the game
    at t - frame_delay, the input at t; its decision is for t + action_delay."""
    fed, _ = delayed_agent_inputs(gru, frame_delay, action_delay)
    replay = features.read_replay(REPLAYS / SHORT, action_delay, frame_delay)
    view = next(v for v in replay.perspectives if v.port == 0)
    last = int(view.frame_ids[-1])  # the last row; the agent decides on to the end of the game
    assert sorted(fed) == [*map(int, view.frame_ids), *range(last + 1, last + action_delay + 1)]
    for t, frame in enumerate(view.frame_ids):
        inputs, decided_for = fed[int(frame)]
        assert decided_for == frame + action_delay
        assert_inputs_equal(inputs, {k: v[t : t + 1] for k, v in view.inputs.items()})


def test_a_policy_plays_only_at_a_delay_it_was_trained_at():
    assert agent.playing_delay(18) == 18
    assert agent.playing_delay([0, 18]) == 0  # a range: the least delay, the quickest reactions
    assert agent.playing_delay([0, 18], online_delay=2) == 2
    assert agent.playing_delay([0, 18], requested=12) == 12
    with pytest.raises(ValueError, match="trained at frame delay 18; it cannot play at 6"):
        agent.playing_delay(18, requested=6)
    with pytest.raises(ValueError, match="trained at frame delay 0-18; it cannot play at 20"):
        agent.playing_delay([0, 18], online_delay=20)


def test_online_delay_stands_in_for_the_agents_own_frame_delay(gru):
    """Under Slippi's online delay d the agent buffers frame_delay - d frames: on seeing frame n
    it feeds the game of row n + d, and as the previous input the decision it made for n + d."""
    frame_delay, action_delay, online = 4, 2, 3
    fed, decisions = delayed_agent_inputs(gru, frame_delay, action_delay, online)
    replay = features.read_replay(REPLAYS / SHORT, action_delay, frame_delay)
    view = next(v for v in replay.perspectives if v.port == 0)
    rows = {int(f): t for t, f in enumerate(view.frame_ids)}
    checked = 0
    for n, (inputs, decided_for) in fed.items():
        assert decided_for == n + online + action_delay
        t = rows.get(n + online)
        if t is None:  # past the replay's last row
            continue
        assert_inputs_equal(
            inputs, {k: v[t : t + 1] for k, v in view.inputs.items()}, {"prev_input"}
        )
        in_flight = decisions.get(n - action_delay, melee.ControllerState())
        np.testing.assert_array_equal(
            inputs["prev_input"], agent.encode_controller_state(in_flight)
        )
        checked += 1
    assert checked > 100
    with pytest.raises(ValueError, match="online delay of 3"):
        agent.Agent(gru, 1, 2, frame_delay=2, online_delay=3)


def test_play_replay_compares_each_decision_with_the_frame_it_is_for(gru):
    result = agent.play_replay(gru, REPLAYS / SHORT, frame_delay=3, action_delay=2)
    playable = features.read_replay(REPLAYS / SHORT).num_frames
    assert result["frames"] == playable - 3  # no decision before the game is 3 frames old
    assert result["compared_frames"] == result["frames"] - 2  # the last two are for no frame
    assert "input 2 frames ahead" in agent.format_play_report(result)
