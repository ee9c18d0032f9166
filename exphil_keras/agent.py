"""The live agent: libmelee game states in, one controller decision per frame out.

A GameState becomes the model's inputs through features.py's own encoders (`assemble_inputs`),
so the bot sees what training saw; the few fields libmelee cannot give back exactly are listed
in LIBMELEE_LOSSY. Ports are libmelee's (1-4). The agent plays at the delays its policy was
trained with (a preset's `frame_delay` and `action_delay`), from its own buffers and Slippi's
online delay together (`Agent`).
"""

from __future__ import annotations

import collections
import csv
import gc
import time
from pathlib import Path

import melee
import numpy as np
from melee.enums import Button, Menu, Stage, to_internal_stage

from exphil_keras import features, policy, timing, zoo

# Input field -> why libmelee's GameState cannot give the value the replay holds (the parity
# test skips exactly these, and asserts every other column agrees).
LIBMELEE_LOSSY = {
    "state_age": "libmelee truncates the float frame counter to int (action_frame); "
    "its +1 on zero-indexed actions is undone",
    "hitstun": "libmelee truncates post.misc_as to int (hitstun_frames_left)",
    "hurtbox_state": "libmelee keeps a bool (invulnerable): intangible (2) reads as 1",
    "stage": "libmelee knows the six tournament stages only; any other reads 0 (NO_STAGE)",
}

# Slippi version that added each versioned field: libmelee reads 0 for it in older replays,
# where peppi (and so training) has none, with its present flag 0.
FIELD_SINCE = {
    "airborne": (2, 0, 0),
    "jumps": (2, 0, 0),
    "hitstun": (2, 0, 0),
    "hurtbox_state": (2, 1, 0),
    "vel_self_x_air": (3, 5, 0),
    "vel_self_y": (3, 5, 0),
    "vel_knockback_x": (3, 5, 0),
    "vel_knockback_y": (3, 5, 0),
    "vel_self_x_ground": (3, 5, 0),
    "hitlag": (3, 8, 0),
}

BUTTONS = {name: Button[f"BUTTON_{name}"] for name in features.BUTTON_BITS}
EXTERNAL_STAGE = {
    to_internal_stage(i): i for i in range(256) if to_internal_stage(i) is not Stage.NO_STAGE
}
PARITY_TESTED_SINCE = (3, 7, 0)  # the oldest replay tests/test_agent.py checks
READABLE_SINCE = (1, 0, 0)  # libmelee fails inside its parser on Slippi 0.x replays
CATEGORICAL_HEADS = (*features.STICK_AXES, "shoulder")


def _zero_indexed_actions() -> frozenset:
    """(character, action) pairs whose frame counter libmelee shifts by +1 (actiondata.csv)."""
    with open(Path(melee.__file__).parent / "actiondata.csv", newline="") as f:
        return frozenset(
            (int(row["character"]), int(row["action"]))
            for row in csv.DictReader(f)
            if row["zeroindex"] == "True"
        )


ZERO_INDEXED = _zero_indexed_actions()


def _raw_player(player, missing) -> dict:
    """A PlayerState -> the raw dict `features.encode_player` reads (one row), as peppi's values."""
    character, action = player.character.value, player.action.value
    state_age = player.action_frame - ((character, action) in ZERO_INDEXED)
    raw = {
        "x": [player.position.x],
        "y": [player.position.y],
        "percent": [player.percent],
        "shield": [player.shield_strength],
        "stocks": [player.stock],
        "facing": [1.0 if player.facing else -1.0],
        "state_age": [state_age],
        "action": [action],
        "character": [character],
        "airborne": [0.0 if player.on_ground else 1.0],
        "jumps": [player.jumps_left],
        "hitlag": [player.hitlag_left],
        "hitstun": [player.hitstun_frames_left],
        "hurtbox_state": [1.0 if player.invulnerable else 0.0],
        "vel_self_x_air": [player.speed_air_x_self],
        "vel_self_y": [player.speed_y_self],
        "vel_knockback_x": [player.speed_x_attack],
        "vel_knockback_y": [player.speed_y_attack],
        "vel_self_x_ground": [player.speed_ground_x_self],
    }
    for name in missing:
        raw[name] = None
    nana = player.nana
    if nana is None:
        raw |= {name: [0.0] for name in features.NANA_FIELDS}
        raw |= {"nana_present": [0.0], "nana_action": [0]}
    else:
        raw |= {
            "nana_present": [1.0],
            "nana_x": [nana.position.x],
            "nana_y": [nana.position.y],
            "nana_percent": [nana.percent],
            "nana_facing": [1.0 if nana.facing else -1.0],
            "nana_action": [nana.action.value],
        }
    return raw


