"""Export a policy for serving outside Python-Keras: a SavedModel with two endpoints and ONNX.

- `serve`: the inputs dict `[B, W, ...]` -> `{head: logits [B, W, classes]}`.
- `step`: one frame (the inputs dict at one time index, `[B, ...]`), `uniforms` `[B, 13]` in
  [0, 1), `temperature` (a scalar; 0 is greedy) and the streaming state as explicit tensors
  `state_0 .. state_{n-1}` -> `{head: logits [B, classes], action_<head>: the drawn classes,
  next_state_i: ...}`, as `PolicyModel.sample_step` draws them: the same uniforms give the same
  action. Start from `initial_state(model, batch)` (zeros), feed each frame's returned state back.

The SavedModel is written by `keras.export.ExportArchive`, so it comes from the TensorFlow and
the JAX backend alike (JAX through jax2tf). ONNX is converted by tf2onnx from a TensorFlow
SavedModel's endpoints, one file each (`serve.onnx`, `step.onnx`), with the same inputs and
outputs by name.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from exphil_keras import features, policy, zoo

FORMATS = ("savedmodel", "onnx")
ONNX_OPSET = 17


def frame_spec(batch=None) -> dict:
    """The `step` endpoint's frame inputs: each input of the window at one time index."""
    spec = {
        name: keras.InputSpec(shape=(batch, width), dtype="float32", name=name)
        for name, width in features.CONTINUOUS_INPUTS.items()
    }
    spec |= {
        name: keras.InputSpec(shape=(batch,), dtype="int32", name=name)
        for name in features.CATEGORICAL_INPUTS
    }
    return spec


def window_spec(frames, batch=None) -> dict:
    """The `serve` endpoint's inputs: windows of `frames` frames (the preset's training window;
    a fixed length keeps every ONNX reshape static)."""
    return {
        name: keras.InputSpec(
            shape=(batch, frames) + tuple(spec.shape[1:]), dtype=spec.dtype, name=name
        )
        for name, spec in frame_spec(batch).items()
    }


def sampling_spec(batch=None) -> list:
    """The `step` endpoint's random numbers and temperature (see `policy.draw`)."""
    return [
        keras.InputSpec(shape=(batch, policy.NUM_UNIFORMS), dtype="float32", name="uniforms"),
        keras.InputSpec(shape=(), dtype="float32", name="temperature"),
    ]


def initial_state(model, batch_size=1) -> list[np.ndarray]:
    """The model's streaming state before the first frame, flattened to numpy arrays."""
    return [np.asarray(keras.ops.convert_to_numpy(s)) for s in _flat_state(model, batch_size)]


def _flat_state(model, batch_size):
    return keras.tree.flatten(model.initial_state(batch_size))


def state_spec(model) -> list:
    """One spec per state tensor, batch dimension free (a scalar, like attention's frame
    count, stays a scalar)."""
    return [
        keras.InputSpec(
            shape=(None,) + tuple(s.shape[1:]) if len(s.shape) else (),
            dtype=keras.backend.standardize_dtype(s.dtype),
            name=f"state_{i}",
        )
        for i, s in enumerate(_flat_state(model, 1))
    ]


def savedmodel(model, path) -> Path:
    """Write the `serve` and `step` endpoints of `model` as a SavedModel at `path`."""
    structure = model.initial_state(1)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(inputs):
        return model(inputs, training=False)

    archive.add_endpoint("serve", serve, input_signature=[window_spec(model.window)])

    def step(frame, uniforms, temperature, *state):
        state = keras.tree.pack_sequence_as(structure, state)
        action, logits, new_state = model._sample_step(frame, state, uniforms, temperature)
        return {
            **logits,
            **{f"action_{head}": classes for head, classes in action.items()},
            **{f"next_state_{i}": s for i, s in enumerate(keras.tree.flatten(new_state))},
        }

    signature = [frame_spec(), *sampling_spec(), *state_spec(model)]
    archive.add_endpoint("step", step, input_signature=signature)
    archive.write_out(str(path), verbose=False)
    return Path(path)


def onnx(saved_model_path, out_dir) -> dict[str, Path]:
    """ONNX files `serve.onnx` and `step.onnx` converted from a SavedModel's endpoints."""
    import tensorflow as tf
    import tf2onnx

    loaded = tf.saved_model.load(str(saved_model_path))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for endpoint in ("serve", "step"):
        function = getattr(loaded, endpoint)
        concrete = function.get_concrete_function(*function.input_signature)
        target = out_dir / f"{endpoint}.onnx"
        tf2onnx.convert.from_function(
            tf.function(concrete),
            input_signature=function.input_signature,
            opset=ONNX_OPSET,
            output_path=str(target),
        )
        written[endpoint] = target
    return written


def export(name_or_path, output, format="savedmodel") -> Path:  # noqa: A002  (the CLI's flag)
    """`exphil export`: a preset (name or folder) to a SavedModel, or to ONNX beside one."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if format == "onnx" and keras.backend.backend() != "tensorflow":
        raise ValueError(
            "ONNX is converted from TensorFlow's graph (tf2onnx cannot read jax2tf's XLA "
            "modules): export it with --backend tensorflow; the preset is the same file"
        )
    model = zoo.load(name_or_path, compile=False)
    output = Path(output)
    if format == "savedmodel":
        return savedmodel(model, output)
    saved = savedmodel(model, output / "savedmodel")
    onnx(saved, output)
    return output
