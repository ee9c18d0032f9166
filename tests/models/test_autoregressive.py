"""Autoregressive heads: teacher-forced in training and scoring, greedy in `predict`, drawn in
`sample_step`; stepping with the drawn classes equals the window conditioned on them."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from exphil_keras import baselines, features
from exphil_keras.policy import (
    AUTOREGRESSIVE_ORDER,
    NUM_UNIFORMS,
    PolicyModel,
    build_policy,
    draw,
    example_batch,
)

FRAMES = 20
JIT = keras.backend.backend() in ("tensorflow", "jax")  # torch's jit_compile is torch.compile


def to_numpy(tree):
    return keras.tree.map_structure(ops.convert_to_numpy, tree)


def stepped(model, inputs, temperature, seed=0):
    """`sample_step` over every frame: (actions, logits), each stacked to [B, T, ...]."""
    batch, frames = inputs["prev_input"].shape[:2]
    uniforms = np.random.default_rng(seed).random((frames, batch, NUM_UNIFORMS), np.float32)
    state, actions, logits = model.initial_state(batch), [], []
    for t in range(frames):
        frame = {name: v[:, t] for name, v in inputs.items()}
        action, frame_logits, state = model.sample_step(frame, state, uniforms[t], temperature)
        actions.append(to_numpy(action))
        logits.append(to_numpy(frame_logits))
    stack = lambda parts: {h: np.stack([p[h] for p in parts], axis=1) for h in features.TARGETS}  # noqa: E731
    return stack(actions), stack(logits), uniforms.transpose(1, 0, 2)


def test_stepping_the_drawn_classes_equals_the_teacher_forced_window(architecture, small):
    model = build_policy(architecture, heads="autoregressive", **small)
    inputs, _ = example_batch(model, 2, num_frames=FRAMES)
    actions, logits, uniforms = stepped(model, inputs, temperature=1.0)
    assert any(len(np.unique(actions[h])) > 1 for h in features.TARGETS)  # really drawn
    for head in features.TARGETS:  # each head drawn from its own (conditioned) logits
        again = ops.convert_to_numpy(draw(head, logits[head], uniforms, 1.0))
        np.testing.assert_array_equal(actions[head], again, err_msg=head)
    windowed = to_numpy(model(model.with_targets(inputs, actions)))
    for head in features.TARGETS:
        np.testing.assert_allclose(logits[head], windowed[head], atol=1e-4, err_msg=head)


def test_greedy_step_equals_predict_and_the_first_head_needs_no_teacher(small):
    model = build_policy("gru", heads="autoregressive", **small)
    inputs, targets = example_batch(model, 2, num_frames=FRAMES)
    greedy = model.predict(inputs, verbose=0)
    actions, logits, _ = stepped(model, inputs, temperature=0.0)
    for head in features.TARGETS:
        np.testing.assert_allclose(logits[head], greedy[head], atol=1e-4, err_msg=head)
    np.testing.assert_array_equal(actions["main_x"], greedy["main_x"].argmax(-1))
    np.testing.assert_array_equal(actions["buttons"], greedy["buttons"] > 0)
    forced = model.predict(model.with_targets(inputs, targets), verbose=0)
    first, last = AUTOREGRESSIVE_ORDER[0], AUTOREGRESSIVE_ORDER[-1]
    np.testing.assert_allclose(forced[first], greedy[first], atol=1e-5)
    assert not np.allclose(forced[last], greedy[last], atol=1e-3)


def test_fit_and_evaluate_score_the_whole_action_teacher_forced(small):
    model = build_policy(
        "gru", heads="autoregressive", learning_rate=1e-2, jit_compile=JIT, **small
    )
    inputs, targets = example_batch(model, 4)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(2)
    history = model.fit(dataset, epochs=3, shuffle=False, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    results = model.evaluate(inputs, targets, batch_size=4, verbose=0, return_dict=True)
    forced = model.predict(model.with_targets(inputs, targets), verbose=0)
    nll = {h: nll for h, (nll, _) in baselines.head_nll_and_correct(forced, targets).items()}
    np.testing.assert_allclose(results["loss"], sum(v.mean() for v in nll.values()), rtol=1e-5)
    last_loss = sum(v[:, -1].mean() for v in nll.values())
    np.testing.assert_allclose(results["last_loss"], last_loss, rtol=1e-5)


def test_keras_file_keeps_the_heads_and_their_order(small, tmp_path):
    order = ("shoulder", "c_x", "c_y", "main_x", "main_y", "buttons")  # not the default
    model = build_policy("mlp", heads="autoregressive", head_order=order, **small)
    inputs, targets = example_batch(model, 2)
    model.save(tmp_path / "policy.keras")
    # compile=False: an untrained model's optimizer holds no state (Keras warns that it skips it)
    loaded = keras.saving.load_model(tmp_path / "policy.keras", compile=False)
    assert loaded.get_config() == model.get_config()
    assert loaded.get_config()["head_order"] == list(order)
    scored = model.with_targets(inputs, targets)
    for head, logits in loaded(scored).items():
        np.testing.assert_array_equal(ops.convert_to_numpy(logits), to_numpy(model(scored))[head])


def test_independent_is_the_default_and_bad_heads_are_refused(small):
    config = build_policy("mlp", **small).get_config()
    assert (config["heads"], config["head_order"]) == ("independent", None)
    with pytest.raises(ValueError, match="choose one of independent, autoregressive"):
        PolicyModel("mlp", heads="chained", **small)
    with pytest.raises(ValueError, match="independent heads have no order"):
        PolicyModel("mlp", head_order=AUTOREGRESSIVE_ORDER, **small)
    with pytest.raises(ValueError, match="must name each of"):
        PolicyModel("mlp", heads="autoregressive", head_order=("buttons",), **small)


def test_draw_follows_the_tempered_distribution_and_is_greedy_at_zero():
    """Stratified uniforms (i + 0.5) / N: each class is drawn N * p times, to within one."""
    n = 4000
    rng = np.random.default_rng(0)
    z = {"main_x": rng.normal(size=(1, 17)) * 2, "buttons": rng.normal(size=(1, 8)) * 2}
    uniforms = np.repeat(((np.arange(n) + 0.5) / n)[:, None], NUM_UNIFORMS, 1).astype("float32")
    softmax = lambda t: np.exp(z["main_x"][0] / t) / np.exp(z["main_x"][0] / t).sum()  # noqa: E731
    sigmoid = lambda t: 1 / (1 + np.exp(-z["buttons"][0] / t))  # noqa: E731
    for temperature in (0.5, 1.0, 2.0):
        drawn = ops.convert_to_numpy(draw("main_x", z["main_x"], uniforms, temperature))
        frequencies = np.bincount(drawn, minlength=17) / n
        np.testing.assert_allclose(frequencies, softmax(temperature), atol=2 / n)
        pressed = ops.convert_to_numpy(draw("buttons", z["buttons"], uniforms, temperature))
        np.testing.assert_allclose(pressed.mean(0), sigmoid(temperature), atol=2 / n)
        for wrong in (0.9 * temperature, 1.1 * temperature):  # the bound tells a 10% error
            assert np.abs(frequencies - softmax(wrong)).max() > 10 / n
            assert np.abs(pressed.mean(0) - sigmoid(wrong)).max() > 10 / n
    cold = ops.convert_to_numpy(draw("main_x", z["main_x"], uniforms, 1e-3))
    assert np.all(cold == z["main_x"].argmax())
    greedy = ops.convert_to_numpy(draw("main_x", z["main_x"], uniforms, 0.0))
    assert np.all(greedy == z["main_x"].argmax())
    pressed = ops.convert_to_numpy(draw("buttons", z["buttons"], uniforms, 0.0))
    assert np.all(pressed == (z["buttons"] > 0))


def test_mixed_bfloat16_draws_and_keeps_the_loss_in_float32(small):
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_policy("jamba", heads="autoregressive", **small)
        inputs, targets = example_batch(model, 2, num_frames=3)
        actions, logits, _ = stepped(model, inputs, temperature=1.0)
        assert all(np.all(np.isfinite(v.astype("float32"))) for v in logits.values())
        forced = model(model.with_targets(inputs, actions))
        loss = model.compute_loss(y=actions, y_pred=forced)
        assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    finally:
        keras.config.set_dtype_policy("float32")
