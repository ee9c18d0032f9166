"""`exphil export` of shipped presets, as a user runs it, on a real game: the folder it writes,
and every endpoint in it equal to the Keras model, head by head and frame by frame.

The reference is the preset loaded here: `model(windows)` for `serve`, and `model.sample_step`
fed its own state, one frame at a time over the whole game, for `step`, drawing at a temperature
from seeded uniforms that the exported `step` gets too; the exported `step` is fed its own
returned state the same way. Stale weights, a state not fed back, a swapped head, a draw that
ignores its numbers or a wrong graph all change some head on some frame of a 388-frame game.
"""

from pathlib import Path

import keras
import numpy as np
import pytest
from exphil_cli import exphil

from exphil_keras import export, features, policy, zoo

DUMMY = Path(features.__file__).resolve().parent / "datasets" / "slippi_windows" / "dummy_data"
GAME = DUMMY / "hohav__test_replays_dash_back.slp"  # 388 frames
TOLERANCE = 1e-4
TEMPERATURE = 0.8  # every head drawn, so a wrong draw or a head swapped shows


@pytest.fixture(scope="module")
def game() -> dict:
    """One player's inputs over the whole game, [T, ...] per input."""
    return features.read_replay(GAME).perspectives[0].inputs


def windows(game, window, count=4) -> dict:
    """`count` windows of the game, spread over it, as a batch [count, window, ...]."""
    frames = len(game["stage"])
    starts = np.linspace(0, frames - window, count).astype(int)
    index = starts[:, None] + np.arange(window)
    return {name: value[index] for name, value in game.items()}


def draws(game, seed=0) -> np.ndarray:
    """The uniforms of every frame's draw, [T, 1, NUM_UNIFORMS]."""
    frames = (len(game["stage"]), 1, policy.NUM_UNIFORMS)
    return np.random.default_rng(seed).random(frames, dtype=np.float32)


def keras_steps(model, game, uniforms) -> list[dict]:
    """`model.sample_step` over every frame at batch 1, at TEMPERATURE, fed its own state:
    {head: logits [classes], action_<head>: the drawn classes} per frame."""
    state, out = model.initial_state(1), []
    for t in range(len(game["stage"])):
        frame = {k: v[t : t + 1] for k, v in game.items()}
        action, logits, state = model.sample_step(frame, state, uniforms[t], TEMPERATURE)
        step = {head: keras.ops.convert_to_numpy(v)[0] for head, v in logits.items()}
        step |= {f"action_{h}": keras.ops.convert_to_numpy(v)[0] for h, v in action.items()}
        out.append(step)
    return out


def assert_steps_equal(run_step, model, game, uniforms):
    """`run_step(frame, uniforms, temperature, state) -> {head, action_<head> or next_state_i:
    array}` over the game, its state fed back, equals `keras_steps` on every head's logits and
    drawn action, frame by frame."""
    expected = keras_steps(model, game, uniforms)
    state = export.initial_state(model, 1)
    keys = set(expected[0])
    temperature = np.array(TEMPERATURE, np.float32)
    for t, want in enumerate(expected):
        out = run_step({k: v[t : t + 1] for k, v in game.items()}, uniforms[t], temperature, state)
        assert set(out) == keys | {f"next_state_{i}" for i in range(len(state))}
        for key in keys:
            np.testing.assert_allclose(
                out[key][0], want[key], atol=TOLERANCE, rtol=0, err_msg=f"{key}, frame {t}"
            )
        state = [out[f"next_state_{i}"] for i in range(len(state))]


@pytest.mark.parametrize(
    ("preset", "backend"),
    [("mlp_quick", "tensorflow"), ("mamba_standard", "tensorflow"), ("gru_standard", "jax")],
)
def test_exphil_export_savedmodel_serve_and_step_equal_the_model(preset, backend, game, tmp_path):
    import tensorflow as tf

    output = tmp_path / "policy"
    done = exphil("export", "--model", preset, "--format", "savedmodel", "--output", str(output),
                  "--backend", backend)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"savedmodel of {preset} written to {output}"
    assert (output / "saved_model.pb").is_file() and (output / "variables").is_dir()
    assert not list(tmp_path.glob("*.onnx")) and not list(output.glob("*.onnx"))

    model = zoo.load(preset, compile=False)
    loaded = tf.saved_model.load(str(output))
    batch = windows(game, model.window)
    served = loaded.serve({k: tf.constant(v) for k, v in batch.items()})
    expected = model(batch)
    assert set(served) == set(expected)
    for head, value in expected.items():
        np.testing.assert_allclose(
            served[head].numpy(), keras.ops.convert_to_numpy(value), atol=TOLERANCE, rtol=0,
            err_msg=head,
        )  # fmt: skip

    def run_step(frame, uniforms, temperature, state):
        frame = {k: tf.constant(v) for k, v in frame.items()}
        out = loaded.step(frame, uniforms, temperature, *map(tf.constant, state))
        return {k: v.numpy() for k, v in out.items()}

    assert_steps_equal(run_step, model, game, draws(game))


def test_exphil_export_onnx_serve_and_step_equal_the_model(game, tmp_path):
    """Jamba: Mamba's conv tail and SSM state, attention's KV ring buffer and position, all fed
    back through onnxruntime over 388 frames (the 60-frame ring buffer wraps six times)."""
    import onnxruntime

    preset = "jamba_standard"
    done = exphil("export", "--model", preset, "--format", "onnx", "--output", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"onnx of {preset} written to {tmp_path}"
    assert (tmp_path / "savedmodel" / "saved_model.pb").is_file()
    model = zoo.load(preset, compile=False)

    serve = onnxruntime.InferenceSession(str(tmp_path / "serve.onnx"))
    batch = windows(game, model.window)
    names = [o.name for o in serve.get_outputs()]
    served = dict(zip(names, serve.run(None, batch), strict=True))
    expected = model(batch)
    assert set(served) == set(expected)
    for head, value in expected.items():
        np.testing.assert_allclose(
            served[head], keras.ops.convert_to_numpy(value), atol=TOLERANCE, rtol=0, err_msg=head
        )

    step = onnxruntime.InferenceSession(str(tmp_path / "step.onnx"))
    names = [o.name for o in step.get_outputs()]
    assert len(export.initial_state(model, 1)) >= 4  # conv, SSM, keys, values (+ position)

    def run_step(frame, uniforms, temperature, state):
        feed = frame | {"uniforms": uniforms, "temperature": temperature}
        feed |= {f"state_{i}": s for i, s in enumerate(state)}
        return dict(zip(names, step.run(None, feed), strict=True))

    assert_steps_equal(run_step, model, game, draws(game))


def test_onnx_export_explains_that_it_needs_tensorflow(tmp_path):
    done = exphil(
        "export", "--model", "mlp_quick", "--format", "onnx", "--output", str(tmp_path),
        "--backend", "jax",
    )  # fmt: skip
    assert done.returncode == 2 and "--backend tensorflow" in done.stderr
    assert not list(tmp_path.iterdir())  # refused before writing anything