def encode_controller_state(state: melee.ControllerState) -> np.ndarray:
    """A libmelee ControllerState -> `features.encode_controller`'s [1, 13] row.

    libmelee maps sticks to [0, 1] (centre 0.5); this maps them back to Melee's [-1, 1].
    """
    bits = sum(bit for name, bit in features.BUTTON_BITS.items() if state.button[BUTTONS[name]])
    (main_x, main_y), (c_x, c_y) = state.main_stick, state.c_stick
    return features.encode_controller(
        [bits],
        [main_x * 2.0 - 1.0],
        [main_y * 2.0 - 1.0],
        [c_x * 2.0 - 1.0],
        [c_y * 2.0 - 1.0],
        [max(state.l_shoulder, state.r_shoulder)],  # libmelee gives the processed value to both
    )


def missing_fields(slippi_version) -> tuple[str, ...]:
    """Versioned fields a replay of `slippi_version` lacks; None: today's Slippi, which has all."""
    if slippi_version is None:
        return ()
    version = tuple(int(v) for v in slippi_version)
    return tuple(name for name, since in FIELD_SINCE.items() if version < since)


def gamestate_inputs(gamestate, port: int, opponent_port: int, slippi_version=None) -> dict:
    """One libmelee GameState -> the model's inputs for that frame (batch 1), as replays give.

    `slippi_version` (e.g. `console.slp_version_tuple`) marks the fields older replays lack.
    """
    missing = missing_fields(slippi_version)
    ego = gamestate.players[port]
    return features.assemble_inputs(
        _raw_player(ego, missing),
        _raw_player(gamestate.players[opponent_port], missing),
        encode_controller_state(ego.controller_state),
        EXTERNAL_STAGE.get(gamestate.stage, 0),
    )


