"""Slippi replay -> per-frame model arrays; the only module that imports peppi_py.

The encoding functions (`encode_player`, `encode_controller`, `assemble_inputs`, ...) take raw
columns as numpy arrays so that every other source of game state (the live libmelee agent) goes
through the same definition. Every constant here is listed in docs/FEATURES.md;
`FEATURE_VERSION` changes whenever any of it changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from pathlib import Path

import numpy as np

FEATURE_VERSION = "1.0"

FIRST_PLAYABLE_FRAME = -39  # slippi-js Frames.FIRST_PLAYABLE
FRAME_BUDGET_MS = 1000 / 60  # Melee runs at 60 frames per second: a decision per frame
NUM_ACTIONS = 1024  # action state ids are clipped to [0, NUM_ACTIONS - 1]
NUM_CHARACTERS = 33  # internal character ids 0..32
NUM_STAGES = 33  # stage ids clipped to [0, NUM_STAGES - 1]
CLIP = 10.0  # every scaled continuous feature is clipped to [-CLIP, CLIP]

# Raw field -> divisor. The name is the raw column `encode_player` reads.
BASE_FIELDS = {
    "x": 100.0,
    "y": 100.0,
    "percent": 100.0,
    "shield": 60.0,
    "stocks": 4.0,
    "facing": 1.0,  # +1 right, -1 left
    "state_age": 100.0,
}
# Fields that older Slippi versions lack: each gets a 0/1 present flag.
VERSIONED_FIELDS = {
    "airborne": 1.0,
    "jumps": 6.0,
    "hitlag": 10.0,
    "hitstun": 100.0,  # post.misc_as
    "hurtbox_state": 2.0,
    "vel_self_x_air": 5.0,
    "vel_self_y": 5.0,
    "vel_knockback_x": 5.0,
    "vel_knockback_y": 5.0,
    "vel_self_x_ground": 5.0,
}
NANA_FIELDS = {"nana_x": 100.0, "nana_y": 100.0, "nana_percent": 100.0, "nana_facing": 1.0}

PLAYER_FEATURES = (
    list(BASE_FIELDS)
    + list(VERSIONED_FIELDS)
    + [f"{name}_present" for name in VERSIONED_FIELDS]
    + ["nana_present"]
    + list(NANA_FIELDS)
)
NUM_PLAYER_FEATURES = len(PLAYER_FEATURES)

# Controller: 8 buttons from pre.buttons_physical, in this order.
BUTTON_BITS = {
    "A": 0x0100,
    "B": 0x0200,
    "X": 0x0400,
    "Y": 0x0800,
    "Z": 0x0010,
    "L": 0x0040,
    "R": 0x0020,
    "D_UP": 0x0008,
}
STICK_AXES = ("main_x", "main_y", "c_x", "c_y")
CONTROLLER_FEATURES = list(BUTTON_BITS) + list(STICK_AXES) + ["shoulder"]
NUM_CONTROLLER_FEATURES = len(CONTROLLER_FEATURES)  # 13
STICK_BUCKETS = 17
SHOULDER_BUCKETS = 5

# The model's contract: name -> per-frame shape (float32) or vocabulary size (int32).
CONTINUOUS_INPUTS = {
    "ego_state": NUM_PLAYER_FEATURES,
    "opp_state": NUM_PLAYER_FEATURES,
    "prev_input": NUM_CONTROLLER_FEATURES,
}
CATEGORICAL_INPUTS = {
    "ego_action": NUM_ACTIONS,
    "opp_action": NUM_ACTIONS,
    "ego_nana_action": NUM_ACTIONS,
    "opp_nana_action": NUM_ACTIONS,
    "ego_character": NUM_CHARACTERS,
    "opp_character": NUM_CHARACTERS,
    "stage": NUM_STAGES,
}
# Head -> number of classes ("buttons" is 8 independent binary targets, float32).
TARGETS = {
    "buttons": len(BUTTON_BITS),
    "main_x": STICK_BUCKETS,
    "main_y": STICK_BUCKETS,
    "c_x": STICK_BUCKETS,
    "c_y": STICK_BUCKETS,
    "shoulder": SHOULDER_BUCKETS,
}


def _scaled(value, divisor):
    return np.clip(np.asarray(value, np.float32) / divisor, -CLIP, CLIP)


def encode_player(raw: dict, num_frames: int) -> np.ndarray:
    """Raw per-frame columns of one player -> float32 [T, NUM_PLAYER_FEATURES].

    `raw` maps the names of BASE_FIELDS, VERSIONED_FIELDS and NANA_FIELDS to arrays of length T.
    A versioned field that is missing (absent or None) is zeros with present flag 0; Nana's
    fields come with `nana_present` (0/1 per frame), and are zero where she is absent.
    """
    out = np.zeros((num_frames, NUM_PLAYER_FEATURES), np.float32)
    col = 0
    for name, divisor in BASE_FIELDS.items():
        out[:, col] = _scaled(raw[name], divisor)
        col += 1
    flags = col + len(VERSIONED_FIELDS)
    for i, (name, divisor) in enumerate(VERSIONED_FIELDS.items()):
        if raw.get(name) is not None:
            out[:, col + i] = _scaled(raw[name], divisor)
            out[:, flags + i] = 1.0
    col = flags + len(VERSIONED_FIELDS)
    nana_present = raw.get("nana_present")
    if nana_present is not None:
        present = np.asarray(nana_present, np.float32)
        out[:, col] = present
        for i, (name, divisor) in enumerate(NANA_FIELDS.items()):
            out[:, col + 1 + i] = _scaled(raw[name], divisor) * present
    return out


def encode_controller(buttons_physical, main_x, main_y, c_x, c_y, shoulder) -> np.ndarray:
    """Controller columns -> float32 [T, 13]: buttons 0/1, sticks [-1, 1], shoulder [0, 1]."""
    buttons = np.asarray(buttons_physical, np.int64)
    cols = [(buttons & bit) != 0 for bit in BUTTON_BITS.values()]
    cols += [np.clip(np.asarray(v, np.float32), -1.0, 1.0) for v in (main_x, main_y, c_x, c_y)]
    cols.append(np.clip(np.asarray(shoulder, np.float32), 0.0, 1.0))
    return np.stack(cols, axis=-1).astype(np.float32)


def _round_half_up(x):
    """ExPhil's and slippi-ai's `trunc(v + 0.5)`: Melee stick values (multiples of 1/80) often
    fall exactly on a half, where numpy's round-half-to-even would pick another bucket."""
    return np.floor(x + 0.5).astype(np.int32)


