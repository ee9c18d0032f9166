"""The policy model: output contract, loss and metrics, training, fit on tf.data, .keras files."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from exphil_keras import architectures, features
from exphil_keras.ops import device_kind
from exphil_keras.policy import PolicyModel, build_policy, example_batch, previous_input_classes

JIT = keras.backend.backend() in ("tensorflow", "jax")  # torch's jit_compile is torch.compile


def numpy_loss(targets, logits, position=slice(None), label_smoothing=0.0):
    """The documented loss in float64 numpy: BCE(buttons, mean over 8) + the five CEs."""
    total = 0.0
    for head, classes in features.TARGETS.items():
        z = np.clip(np.asarray(logits[head], np.float64), -60, 60)[:, position]
        t = np.asarray(targets[head])[:, position]
        if head == "buttons":
            loss = (np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))).mean(-1)
        else:
            log_p = z - z.max(-1, keepdims=True)
            log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
            smoothed = np.eye(classes)[t] * (1 - label_smoothing) + label_smoothing / classes
            loss = -(smoothed * log_p).sum(-1)
        total += loss.mean()
    return total


def test_outputs_and_keras_file_round_trip(architecture, small, tmp_path):
    model = build_policy(architecture, **small)
    inputs, _ = example_batch(model, 2)
    outputs = {head: ops.convert_to_numpy(v) for head, v in model(inputs).items()}
    assert {head: v.shape for head, v in outputs.items()} == {
        head: (2, small["window"], classes) for head, classes in features.TARGETS.items()
    }
    model.save(tmp_path / "policy.keras")
    # compile=False: an untrained model's optimizer holds no state (Keras warns that it skips it)
    loaded = keras.saving.load_model(tmp_path / "policy.keras", compile=False)
    assert isinstance(loaded, PolicyModel)
    assert loaded.get_config() == model.get_config()
    for head, logits in loaded(inputs).items():
        np.testing.assert_array_equal(ops.convert_to_numpy(logits), outputs[head])


def test_fit_lowers_the_loss_on_a_fixed_batch(architecture, small):
    model = build_policy(architecture, learning_rate=1e-2, jit_compile=JIT, **small)
    inputs, targets = example_batch(model, 4)
    history = model.fit(inputs, targets, batch_size=4, epochs=3, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert np.all(np.isfinite(history["loss"]))


def test_auto_compiles_on_a_tensorflow_cpu_what_trains_faster_compiled(architecture, small):
    """Keras's "auto" keeps TensorFlow on a CPU out of XLA, and torch out of torch.compile; the
    policy compiles on a TensorFlow CPU the backbones measured faster so. Asked, it obeys."""
    expected = keras.backend.backend() != "torch"
    if keras.backend.backend() == "tensorflow" and device_kind() == "cpu":
        expected = architectures.get(architecture).xla_on_cpu
    assert build_policy(architecture, **small).jit_compile == expected
    assert build_policy(architecture, jit_compile=False, **small).jit_compile is False


def test_loss_and_metrics_follow_their_definitions(small):
    model = build_policy("gru", label_smoothing=0.1, jit_compile=False, **small)
    inputs, targets = example_batch(model, 3)
    logits = {head: ops.convert_to_numpy(v) for head, v in model(inputs).items()}
    results = model.evaluate(inputs, targets, batch_size=3, verbose=0, return_dict=True)
    np.testing.assert_allclose(
        results["loss"], numpy_loss(targets, logits, label_smoothing=0.1), rtol=1e-5
    )
    np.testing.assert_allclose(
        results["last_loss"], numpy_loss(targets, logits, position=-1), rtol=1e-5
    )
    buttons_right = ((logits["buttons"] > 0) == (targets["buttons"] > 0.5)).all(-1).mean()
    np.testing.assert_allclose(results["buttons_accuracy"], buttons_right, rtol=1e-6)
    main_x_right = (logits["main_x"].argmax(-1) == targets["main_x"]).mean()
    np.testing.assert_allclose(results["main_x_accuracy"], main_x_right, rtol=1e-6)
    assert {f"{head}_nll" for head in features.TARGETS} <= set(results)


def test_fit_on_a_tf_data_dataset_of_windows(small):
    model = build_policy("mlp", jit_compile=JIT, **small)
    inputs, targets = example_batch(model, 6)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(3)
    history = model.fit(dataset, epochs=1, verbose=0, shuffle=False).history
    assert np.isfinite(history["last_loss"][0])


def test_out_of_range_ids_are_clipped(small):
    model = build_policy("mlp", **small)
    inputs, _ = example_batch(model, 1)
    inputs["ego_action"][:] = 5000
    inputs["stage"][:] = -3
    for logits in model(inputs).values():
        assert np.all(np.isfinite(ops.convert_to_numpy(logits)))


def test_mixed_bfloat16_steps_and_keeps_the_loss_in_float32(small):
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_policy("jamba", **small)  # Mamba and attention blocks
        inputs, targets = example_batch(model, 2, num_frames=1)
        logits, _ = model.step(
            {name: v[:, 0] for name, v in inputs.items()}, model.initial_state(2)
        )
        assert all(np.all(np.isfinite(ops.convert_to_numpy(v))) for v in logits.values())
        frame_logits = {head: v[:, None] for head, v in logits.items()}
        loss = model.compute_loss(y=targets, y_pred=frame_logits)
        assert keras.backend.standardize_dtype(loss.dtype) == "float32"
        assert np.isfinite(ops.convert_to_numpy(loss))
    finally:
        keras.config.set_dtype_policy("float32")


def test_previous_input_classes_match_the_targets_discretisation():
    rng = np.random.default_rng(0)
    prev = rng.uniform(-1, 1, (64, features.NUM_CONTROLLER_FEATURES)).astype("float32")
    prev[:, 12] = rng.uniform(0, 1, 64)
    prev[:8, 8:12] = 0.3125  # exactly half-way between two classes
    expected = features.discretise_controller(prev)
    one_hot = ops.convert_to_numpy(previous_input_classes(prev))
    offset = 0
    for head in ("main_x", "main_y", "c_x", "c_y", "shoulder"):
        classes = features.TARGETS[head]
        np.testing.assert_array_equal(
            one_hot[:, offset : offset + classes].argmax(-1), expected[head]
        )
        offset += classes
    assert offset == one_hot.shape[-1]