class Agent:
    """Plays `port` against `opponent_port`: `act(gamestate)` once per frame, then `press`.

    Greedy at temperature 0, else samples every head at that temperature, inside the compiled
    `sample_step` (from uniforms the agent's seeded generator draws). The model's streaming
    state carries across frames and restarts when a new game starts (the frame counter goes
    back, as it never does within a game with the Console's default skip_rollback_frames, or a
    menu comes between games). The first game frame does not pay for compiling: the
    step is compiled on construction. Construction also freezes the objects then alive out of
    Python's garbage collector (`gc.freeze`): a full collection over Keras's object graph takes
    about 90 ms, five frames, and would otherwise land inside a frame now and then.

    Delays, as the policy was trained (`read_replay`'s row t: the game at frame t - frame_delay,
    the input at t, the target at t + action_delay): the decision made on seeing frame n is for
    frame n + online_delay + action_delay. Slippi's online delay (libmelee's
    `Console(online_delay=...)`) holds every input back `online_delay` frames, which to the
    policy is seeing the game that much later; the agent holds the game back for the rest,
    `frame_delay - online_delay` frames, and each decision `action_delay - 1` frames before
    `press` sends it. The previous input the policy sees is the game's for that frame, or, under
    online delay, where that input is still in flight, the one the agent decided for it.
    """

    def __init__(
        self,
        model,
        port,
        opponent_port,
        temperature=0.0,
        seed=0,
        slippi_version=None,
        frame_delay=0,
        action_delay=1,
        online_delay=0,
    ):
        if action_delay < 1 or online_delay < 0:
            raise ValueError("action_delay must be 1 or more, online_delay 0 or more")
        if frame_delay < online_delay:
            raise ValueError(
                f"the policy was trained to see the game {frame_delay} frame(s) late; Slippi's "
                f"online delay of {online_delay} would show it {online_delay} (a policy trained "
                f"with frame_delay {online_delay} or more plays there)"
            )
        self.model = model
        self.port = int(port)
        self.opponent_port = int(opponent_port)
        self.temperature = float(temperature)
        self.slippi_version = slippi_version
        self.frame_delay, self.action_delay = int(frame_delay), int(action_delay)
        self.online_delay = int(online_delay)
        self.decision = melee.ControllerState()  # the last decision made
        self.decided_for = None  # the frame it is for; None: no policy decision (a neutral pad)
        self.last_logits = None  # {head: numpy [classes]} of the last decision
        self._rng = np.random.default_rng(seed)
        self._centres = {head: features.bucket_centres(head) for head in CATEGORICAL_HEADS}
        self._state = None
        self._last_frame = None
        self._seen = collections.deque(maxlen=frame_delay - online_delay + 1)  # model inputs
        self._decisions = collections.deque(maxlen=action_delay)  # the oldest is sent next
        idle = {
            name: np.zeros((1, width), np.float32)
            for name, width in features.CONTINUOUS_INPUTS.items()
        }
        idle |= {name: np.zeros(1, np.int32) for name in features.CATEGORICAL_INPUTS}
        model.sample_step(idle, model.initial_state(1), self._uniforms(), self.temperature)
        gc.collect()
        gc.freeze()

    def act(self, gamestate) -> melee.ControllerState:
        """The decision on seeing this frame (also kept as `decision`, for `decided_for`)."""
        self.decision, self.decided_for = melee.ControllerState(), None
        if gamestate.menu_state not in (Menu.IN_GAME, Menu.SUDDEN_DEATH):
            self._last_frame = None  # between games: the next game starts afresh
            self._decisions.clear()
            return self.decision
        if self._last_frame is None or gamestate.frame <= self._last_frame:
            self._state = self.model.initial_state(1)
            self._seen.clear()
            self._decisions.clear()
        self._last_frame = gamestate.frame
        if gamestate.frame >= features.FIRST_PLAYABLE_FRAME:  # the countdown: inputs do nothing
            inputs = gamestate_inputs(gamestate, self.port, self.opponent_port, self.slippi_version)
            prev_input = inputs["prev_input"] if self.online_delay == 0 else self._in_flight()
            self._seen.append(inputs)
            if len(self._seen) == self._seen.maxlen:  # else no frame that old yet, as in training
                self._decide({**self._seen[0], "prev_input": prev_input})
                self.decided_for = gamestate.frame + self.online_delay + self.action_delay
        self._decisions.append(self.decision)
        return self.decision

    def _due(self) -> melee.ControllerState:
        """The decision for the coming frame: the one made action_delay - 1 frames ago, or a
        neutral pad before there is one."""
        full = len(self._decisions) == self._decisions.maxlen
        return self._decisions[0] if full else melee.ControllerState()

    def _in_flight(self) -> np.ndarray:
        """The input decided for the frame the policy now stands at (online delay ahead)."""
        return encode_controller_state(self._due())

    def _uniforms(self) -> np.ndarray:
        return self._rng.random((1, policy.NUM_UNIFORMS), dtype=np.float32)

    def _decide(self, inputs) -> None:
        action, logits, self._state = self.model.sample_step(
            inputs, self._state, self._uniforms(), self.temperature
        )
        self.last_logits = {head: np.asarray(value)[0] for head, value in logits.items()}
        self.decision = self._controller_state({h: np.asarray(v)[0] for h, v in action.items()})

    def _controller_state(self, action) -> melee.ControllerState:
        state = melee.ControllerState()
        for button, down in zip(BUTTONS.values(), action["buttons"], strict=True):
            state.button[button] = bool(down > 0.5)
        values = {h: self._centres[h][int(action[h])] for h in CATEGORICAL_HEADS}
        state.main_stick = (values["main_x"] / 2 + 0.5, values["main_y"] / 2 + 0.5)
        state.c_stick = (values["c_x"] / 2 + 0.5, values["c_y"] / 2 + 0.5)
        state.l_shoulder = float(values["shoulder"])
        return state

    def press(self, controller: melee.Controller) -> None:
        """Apply the decision due next frame to a libmelee Controller (sent at the console's next
        step): the last one, or with action_delay A, the one made A - 1 frames ago."""
        decision = self._due()
        for button in BUTTONS.values():
            if decision.button[button]:
                controller.press_button(button)
            else:
                controller.release_button(button)
        controller.tilt_analog(Button.BUTTON_MAIN, *decision.main_stick)
        controller.tilt_analog(Button.BUTTON_C, *decision.c_stick)
        controller.press_shoulder(Button.BUTTON_L, decision.l_shoulder)
        controller.press_shoulder(Button.BUTTON_R, decision.r_shoulder)


