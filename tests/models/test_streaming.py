"""Stepping frame by frame from initial_state reproduces the windowed forward at every position."""

import numpy as np
from keras import ops

from exphil_keras.policy import build_policy, example_batch


def test_step_matches_window(architecture, small):
    model = build_policy(architecture, **small)
    inputs, _ = example_batch(model, 2, num_frames=60)
    windowed = {head: ops.convert_to_numpy(v) for head, v in model(inputs).items()}
    state = model.initial_state(2)
    for t in range(60):
        logits, state = model.step({name: v[:, t] for name, v in inputs.items()}, state)
        for head, v in logits.items():
            np.testing.assert_allclose(
                ops.convert_to_numpy(v), windowed[head][:, t], atol=1e-4, err_msg=f"{head} t={t}"
            )


def test_mlp_is_stateless(small):
    assert not build_policy("mlp", **small).initial_state(1)[0]


def test_compiled_step_reads_the_current_weights(small):
    model = build_policy("gru", **small)
    inputs, _ = example_batch(model, 1, num_frames=1)
    frame = {name: v[:, 0] for name, v in inputs.items()}
    before, _ = model.step(frame, model.initial_state(1))  # compiles
    model.set_weights(build_policy("gru", **small).get_weights())  # other random weights
    logits, _ = model.step(frame, model.initial_state(1))
    windowed = {head: ops.convert_to_numpy(v)[:, 0] for head, v in model(inputs).items()}
    assert not np.allclose(ops.convert_to_numpy(before["main_x"]), windowed["main_x"])
    for head, v in logits.items():
        np.testing.assert_allclose(ops.convert_to_numpy(v), windowed[head], atol=1e-5)