def discretise_controller(controller: np.ndarray) -> dict[str, np.ndarray]:
    """Encoded controller [..., 13] -> targets: buttons float32 [..., 8], buckets int32 [...]."""
    targets = {"buttons": controller[..., :8].astype(np.float32)}
    for i, axis in enumerate(STICK_AXES):
        value = controller[..., 8 + i]
        targets[axis] = _round_half_up((value + 1.0) / 2.0 * (STICK_BUCKETS - 1))
    targets["shoulder"] = _round_half_up(controller[..., 12] * (SHOULDER_BUCKETS - 1))
    return targets


def bucket_centres(head: str) -> np.ndarray:
    """The controller value each class of a stick or shoulder head stands for."""
    if head == "shoulder":
        return np.linspace(0.0, 1.0, SHOULDER_BUCKETS, dtype=np.float32)
    return np.linspace(-1.0, 1.0, STICK_BUCKETS, dtype=np.float32)


def clip_ids(ids, vocabulary: int) -> np.ndarray:
    return np.clip(np.asarray(ids, np.int64), 0, vocabulary - 1).astype(np.int32)


def assemble_inputs(ego_raw: dict, opp_raw: dict, prev_input: np.ndarray, stage: int) -> dict:
    """Both players' raw columns, the ego's encoded controller [T, 13] and the stage id -> the
    model's inputs dict ([T, ...]); replays and the live agent share it, so they cannot drift.

    A raw dict is `encode_player`'s, plus "action", "character" and (optional) "nana_action".
    """
    num_frames = len(prev_input)
    inputs = {
        "ego_state": encode_player(ego_raw, num_frames),
        "opp_state": encode_player(opp_raw, num_frames),
        "prev_input": prev_input,
    }
    for side, raw in (("ego", ego_raw), ("opp", opp_raw)):
        inputs[f"{side}_action"] = clip_ids(raw["action"], NUM_ACTIONS)
        nana_action = raw.get("nana_action")
        inputs[f"{side}_nana_action"] = (
            clip_ids(nana_action, NUM_ACTIONS)
            if nana_action is not None
            else np.zeros(num_frames, np.int32)
        )
        inputs[f"{side}_character"] = clip_ids(raw["character"], NUM_CHARACTERS)
    inputs["stage"] = np.full(num_frames, min(stage, NUM_STAGES - 1), np.int32)
    return {name: inputs[name] for name in (*CONTINUOUS_INPUTS, *CATEGORICAL_INPUTS)}