def _ports(gamestate, port):
    """(ego, opponent) libmelee ports; the ego defaults to the lowest human port."""
    ports = sorted(int(p) for p in gamestate.players)
    if len(ports) != 2:
        raise ValueError(f"{len(ports)} players; the agent plays 2-player games only")
    if port is None:
        humans = [p for p in ports if gamestate.players[p].cpu_level == 0]
        if not humans:
            raise ValueError("no human player to compare with; pass a port")
        port = humans[0]
    if port not in ports:
        raise ValueError(f"port {port} is not playing; ports in this game: {ports}")
    return port, next(p for p in ports if p != port)


def _classes(state: melee.ControllerState) -> dict:
    return features.discretise_controller(encode_controller_state(state)[0])


def play_replay(model, replay_path, port=None, frame_delay=0, action_delay=1) -> dict:
    """Run the agent over a replay through libmelee's Console, as if live (greedy), at the
    delays its policy was trained with (the agent buffers the whole frame delay).

    Per frame decided: the agent's decision time (features + step + decoding), and whether its
    decision matches what the player pressed on the frame it is for, `action_delay` frames on
    (buttons: all 8; sticks and shoulder: the same bucket). Beside the wall time it records the
    CPU time the process spent on the decision, which tells a slow decision from one the OS
    scheduler paused.
    """
    # Slippi < 3 only through libmelee's allow_old_version; parity is tested from 3.7 up.
    console = melee.Console(path=str(replay_path), is_dolphin=False, allow_old_version=True)
    console.connect()
    gamestate = console.step()
    if gamestate is None:
        raise ValueError(f"{replay_path}: no frames")
    port, opponent_port = _ports(gamestate, port)
    bot = Agent(
        model,
        port,
        opponent_port,
        slippi_version=console.slp_version_tuple,
        frame_delay=frame_delay,
        action_delay=action_delay,
    )
    seconds, cpu_seconds, frames = [], [], []
    agree = {head: 0 for head in features.TARGETS}
    compared = 0
    pending = {}  # frame -> the classes decided for it
    while gamestate is not None:
        decided = pending.pop(int(gamestate.frame), None)
        if decided is not None:
            pressed = _classes(gamestate.players[port].controller_state)
            for head in features.TARGETS:
                agree[head] += bool(np.all(decided[head] == pressed[head]))
            compared += 1
        start, cpu_start = time.perf_counter(), time.process_time()
        decision = bot.act(gamestate)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        if bot.decided_for is not None:
            seconds.append(elapsed)
            cpu_seconds.append(cpu)
            frames.append(int(gamestate.frame))  # libmelee's is a numpy int32
            pending[int(bot.decided_for)] = _classes(decision)
        gamestate = console.step()
    if not seconds:
        raise ValueError(f"{replay_path}: no playable frames")
    ms, cpu_ms = np.asarray(seconds) * 1e3, np.asarray(cpu_seconds) * 1e3
    over = np.flatnonzero(ms > features.FRAME_BUDGET_MS)
    return {
        "replay": str(replay_path),
        "slippi_version": ".".join(str(v) for v in console.slp_version_tuple),
        "port": port,
        "opponent_port": opponent_port,
        "frame_delay": frame_delay,
        "action_delay": action_delay,
        "frames": len(ms),
        "latency_ms": {
            **timing.spread(ms),
            "over_budget": len(over),
            "budget": features.FRAME_BUDGET_MS,
        },
        "cpu_ms": timing.spread(cpu_ms),
        "over_budget_frames": [
            {"frame": frames[i], "wall_ms": float(ms[i]), "cpu_ms": float(cpu_ms[i])} for i in over
        ],
        "compared_frames": compared,
        "agreement": {head: agree[head] / max(compared, 1) for head in features.TARGETS},
    }


