"""Exported policies equal the Keras model: the SavedModel's `serve` and `step` endpoints (from
TensorFlow and JAX) and the ONNX files (from TensorFlow), run by TensorFlow and onnxruntime;
`step` draws what Keras's `sample_step` draws from the same uniforms."""

import keras
import numpy as np
import pytest

from exphil_keras import export, features
from exphil_keras.policy import NUM_UNIFORMS, build_policy, example_batch

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(BACKEND == "torch", reason="SavedModel export: TF and JAX")
WINDOW = 60  # serve takes the training window; 60 step calls must reproduce it
TOLERANCE = 1e-4
GREEDY = {
    "uniforms": np.full((2, NUM_UNIFORMS), 0.5, "float32"),
    "temperature": np.array(0, "float32"),
}


def _policy(architecture, small):
    model = build_policy(architecture, **(small | {"window": WINDOW}))
    inputs, _ = example_batch(model, 2)
    expected = {k: keras.ops.convert_to_numpy(v) for k, v in model(inputs).items()}
    return model, inputs, expected


def _assert_close(actual: dict, expected: dict, t=None):
    for head, value in expected.items():
        want = value if t is None else value[:, t]
        np.testing.assert_allclose(np.asarray(actual[head]), want, atol=TOLERANCE, rtol=0)


def test_savedmodel_serve_equals_keras_and_60_steps_equal_serve(architecture, small, tmp_path):
    import tensorflow as tf

    model, inputs, expected = _policy(architecture, small)
    loaded = tf.saved_model.load(str(export.savedmodel(model, tmp_path / "saved")))
    served = loaded.serve({k: tf.constant(v) for k, v in inputs.items()})
    served = {k: v.numpy() for k, v in served.items()}
    _assert_close(served, expected)
    state = export.initial_state(model, 2)
    for t in range(WINDOW):  # the reloaded step, fed its own state
        frame = {k: tf.constant(v[:, t]) for k, v in inputs.items()}
        out = loaded.step(frame, *GREEDY.values(), *[tf.constant(s) for s in state])
        state = [out[f"next_state_{i}"].numpy() for i in range(len(state))]
        _assert_close({k: out[k].numpy() for k in served}, served, t)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="ONNX is converted from TensorFlow's graph")
def test_onnx_serve_and_step_equal_keras(architecture, small, tmp_path):
    import onnxruntime

    model, inputs, expected = _policy(architecture, small)
    files = export.onnx(export.savedmodel(model, tmp_path / "saved"), tmp_path / "onnx")
    serve = onnxruntime.InferenceSession(str(files["serve"]))
    names = [o.name for o in serve.get_outputs()]
    _assert_close(dict(zip(names, serve.run(None, inputs), strict=True)), expected)
    step = onnxruntime.InferenceSession(str(files["step"]))
    names = [o.name for o in step.get_outputs()]
    state = export.initial_state(model, 2)
    for t in range(WINDOW):
        feed = {k: v[:, t] for k, v in inputs.items()}
        feed |= GREEDY | {f"state_{i}": s for i, s in enumerate(state)}
        out = dict(zip(names, step.run(None, feed), strict=True))
        state = [out[f"next_state_{i}"] for i in range(len(state))]
        _assert_close(out, expected, t)


def _drawn_by_keras(model, inputs, uniforms):
    """Keras's `sample_step` over the window at temperature 1: (actions, logits) per frame."""
    state, drawn = model.initial_state(2), []
    for t in range(WINDOW):
        frame = {k: v[:, t] for k, v in inputs.items()}
        action, logits, state = model.sample_step(frame, state, uniforms[t], 1.0)
        drawn.append(keras.tree.map_structure(keras.ops.convert_to_numpy, (action, logits)))
    return drawn


def _assert_draws(out: dict, drawn, t):
    action, logits = drawn[t]
    for head in features.TARGETS:
        np.testing.assert_array_equal(np.asarray(out[f"action_{head}"]), action[head])
    _assert_close(out, logits)


def test_savedmodel_step_draws_what_keras_draws(small, tmp_path):
    import tensorflow as tf

    model, inputs, _ = _policy("gru", small | {"heads": "autoregressive"})
    uniforms = np.random.default_rng(0).random((WINDOW, 2, NUM_UNIFORMS), dtype=np.float32)
    drawn = _drawn_by_keras(model, inputs, uniforms)
    loaded = tf.saved_model.load(str(export.savedmodel(model, tmp_path / "saved")))
    state = export.initial_state(model, 2)
    for t in range(WINDOW):
        frame = {k: tf.constant(v[:, t]) for k, v in inputs.items()}
        out = loaded.step(frame, uniforms[t], np.float32(1), *[tf.constant(s) for s in state])
        state = [out[f"next_state_{i}"].numpy() for i in range(len(state))]
        _assert_draws({k: v.numpy() for k, v in out.items()}, drawn, t)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="ONNX is converted from TensorFlow's graph")
def test_onnx_step_draws_what_keras_draws(small, tmp_path):
    import onnxruntime

    model, inputs, _ = _policy("gru", small | {"heads": "autoregressive"})
    uniforms = np.random.default_rng(0).random((WINDOW, 2, NUM_UNIFORMS), dtype=np.float32)
    drawn = _drawn_by_keras(model, inputs, uniforms)
    files = export.onnx(export.savedmodel(model, tmp_path / "saved"), tmp_path / "onnx")
    step = onnxruntime.InferenceSession(str(files["step"]))
    names = [o.name for o in step.get_outputs()]
    state = export.initial_state(model, 2)
    for t in range(WINDOW):
        feed = {k: v[:, t] for k, v in inputs.items()}
        feed |= {"uniforms": uniforms[t], "temperature": np.array(1, "float32")}
        feed |= {f"state_{i}": s for i, s in enumerate(state)}
        out = dict(zip(names, step.run(None, feed), strict=True))
        state = [out[f"next_state_{i}"] for i in range(len(state))]
        _assert_draws(out, drawn, t)