# --- Replays -------------------------------------------------------------------------------


class ReplaySkipped(Exception):
    """A replay that yields no examples; `reason` says why, in a few words."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclasses.dataclass
class Perspective:
    """One human player's view of a game: model inputs and targets, one row per kept frame."""

    port: int  # 0-based port of the ego player
    opponent_port: int
    frame_ids: np.ndarray  # int32 [T], the frame id each row's inputs describe
    inputs: dict[str, np.ndarray]  # CONTINUOUS_INPUTS [T, D] float32, CATEGORICAL_INPUTS [T] int32
    targets: dict[str, np.ndarray]  # TARGETS

    @property
    def num_frames(self) -> int:
        return len(self.frame_ids)


@dataclasses.dataclass
class Replay:
    path: str
    sha256: str
    slippi_version: str
    stage: int
    num_frames: int  # unique frames kept (after rollback dedup), before delays
    perspectives: list[Perspective]


# A player's raw controller columns, in `encode_controller`'s argument order.
CONTROLLER_COLUMNS = ("buttons_physical", "main_x", "main_y", "c_x", "c_y", "shoulder")


@dataclasses.dataclass
class Game:
    """A 2-player game as read, before any delay: rollbacks removed, one row per frame id from
    `first_frame` on. What the dataset stores; `perspective` and `frame_arrays` make the model's
    rows from it."""

    path: str
    sha256: str
    slippi_version: str
    stage: int
    first_frame: int
    ports: list[int]  # 0-based port of each player
    humans: list[bool]
    # Per player: encode_player's raw columns, "action", "character", "nana_action" (None where
    # absent) and CONTROLLER_COLUMNS, each an array of num_frames rows.
    players: list[dict[str, np.ndarray | None]]

    @property
    def num_frames(self) -> int:
        return len(self.players[0]["action"])

    def egos(self, include_cpu_egos: bool = False) -> list[int]:
        return [i for i, human in enumerate(self.humans) if human or include_cpu_egos]


def sha256_hex(path) -> str:
    """The file's sha256, read in 1 MiB blocks (replays and preset weights alike)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path) -> str:
    """A replay's sha256; a file that cannot be read is a ReplaySkipped, like any bad replay."""
    try:
        return sha256_hex(path)
    except OSError as e:
        raise ReplaySkipped(path, f"unreadable ({type(e).__name__}: {e.strerror})") from None


# Substrings of peppi's error text -> what they mean for the user.
_READ_ERRORS = {
    "expected: [123, 85, 3, 114, 97, 119": "not a Slippi replay (no .slp header)",
    "failed to fill whole buffer": "truncated",
    "Replay in-progress or corrupted": "truncated or still in progress",
    "unknown event": "corrupt or cut by another tool",
    "zero-size event payload": "corrupt",
    "invalid game end method": "unsupported game mode",
}