def playing_delay(trained, requested=None, online_delay=0) -> int:
    """The frame delay to play a policy trained at `trained` (a delay, or a range drawn per
    window) at: `requested`, or the least one that Slippi's online delay allows. A ValueError
    for a delay the policy was not trained at."""
    low, high = features.delay_range(trained)
    delay = max(low, online_delay) if requested is None else requested
    if not low <= delay <= high:
        raise ValueError(
            f"the policy was trained at frame delay {features.delay_text(trained)};"
            f" it cannot play at {delay}"
            + (f" (Slippi's online delay {online_delay})" if online_delay else "")
        )
    return delay


def play_preset(name_or_path, replay_path, port=None, frame_delay=None) -> dict:
    """`play_replay` with a preset at the delays it was trained with (`frame_delay`, for one
    trained on a range), refusing, before any work, a replay that is broken, not a 2-player
    game or older than libmelee can read."""
    try:
        version = features.probe_replay(replay_path)
    except features.ReplaySkipped as skipped:
        raise ValueError(str(skipped)) from None
    if version < READABLE_SINCE:
        raise ValueError(
            f"{replay_path}: Slippi {'.'.join(map(str, version))}; libmelee reads replays from "
            f"Slippi {'.'.join(map(str, READABLE_SINCE))} on"
        )
    metadata = zoo.info(name_or_path)
    delay = playing_delay(metadata["frame_delay"], frame_delay)
    model = zoo.load(name_or_path, compile=False)
    result = play_replay(model, replay_path, port, delay, metadata["action_delay"])
    return {"model": str(name_or_path), **result}


def _ahead(action_delay: int) -> str:
    return "next input" if action_delay == 1 else f"input {action_delay} frames ahead"


def format_play_report(result: dict) -> str:
    latency, cpu, agreement = result["latency_ms"], result["cpu_ms"], result["agreement"]
    lines = [
        f"{result['replay']} (Slippi {result['slippi_version']}): port {result['port']} vs "
        f"{result['opponent_port']}, {result['frames']} frames decided",
        f"decision latency: median {latency['median']:.2f} ms, p99 {latency['p99']:.2f} ms, "
        f"max {latency['max']:.2f} ms; {latency['over_budget']} frame(s) over "
        f"{latency['budget']:.2f} ms",
        f"decision CPU time: median {cpu['median']:.2f} ms, p99 {cpu['p99']:.2f} ms, "
        f"max {cpu['max']:.2f} ms",
        *(
            f"  over budget: frame {f['frame']}: {f['wall_ms']:.2f} ms wall, "
            f"{f['cpu_ms']:.2f} ms CPU"
            for f in result["over_budget_frames"]
        ),
        f"agreement with the player's {_ahead(result['action_delay'])} "
        f"({result['compared_frames']} frames; the policy sees the game "
        f"{result['frame_delay']} frame(s) late):",
        *(f"  {head:<9} {value:.4f}" for head, value in agreement.items()),
    ]
    if tuple(int(v) for v in result["slippi_version"].split(".")) < PARITY_TESTED_SINCE:
        lines.append(
            "note: libmelee's reading of replays older than Slippi "
            f"{'.'.join(map(str, PARITY_TESTED_SINCE))} is not parity-tested against training"
        )
    return "\n".join(lines)