@contextlib.contextmanager
def _utf8_path(path):
    """A path peppi can take: peppi-py reads UTF-8 paths only, so a file whose name holds other
    bytes is handed over as its open descriptor (/dev/fd/N), and no game is lost to its name."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        with open(path, "rb") as f:
            yield f"/dev/fd/{f.fileno()}"
        return
    yield str(path)


def _read(path, skip_frames=False):
    import peppi_py

    try:
        with _utf8_path(path) as readable:
            return peppi_py.read_slippi(readable, skip_frames=skip_frames)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # peppi raises OSError, and panics (pyo3 PanicException)
        message = (str(e).strip().splitlines() or [""])[0][:160]
        kind = next((k for marker, k in _READ_ERRORS.items() if marker in message), "unreadable")
        raise ReplaySkipped(path, f"{kind} ({type(e).__name__}: {message})") from None


def _column(arr):
    """pyarrow array -> numpy, nulls (e.g. Nana while she is dead) replaced by 0."""
    if arr is None:
        return None
    if arr.null_count:
        arr = arr.fill_null(0)
    return arr.to_numpy(zero_copy_only=False)


def _raw_player(port_data, rows) -> dict:
    post = port_data.leader.post
    raw = {
        "x": _column(post.position.x)[rows],
        "y": _column(post.position.y)[rows],
        "percent": _column(post.percent)[rows],
        "shield": _column(post.shield)[rows],
        "stocks": _column(post.stocks)[rows],
        "facing": _column(post.direction)[rows],
        "state_age": (
            _column(post.state_age)[rows]
            if post.state_age is not None
            else np.zeros(len(rows), np.float32)
        ),
        "action": _column(post.state)[rows],
        "character": _column(post.character)[rows],
    }
    optional = {
        "airborne": post.airborne,
        "jumps": post.jumps,
        "hitlag": post.hitlag,
        "hitstun": post.misc_as,
        "hurtbox_state": post.hurtbox_state,
    }
    if post.velocities is not None:
        v = post.velocities
        optional.update(
            vel_self_x_air=v.self_x_air,
            vel_self_y=v.self_y,
            vel_knockback_x=v.knockback_x,
            vel_knockback_y=v.knockback_y,
            vel_self_x_ground=v.self_x_ground,
        )
    for name, arr in optional.items():
        raw[name] = None if arr is None else _column(arr)[rows]
    follower = port_data.follower
    if follower is not None:
        nana = follower.post
        raw["nana_present"] = nana.position.x.is_valid().to_numpy(zero_copy_only=False)[rows]
        raw["nana_x"] = _column(nana.position.x)[rows]
        raw["nana_y"] = _column(nana.position.y)[rows]
        raw["nana_percent"] = _column(nana.percent)[rows]
        raw["nana_facing"] = _column(nana.direction)[rows]
        raw["nana_action"] = _column(nana.state)[rows]
    pre = port_data.leader.pre
    controller = (pre.buttons_physical, pre.joystick.x, pre.joystick.y, pre.cstick.x)
    controller += (pre.cstick.y, pre.triggers)
    for name, arr in zip(CONTROLLER_COLUMNS, controller, strict=True):
        raw[name] = _column(arr)[rows]
    return raw


def read_game(path, sha256: str | None = None) -> Game:
    """Read one .slp file into its raw columns, rollbacks removed (the first occurrence of each
    frame id is kept: what was seen live).

    Raises ReplaySkipped (with the reason) for unreadable files, games without exactly two
    players, games with no frames and games whose frame ids have gaps.
    """
    path = Path(path)
    game = _read(path)
    players = game.start.players
    _check_players(path, players)
    if game.frames is None or len(game.frames.id) == 0:
        raise ReplaySkipped(path, "no frames")
    ids = _column(game.frames.id).astype(np.int64)
    unique_ids, first_rows = np.unique(ids, return_index=True)
    keep = unique_ids >= FIRST_PLAYABLE_FRAME
    unique_ids, rows = unique_ids[keep], first_rows[keep]
    if not len(rows):
        raise ReplaySkipped(path, "no frames")
    if np.any(np.diff(unique_ids) != 1):
        raise ReplaySkipped(path, "frame ids are not contiguous")
    return Game(
        path=str(path),
        sha256=sha256 or file_sha256(path),
        slippi_version=".".join(str(v) for v in game.start.slippi.version),
        stage=int(game.start.stage),
        first_frame=int(unique_ids[0]),
        ports=[int(p.port) for p in players],
        humans=[int(p.type) == 0 for p in players],  # PlayerType: 0 human, 1 CPU, 2 demo
        players=[_raw_player(port, rows) for port in game.frames.ports],
    )


# The inputs read from frame t - frame_delay (the game state); prev_input is pressed at t.
DELAYED_INPUTS = tuple(
    name for name in (*CONTINUOUS_INPUTS, *CATEGORICAL_INPUTS) if name != "prev_input"
)


def frame_arrays(game: Game, ego: int) -> tuple[dict, dict]:
    """Every frame of `ego`'s view, before any delay: the inputs that describe frame t and the
    targets pressed at t. `select_rows` applies the delays."""
    ego_raw, opp_raw = game.players[ego], game.players[1 - ego]
    controller = encode_controller(*(ego_raw[name] for name in CONTROLLER_COLUMNS))
    inputs = assemble_inputs(ego_raw, opp_raw, controller, game.stage)
    return inputs, discretise_controller(controller)


def select_rows(inputs: dict, pressed: dict, now, frame_delay, action_delay: int):
    """`frame_arrays` -> the rows of the frames `now` (an index array of any shape): the state of
    frame t - frame_delay (an int, or an array that broadcasts against `now`), the input pressed
    at t, and the target pressed at t + action_delay."""
    seen = now - frame_delay
    rows = {name: value[seen if name in DELAYED_INPUTS else now] for name, value in inputs.items()}
    return rows, {head: value[now + action_delay] for head, value in pressed.items()}


def perspective(game: Game, ego: int, action_delay: int = 1, frame_delay: int = 0) -> Perspective:
    """Row t: state of frame t - frame_delay, input pressed at t, target pressed at
    t + action_delay; frames with no such rows are dropped."""
    now = np.arange(frame_delay, game.num_frames - action_delay)
    inputs, targets = select_rows(*frame_arrays(game, ego), now, frame_delay, action_delay)
    return Perspective(
        port=game.ports[ego],
        opponent_port=game.ports[1 - ego],
        frame_ids=(game.first_frame + now).astype(np.int32),
        inputs=inputs,
        targets=targets,
    )


def delay_range(frame_delay) -> tuple[int, int]:
    """A frame delay as (low, high): a delay d is (d, d); a range (low, high), a delay drawn per
    window (ExPhil's --online-robust), as given. ValueError unless 0 <= low <= high."""
    fixed = isinstance(frame_delay, int | np.integer)
    low, high = (frame_delay, frame_delay) if fixed else frame_delay
    if not 0 <= low <= high:
        raise ValueError(f"frame delay {frame_delay}: needs 0 <= delay (low <= high for a range)")
    return int(low), int(high)


def frame_delays(text: str) -> int | tuple[int, int]:
    """A frame delay as written on the command line: "18" -> 18, "0-18" -> (0, 18)."""
    low, _, high = text.partition("-")
    try:
        low, high = delay_range((int(low), int(high or low)))
    except ValueError:
        message = f"frame delay {text!r}: a number of frames 0 or more, or LOW-HIGH"
        raise ValueError(message) from None
    return delay_normal((low, high))


def delay_normal(frame_delay) -> int | tuple[int, int]:
    """A frame delay in the one form presets and dataset configs keep: a fixed delay as an int
    (18 and (18, 18) -> 18), a range as (low, high)."""
    low, high = delay_range(frame_delay)
    return low if low == high else (low, high)


def delay_text(frame_delay) -> str:
    """A frame delay as `frame_delays` reads it: 18 -> "18", (0, 18) -> "0-18"."""
    low, high = delay_range(frame_delay)
    return str(low) if low == high else f"{low}-{high}"


def usable_frames(num_frames: int, action_delay: int, frame_delay: int) -> int:
    """Rows of a perspective of a game of `num_frames` frames: those with a state and a target."""
    return max(num_frames - frame_delay - action_delay, 0)


def read_replay(
    path,
    action_delay: int = 1,
    frame_delay: int = 0,
    min_frames: int = 1,
    include_cpu_egos: bool = False,
    sha256: str | None = None,
) -> Replay:
    """Read one .slp file into one Perspective per eligible ego player.

    Raises ReplaySkipped (with the reason) for unreadable files, games without exactly two
    players, games with no human player, and games shorter than `min_frames` usable frames.
    """
    if action_delay < 0 or frame_delay < 0:
        raise ValueError("action_delay and frame_delay must be >= 0")
    game = read_game(path, sha256)
    usable = usable_frames(game.num_frames, action_delay, frame_delay)
    if usable < min_frames:
        raise ReplaySkipped(path, f"too short: {usable} usable frames, need {min_frames}")
    egos = game.egos(include_cpu_egos)
    if not egos:
        raise ReplaySkipped(path, "no human player")
    return Replay(
        path=game.path,
        sha256=game.sha256,
        slippi_version=game.slippi_version,
        stage=game.stage,
        num_frames=game.num_frames,
        perspectives=[perspective(game, ego, action_delay, frame_delay) for ego in egos],
    )


def probe_replay(path) -> tuple[int, int, int]:
    """Cheap header-only check (no frames): ReplaySkipped for games that cannot be used;
    returns the replay's Slippi version."""
    start = _read(path, skip_frames=True).start
    _check_players(path, start.players)
    return tuple(start.slippi.version)


def _check_players(path, players) -> None:
    if len(players) != 2:
        raise ReplaySkipped(path, f"{len(players)} players (only 2-player games are used)")


def window_starts(num_frames: int, window: int, stride: int) -> range:
    return range(0, num_frames - window + 1, stride)


def split_of(sha256_hex: str) -> str:
    """Whole-game split from the file's content: k = 0 validation, 1 test, else train."""
    k = int(sha256_hex[:8], 16) % 10
    return {0: "validation", 1: "test"}.get(k, "train")
